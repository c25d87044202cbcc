package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// StepRow is a stored workflow_steps row: the steps projection (contract
// §3.1) and the columns the database adds.
type StepRow struct {
	model.Step
	// DurationMS is the generated duration_ms column.
	DurationMS sql.NullInt64
}

// ListSteps returns every stored step, ordered by (workflow_run_id,
// attempt, step_id).
func (s *Store) ListSteps(ctx context.Context) ([]StepRow, error) {
	rows, err := s.q.ListSteps(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list steps: %w", err)
	}
	out := make([]StepRow, len(rows))
	for i, r := range rows {
		out[i] = stepRow(r)
	}
	return out, nil
}

func stepRow(r dbsqlc.WorkflowStep) StepRow {
	return StepRow{
		Step: model.Step{
			WorkflowRunID:   r.WorkflowRunID,
			Attempt:         r.Attempt,
			StepID:          r.StepID,
			WorkflowID:      r.WorkflowID,
			Source:          r.Source,
			Status:          r.Status,
			StartedAt:       nullTime(r.StartedAt),
			FinishedAt:      nullTime(r.FinishedAt),
			Error:           sql.NullString{String: r.Error.String, Valid: r.Error.Valid},
			EventCount:      r.EventCount,
			FirstEventAt:    r.FirstEventAt.Time.UTC(),
			LastEventAt:     r.LastEventAt.Time.UTC(),
			LatestEventID:   r.LatestEventID,
			TerminalEventID: r.DecidingEventID.String,
		},
		DurationMS: sql.NullInt64{Int64: r.DurationMs.Int64, Valid: r.DurationMs.Valid},
	}
}

// mergeSteps combines partial steps into the stored rows
// (model.CombineSteps in SQL), in db's transaction. steps must hold
// one row per (workflow_run_id, attempt, step_id), as model.FoldSteps
// returns them, of events that were never merged before: the merge adds
// event counts, so merging an event twice counts it twice.
func mergeSteps(ctx context.Context, db dbsqlc.DBTX, steps []model.Step) error {
	if len(steps) == 0 {
		return nil
	}
	if err := dbsqlc.New().MergeSteps(ctx, db, mergeStepsParams(steps)); err != nil {
		return fmt.Errorf("merge %d steps: %w", len(steps), err)
	}
	return nil
}

func mergeStepsParams(steps []model.Step) dbsqlc.MergeStepsParams {
	n := len(steps)
	p := dbsqlc.MergeStepsParams{
		WorkflowRunIds:   make([]string, n),
		Attempts:         make([]int32, n),
		StepIds:          make([]string, n),
		WorkflowIds:      make([]string, n),
		Sources:          make([]string, n),
		Statuses:         make([]string, n),
		StartedAts:       make([]pgtype.Timestamptz, n),
		FinishedAts:      make([]pgtype.Timestamptz, n),
		Errors:           make([]string, n),
		HasErrors:        make([]bool, n),
		EventCounts:      make([]int64, n),
		FirstEventAts:    make([]pgtype.Timestamptz, n),
		LastEventAts:     make([]pgtype.Timestamptz, n),
		LatestEventIds:   make([]string, n),
		DecidingEventIds: make([]string, n),
	}
	for i := range steps {
		st := &steps[i]
		p.WorkflowRunIds[i] = st.WorkflowRunID
		p.Attempts[i] = st.Attempt
		p.StepIds[i] = st.StepID
		p.WorkflowIds[i] = st.WorkflowID
		p.Sources[i] = st.Source
		p.Statuses[i] = st.Status
		p.StartedAts[i] = pgtype.Timestamptz{Time: st.StartedAt.Time, Valid: st.StartedAt.Valid}
		p.FinishedAts[i] = pgtype.Timestamptz{Time: st.FinishedAt.Time, Valid: st.FinishedAt.Valid}
		p.Errors[i] = st.Error.String
		p.HasErrors[i] = st.Error.Valid
		p.EventCounts[i] = st.EventCount
		p.FirstEventAts[i] = pgtype.Timestamptz{Time: st.FirstEventAt, Valid: true}
		p.LastEventAts[i] = pgtype.Timestamptz{Time: st.LastEventAt, Valid: true}
		p.LatestEventIds[i] = st.LatestEventID
		p.DecidingEventIds[i] = st.TerminalEventID
	}
	return p
}
