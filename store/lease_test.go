package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/storetest"
)

// TestRepositionBackKeepsTheOldLogsDeadLetters: a topic recreated starts
// its offsets over, so the dead letters of its old log hold positions that
// the new log's invalid messages take. Repositioning back moves the old
// ones from there on to dead_letters_superseded, with the incident, so
// that the new ones are stored too (dead_letters keeps one per position,
// and skips a position it holds). Repositioning forward (retention) moves
// none.
func TestRepositionBackKeepsTheOldLogsDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := batchOf(claim(t, st, 0),
		[]byte(`old invalid 0`),
		eventJSON("e1", "run.queued", "r1", t0, 1, ""),
		[]byte(`old invalid 2`),
		[]byte(`old invalid 3`),
	)
	_, err := st.Apply(ctx, old)
	require.NoError(t, err)

	// Retention moved the log start forward: nothing to supersede.
	l := old.Lease
	l.NextOffset = old.End
	l, err = st.Reposition(ctx, l, 10, model.Incident{Kind: model.IncidentOffsetOutOfRange, ExpectedOffset: 4, ActualOffset: 10, Detail: "deleted"})
	require.NoError(t, err)
	// The topic was recreated: its log starts again at 0.
	l, err = st.Reposition(ctx, l, 2, model.Incident{Kind: model.IncidentOffsetOutOfRange, ExpectedOffset: 10, ActualOffset: 2, Detail: "recreated"})
	require.NoError(t, err)
	require.Equal(t, int64(2), l.NextOffset)

	_, err = st.Apply(ctx, batchOf(l, []byte(`new invalid 2`), eventJSON("e9", "run.queued", "r9", t0, 1, "")))
	require.NoError(t, err)

	dead := func(table string) map[int64]string {
		rows, err := st.Pool().Query(ctx, `SELECT "offset", value FROM `+table+` ORDER BY "offset"`)
		require.NoError(t, err)
		defer rows.Close()
		out := map[int64]string{}
		for rows.Next() {
			var off int64
			var v []byte
			require.NoError(t, rows.Scan(&off, &v))
			out[off] = string(v)
		}
		require.NoError(t, rows.Err())
		return out
	}
	require.Equal(t, map[int64]string{0: "old invalid 0", 2: "new invalid 2"}, dead("dead_letters"))
	require.Equal(t, map[int64]string{2: "old invalid 2", 3: "old invalid 3"}, dead("dead_letters_superseded"))
	var detail string
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT i.detail FROM dead_letters_superseded s JOIN consumer_incidents i ON i.id = s.incident_id LIMIT 1`).Scan(&detail))
	require.Equal(t, "recreated", detail)
}

// TestSessionsIdleInTransactionAreEnded: a worker frozen in the middle of a
// batch holds its partition's offset row; the server ends such a session
// (the zombie scenario of projector/faults shows the new owner's claim
// otherwise waits for the frozen worker to wake).
func TestSessionsIdleInTransactionAreEnded(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	var v string
	require.NoError(t, st.Pool().QueryRow(context.Background(), `SHOW idle_in_transaction_session_timeout`).Scan(&v))
	require.Equal(t, "10s", v)
}
