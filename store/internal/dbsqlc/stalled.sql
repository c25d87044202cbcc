-- A worker frozen (stopped, swapped out, cut off) in the middle of a batch
-- COPY leaves its session waiting for the rest of the data, inside the
-- transaction and holding its partition's offset row: PostgreSQL's
-- idle_in_transaction_session_timeout does not apply to a running COPY,
-- nor does statement_timeout. See store.ReapStalledCopies.

-- name: StalledCopies :many
-- Sessions of this database running the batch COPY and waiting on their
-- client, with how far the COPY has got.
SELECT a.pid, a.query_start, p.bytes_processed,
       coalesce(a.application_name, '')::text AS application_name,
       coalesce(host(a.client_addr), '')::text AS client_addr
FROM pg_catalog.pg_stat_activity AS a
JOIN pg_catalog.pg_stat_progress_copy AS p ON p.pid = a.pid
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.state = 'active' AND a.wait_event = 'ClientRead'
  AND a.query = @query::text;

-- name: TerminateBackend :one
SELECT pg_terminate_backend(@pid::integer);
