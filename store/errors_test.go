package store_test

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// TestRunTakenIsNotTheDataFault: a batch that keeps losing the race to
// store a new run's row fails with PostgreSQL's unique violation, which
// must not read as the data's fault: that would split the batch into dead
// letters and skip its events. It is retried.
func TestRunTakenIsNotTheDataFault(t *testing.T) {
	err := store.ClassifyRunTaken(&pgconn.PgError{Code: "23505", TableName: "workflow_runs"})
	require.Error(t, err)
	require.False(t, errors.Is(err, model.ErrRejected), "%v", err)
}
