-- name: ListRuns :many
SELECT * FROM workflow_runs ORDER BY workflow_run_id;
