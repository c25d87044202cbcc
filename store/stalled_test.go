package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// startCopy opens a session that begins a batch transaction the way a
// worker does (it locks partition's offset row) and starts the batch COPY,
// sending the stream's header and one row: a worker that froze mid-COPY,
// until send is called again.
func startCopy(t *testing.T, url string, partition int32, row []byte) (pc *pgconn.PgConn, send func([]byte)) {
	t.Helper()
	ctx := context.Background()
	pc, err := pgconn.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close(context.Background()) })
	_, err = pc.Exec(ctx, fmt.Sprintf("BEGIN; SELECT 1 FROM consumer_offsets WHERE partition = %d FOR UPDATE", partition)).ReadAll()
	require.NoError(t, err)
	fe := pc.Frontend()
	send = func(b []byte) {
		fe.Send(&pgproto3.CopyData{Data: b})
		require.NoError(t, fe.Flush())
	}
	fe.Send(&pgproto3.Query{String: store.CopyEventsSQL})
	require.NoError(t, fe.Flush())
	send(row)
	return pc, send
}

// copyAt waits until the session pid waits on its client in the middle of
// a COPY that has received want bytes.
func copyAt(t *testing.T, st *store.Store, pid uint32, want int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var got int64
		err := st.Pool().QueryRow(context.Background(), `
SELECT p.bytes_processed FROM pg_stat_activity a JOIN pg_stat_progress_copy p USING (pid)
WHERE pid = $1 AND a.wait_event = 'ClientRead'`, int32(pid)).Scan(&got)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			require.NoError(t, err)
		}
		require.LessOrEqual(t, got, want, "session %d", pid)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the COPY of session %d is at %d bytes, not %d", pid, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReapEndsFrozenCopiesOnly: a batch COPY whose client stopped sending
// (a frozen worker) holds its partition's offset row, so the partition's
// next owner cannot claim it; ReapStalledCopies ends that session once it
// has made no progress for StalledCopyAfter, and the claim goes through.
// A COPY that is slow but moving, and a session that is merely idle, are
// left alone. The reaper reads a clock of the test's; each step waits
// until the server has received what the COPYs were sent.
func TestReapEndsFrozenCopiesOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := storetest.URL(t)
	const after = time.Second
	st, err := store.Open(ctx, store.Config{URL: url, StalledCopyAfter: after})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	clock := time.Now()
	store.SetStalledCopyClock(st, func() time.Time { return clock })
	for p := range int32(2) {
		_, err := st.Claim(ctx, group, topic, p, 0, "old-owner")
		require.NoError(t, err)
	}
	ev := func(id string) []byte {
		b := batchOf(model.Lease{Topic: topic}, eventJSON(id, "run.queued", "r-"+id, time.Unix(0, 0), 1, ""))
		s := store.AppendEventsCopy(nil, topic, 0, b.UniqueRecords())
		return s[:len(s)-2] // without the trailer: more rows may follow
	}
	frozenRow, movingRow := ev("frozen-1"), ev("moving-0")
	frozen, _ := startCopy(t, url, 0, frozenRow)
	moving, sendMore := startCopy(t, url, 1, movingRow)
	movingBytes := int64(len(movingRow))
	idle, err := pgconn.Connect(ctx, url)
	require.NoError(t, err)
	defer idle.Close(ctx)
	copyAt(t, st, frozen.PID(), int64(len(frozenRow)))
	copyAt(t, st, moving.PID(), movingBytes)

	claimed := make(chan error, 1)
	go func() {
		_, err := st.Claim(ctx, group, topic, 0, 0, "new-owner")
		claimed <- err
	}()

	// reapAfter lets d pass on the reaper's clock, while the moving COPY
	// receives one more row, and reaps.
	rows := 1
	reapAfter := func(d time.Duration) []model.StalledSession {
		t.Helper()
		row := ev(fmt.Sprintf("moving-%d", rows))[len("PGCOPY\n\xff\r\n\x00")+8:] // without the header
		sendMore(row)
		rows++
		movingBytes += int64(len(row))
		copyAt(t, st, moving.PID(), movingBytes)
		clock = clock.Add(d)
		got, err := st.ReapStalledCopies(ctx)
		require.NoError(t, err)
		return got
	}
	require.Empty(t, reapAfter(0), "first seen")
	require.Empty(t, reapAfter(after-time.Millisecond), "not stalled for StalledCopyAfter yet")
	ended := reapAfter(time.Millisecond)
	require.Len(t, ended, 1, "the frozen COPY, and only it")
	require.Equal(t, int32(frozen.PID()), ended[0].PID)
	require.Equal(t, int64(len(frozenRow)), ended[0].Bytes)
	require.Empty(t, reapAfter(10*after), "the moving COPY is left alone however long it takes")
	select {
	case err := <-claimed:
		require.NoError(t, err, "the new owner claims the partition once the frozen session is gone")
	case <-time.After(time.Minute):
		t.Fatal("the claim still waits on the frozen session")
	}

	// The moving COPY was left alone and completes; the idle session is
	// still there.
	fe := moving.Frontend()
	fe.Send(&pgproto3.CopyData{Data: []byte{0xff, 0xff}})
	fe.Send(&pgproto3.CopyDone{})
	require.NoError(t, fe.Flush())
	for done := false; !done; {
		msg, err := moving.ReceiveMessage(ctx)
		require.NoError(t, err)
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("the moving COPY failed: %s", m.Message)
		case *pgproto3.ReadyForQuery:
			done = true
		}
	}
	_, err = moving.Exec(ctx, "COMMIT").ReadAll()
	require.NoError(t, err)
	var n int
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM workflow_events WHERE event_id LIKE 'moving-%'`).Scan(&n))
	require.Equal(t, rows, n)
	require.NoError(t, idle.Ping(ctx))
}

// TestWorkerEndsFrozenCopies: a running worker looks for frozen workers'
// sessions on its own (every consumer.ReapInterval) and ends them, even
// for partitions it does not hold, counting them in its stats.
func TestWorkerEndsFrozenCopies(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := storetest.URL(t)
	st, err := store.Open(ctx, store.Config{URL: url, StalledCopyAfter: time.Second})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	_, err = st.Claim(ctx, group, topic, 5, 0, "frozen-owner")
	require.NoError(t, err)
	b := batchOf(model.Lease{Topic: topic}, eventJSON("e1", "run.queued", "r1", time.Unix(0, 0), 1, ""))
	row := store.AppendEventsCopy(nil, topic, 5, b.UniqueRecords())
	frozen, _ := startCopy(t, url, 5, row[:len(row)-2])

	cluster := kafkatest.New(t, topic, 1)
	cfg := consumer.DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.Topics = []string{topic}
	cfg.Group = group
	w, err := consumer.NewWorker(cfg, st, logrus.New())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	require.Eventually(t, func() bool { return w.Stats().Reaped.Load() == 1 }, 30*time.Second, 50*time.Millisecond)
	// The backend was signalled; it exits right after.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var n int
		require.NoError(c, st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, frozen.PID()).Scan(&n))
		require.Zero(c, n, "the frozen session is gone")
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
