package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// RunRow is a stored workflow_runs row: the projection and the columns the
// database adds.
type RunRow struct {
	model.Run
	// DurationMS is the generated duration_ms column.
	DurationMS sql.NullInt64
}

// ListRuns returns every stored run, ordered by workflow_run_id.
func (s *Store) ListRuns(ctx context.Context) ([]RunRow, error) {
	rows, err := s.q.ListRuns(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	out := make([]RunRow, len(rows))
	for i, r := range rows {
		out[i] = runRow(r)
	}
	return out, nil
}

func runRow(r dbsqlc.WorkflowRun) RunRow {
	return RunRow{
		Run: model.Run{
			WorkflowRunID:   r.WorkflowRunID,
			WorkflowID:      r.WorkflowID,
			Source:          r.Source,
			Attempt:         r.Attempt,
			Status:          r.Status,
			QueuedAt:        nullTime(r.QueuedAt),
			StartedAt:       nullTime(r.StartedAt),
			FinishedAt:      nullTime(r.FinishedAt),
			Error:           sql.NullString{String: r.Error.String, Valid: r.Error.Valid},
			StepsSucceeded:  r.StepsSucceeded,
			StepsFailed:     r.StepsFailed,
			StepsSkipped:    r.StepsSkipped,
			EventCount:      r.EventCount,
			FirstEventAt:    r.FirstEventAt.Time.UTC(),
			LastEventAt:     r.LastEventAt.Time.UTC(),
			LatestEventID:   r.LatestEventID,
			TerminalEventID: r.DecidingEventID.String,
		},
		DurationMS: sql.NullInt64{Int64: r.DurationMs.Int64, Valid: r.DurationMs.Valid},
	}
}

func nullTime(t pgtype.Timestamptz) sql.NullTime {
	return sql.NullTime{Time: t.Time.UTC(), Valid: t.Valid}
}
