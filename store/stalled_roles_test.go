package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// TestReapAsTheWorkerRole: the stalled-COPY reaper works for a worker
// that logs in as the README's least-privileged role: it sees the frozen
// COPY of another session of its role, and ends it, with no grant beyond
// the README's (no pg_signal_backend, no pg_read_all_stats).
func TestReapAsTheWorkerRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	roles, _ := migratedWithREADMEGrants(t)

	const after = time.Second
	st, err := store.Open(ctx, store.Config{URL: roles.WorkerURL, StalledCopyAfter: after})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	clock := time.Now()
	store.SetStalledCopyClock(st, func() time.Time { return clock })
	_, err = st.Claim(ctx, group, topic, 0, 0, "frozen-owner")
	require.NoError(t, err)
	b := batchOf(model.Lease{Topic: topic}, eventJSON("frozen-1", "run.queued", "r-1", time.Unix(0, 0), 1, ""))
	s := store.AppendEventsCopy(nil, topic, 0, b.UniqueRecords())
	row := s[:len(s)-2] // without the trailer: the worker froze before the rest
	frozen, _ := startCopy(t, roles.WorkerURL, 0, row)
	copyAt(t, st, frozen.PID(), int64(len(row)))

	got, err := st.ReapStalledCopies(ctx)
	require.NoError(t, err)
	require.Empty(t, got, "first seen")
	clock = clock.Add(after)
	got, err = st.ReapStalledCopies(ctx)
	require.NoError(t, err, "the worker role may end a session of its own role")
	require.Len(t, got, 1, "the worker role sees its role's frozen COPY")
	require.Equal(t, int32(frozen.PID()), got[0].PID)
}

// migratedWithREADMEGrants returns a database of the test's own, migrated
// by its owner role, with the README's least-privilege GRANTs run, and a
// connection of the owner to it, closed with the test.
func migratedWithREADMEGrants(t *testing.T) (*storetest.Roles, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	roles := storetest.NewRoles(t)
	owner, err := store.Open(ctx, store.Config{URL: roles.OwnerURL})
	require.NoError(t, err)
	defer owner.Close()
	m, err := owner.NewMigrator()
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	conn, err := pgx.Connect(ctx, roles.OwnerURL)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	_, err = conn.Exec(ctx, roles.READMEGrants(t))
	require.NoError(t, err)
	return roles, conn
}
