package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/store"
)

// TestIndexMemory: the size it reads is that of every index of the three
// tables a batch writes, and of them only; shared_buffers is the
// server's; and both are readable by the README's least-privileged worker
// role.
func TestIndexMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	roles, conn := migratedWithREADMEGrants(t)
	st, err := store.Open(ctx, store.Config{URL: roles.WorkerURL})
	require.NoError(t, err)
	t.Cleanup(st.Close)

	// What pg_class says of the indexes, read another way.
	indexes := func() int64 {
		var n int64
		require.NoError(t, conn.QueryRow(ctx, `SELECT sum(pg_total_relation_size(i.indexrelid))::bigint
			FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid
			WHERE c.relname IN ('workflow_events', 'workflow_runs', 'workflow_steps')`).Scan(&n))
		return n
	}
	var shared int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_size_bytes(current_setting('shared_buffers'))`).Scan(&shared))

	got, err := st.IndexMemory(ctx)
	require.NoError(t, err, "the worker role reads both")
	require.Equal(t, store.IndexMemory{Indexes: indexes(), SharedBuffers: shared}, got)
	require.Positive(t, got.Indexes)

	// Rows in the three tables grow it; a table of another's does not.
	lease := claim(t, st, 0)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var msgs [][]byte
	for i := range 2000 {
		msgs = append(msgs, eventJSON(fmt.Sprintf("e-%d", i), "step.started", fmt.Sprintf("r-%d", i%500), t0, 1, ""))
	}
	_, err = st.Apply(ctx, batchOf(lease, msgs...))
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `CREATE TABLE not_ours AS SELECT g AS id FROM generate_series(1, 100000) AS g;
		ALTER TABLE not_ours ADD PRIMARY KEY (id)`)
	require.NoError(t, err)
	grown, err := st.IndexMemory(ctx)
	require.NoError(t, err)
	require.Equal(t, indexes(), grown.Indexes)
	require.Greater(t, grown.Indexes, got.Indexes)
	require.Equal(t, shared, grown.SharedBuffers)
}

func TestIndexMemoryOutgrown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		indexes, shared int64
		want            bool
	}{
		{indexes: 1 << 30, shared: 4 << 30, want: false},
		{indexes: 4 << 30, shared: 4 << 30, want: false},
		{indexes: 4<<30 + 1, shared: 4 << 30, want: true},
		{indexes: 7 << 30, shared: 4 << 30, want: true},
	} {
		m := store.IndexMemory{Indexes: tc.indexes, SharedBuffers: tc.shared}
		require.Equal(t, tc.want, m.Outgrown(), "%+v", m)
	}
}
