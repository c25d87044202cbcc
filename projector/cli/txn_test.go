package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/storetest"
)

// showJSON runs offsets show --output json.
func (w *world) showJSON() []partitionOffsets {
	w.t.Helper()
	code, out, stderr := w.cli("offsets", "show", "--output", "json")
	require.Equal(w.t, 0, code, stderr)
	var rows []partitionOffsets
	require.NoError(w.t, json.Unmarshal([]byte(out), &rows))
	return rows
}

// txnLog is one partition's log written by a plain and a transactional
// producer, one after the other, so that its offsets are known:
//
//	[0, a)        plain messages
//	[a, c)        a committed transaction, its commit marker at c
//	[c+1, m)      an aborted transaction, its abort marker at m
//	[m+1, hwm)    plain messages
type txnLog struct {
	a, c, m, hwm int64
	// abortedAt is a time before every message of the aborted
	// transaction and after every message before it.
	abortedAt time.Time
}

func produceTxnLog(t *testing.T, w *world, msgs []model.Message) txnLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := len(msgs) / 4
	txn, err := kafkatest.NewTxnProducer(w.cluster.ListenAddrs(), testTopic, "reset-txn", kgo.Lz4Compression())
	require.NoError(t, err)
	defer txn.Close()
	var l txnLog
	kafkatest.Produce(t, w.cluster, testTopic, msgs[:q])
	l.a = int64(q)
	require.NoError(t, txn.Begin())
	require.NoError(t, txn.Produce(ctx, msgs[q:2*q]))
	require.NoError(t, txn.End(ctx, true))
	l.c = int64(2 * q)
	// Record timestamps are in milliseconds: the aborted transaction's
	// come after abortedAt, the committed ones' before it.
	time.Sleep(5 * time.Millisecond)
	l.abortedAt = time.Now()
	time.Sleep(5 * time.Millisecond)
	require.NoError(t, txn.Begin())
	require.NoError(t, txn.Produce(ctx, msgs[2*q:3*q]))
	require.NoError(t, txn.End(ctx, false))
	l.m = int64(3*q + 1)
	kafkatest.Produce(t, w.cluster, testTopic, msgs[3*q:])
	l.hwm = int64(len(msgs) + 2)
	require.Equal(t, l.hwm, kafkatest.HighWatermarks(w.cluster, testTopic)[0], "two markers in the log")
	return l
}

// TestOffsetsWithTransactionalProducers: after a worker consumed a log
// that holds a committed and an aborted transaction, offsets show says lag
// 0 with the last stable offset at the high watermark, and offsets reset
// to an offset on a marker, inside the aborted transaction, on the abort
// marker, or to a time just before the aborted transaction, then
// consuming again, each end with the same tables, none holding anything
// of the aborted transaction.
func TestOffsetsWithTransactionalProducers(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	wl := keyedWorkload(48, 60)
	l := produceTxnLog(t, w, wl.Messages)
	q := len(wl.Messages) / 4
	aborted := wl.Messages[2*q : 3*q]

	applied := w.consume()
	rows := w.showJSON()
	require.Len(t, rows, 1)
	require.Equal(t, partitionOffsets{Topic: testTopic, Partition: 0, NextOffset: &l.hwm, HighWatermark: l.hwm, LastStableOffset: l.hwm,
		UpdatedAt: rows[0].UpdatedAt, Owner: rows[0].Owner}, rows[0], "caught up past the abort marker")
	code, out, stderr := w.cli("offsets", "show")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "total lag 0 messages")
	before := storetest.Snapshot(t, w.st)
	abortedIDs := eventIDs(aborted)
	committedIDs := eventIDs(append(append([]model.Message{}, wl.Messages[:2*q]...), wl.Messages[3*q:]...))
	var onlyAborted []string
	for id := range abortedIDs {
		if !committedIDs[id] {
			onlyAborted = append(onlyAborted, id)
		}
	}
	require.NotEmpty(t, onlyAborted)
	require.Zero(t, w.count(`SELECT count(*) FROM workflow_events WHERE event_id = ANY($1)`, onlyAborted), "no event of the aborted transaction")
	require.Zero(t, w.count(`SELECT count(*) FROM dead_letters WHERE "offset" > $1 AND "offset" < $2`, l.c, l.m), "no dead letter of the aborted transaction")
	t.Logf("log: plain [0, %d), committed [%d, %d), commit marker %d, aborted [%d, %d), abort marker %d, plain [%d, %d); %d events applied",
		l.a, l.a, l.c, l.c, l.c+1, l.m, l.m, l.m+1, l.hwm, applied)

	for _, to := range []struct {
		name string
		to   string
		want int64
	}{
		{"the commit marker", strconv.FormatInt(l.c, 10), l.c},
		{"inside the aborted transaction", strconv.FormatInt(l.c+3, 10), l.c + 3},
		{"the abort marker", strconv.FormatInt(l.m, 10), l.m},
		{"a time before the aborted transaction", l.abortedAt.Format(time.RFC3339Nano), -1},
	} {
		// Only markers and aborted messages between the commit marker
		// and the messages after the abort marker: every target removes
		// the events of those messages.
		removed := w.count(`SELECT count(*) FROM workflow_events WHERE "offset" >= $1`, l.c)
		code, out, stderr := w.cli("offsets", "reset", "--to", to.to)
		require.Equal(t, 0, code, "%s: %s", to.name, stderr)
		next := w.count(`SELECT next_offset FROM consumer_offsets`)
		if to.want >= 0 {
			require.Equal(t, to.want, next, to.name)
		} else {
			// The first record stamped at or after the time: in the
			// aborted transaction, its marker, or the first message
			// after it, whichever the broker lists.
			require.True(t, next > l.c && next <= l.m+1, "%s: reset to %d, not in (%d, %d]", to.name, next, l.c, l.m+1)
		}
		require.Contains(t, out, fmt.Sprintf("%d events and", removed), to.name)
		require.Equal(t, int(removed), w.consume(), "%s: each removed event applied once more", to.name)
		require.Equal(t, before, storetest.Snapshot(t, w.st), to.name)
		require.Equal(t, l.hwm, w.showJSON()[0].LastStableOffset)
		require.Zero(t, w.showJSON()[0].Lag, to.name)
	}
}

// TestOffsetsWithAnOpenTransaction: while a transaction is open, offsets
// show gives its first offset as the last stable offset, counts lag to it
// and says why, reset --to latest moves to it, not past the transaction,
// and once it commits a worker applies it.
func TestOffsetsWithAnOpenTransaction(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := newWorld(t, 1)
	wl := keyedWorkload(49, 30)
	half := len(wl.Messages) / 2
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages[:half])
	txn, err := kafkatest.NewTxnProducer(w.cluster.ListenAddrs(), testTopic, "open-txn", kgo.SnappyCompression())
	require.NoError(t, err)
	defer txn.Close()
	require.NoError(t, txn.Begin())
	require.NoError(t, txn.Produce(ctx, wl.Messages[half:]))
	lso, hwm := int64(half), int64(len(wl.Messages))

	rows := w.showJSON()
	require.Equal(t, lso, rows[0].LastStableOffset)
	require.Equal(t, hwm, rows[0].HighWatermark)
	require.Equal(t, lso, rows[0].Lag, "lag counts to the last stable offset")
	require.Contains(t, rows[0].Note, "open transaction")

	code, _, stderr := w.cli("offsets", "reset", "--to", "latest")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, lso, w.count(`SELECT next_offset FROM consumer_offsets`), "latest is the last stable offset")
	rows = w.showJSON()
	require.Zero(t, rows[0].Lag)
	code, out, stderr := w.cli("offsets", "show")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "total lag 0 messages")
	require.Contains(t, out, fmt.Sprintf("open transaction from offset %d", lso))

	require.NoError(t, txn.End(ctx, true))
	applied := w.consume()
	require.Equal(t, len(eventIDs(wl.Messages[half:])), applied, "the transaction's events, once committed")
	require.Equal(t, hwm+1, w.count(`SELECT next_offset FROM consumer_offsets`), "past the commit marker")
	require.Zero(t, w.showJSON()[0].Lag)
}

// eventIDs returns the event_ids of the valid messages.
func eventIDs(msgs []model.Message) map[string]bool {
	ids := map[string]bool{}
	for _, m := range msgs {
		if ev, err := model.Decode(m.Value); err == nil {
			ids[ev.EventID] = true
		}
	}
	return ids
}
