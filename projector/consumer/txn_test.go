package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
)

// TestTransactionalProducers produces, with each compression codec, a
// workload in transactions of 20 messages (every third aborted), with a
// plain producer writing to the same partitions between the halves of each
// transaction and after it, so that every partition a transaction wrote to
// ends in a marker. A worker run until caught up stores only the committed
// messages (no event and no dead letter of an aborted transaction), every
// run equals the projection of the committed events, it exits, and every
// partition has lag 0: the stored next_offset is at the high watermark
// (past the final markers), and consumer_lag says lag 0.
func TestTransactionalProducers(t *testing.T) {
	t.Parallel()
	for i, name := range kafkatest.CodecNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := newPipeline(t, 3)
			wl := workload(uint64(300+i), 60)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			mix, err := kafkatest.ProduceTxnMix(ctx, p.cluster.ListenAddrs(), topic, "txn-"+name, kafkatest.Codecs[name], wl.Messages, 20, 5)
			require.NoError(t, err)
			require.Positive(t, mix.AbortedTransactions)
			p.produced = mix.Committed

			cfg := p.config(true)
			cfg.LeaseCheckInterval = 100 * time.Millisecond
			cfg.HighWatermarkInterval = 100 * time.Millisecond
			r := p.start("w", cfg)
			r.wait(t)
			p.verify() // events, runs, dead letters; next_offset at the high watermark
			requireNoAbortedEffects(t, p, mix)
			require.Equal(t, int64(len(mix.Committed)), r.w.Stats().Messages.Load(), "only committed messages consumed")

			lag := stableLag(t, p)
			var total int64
			for part, l := range lag {
				require.Equal(t, l.hwm, l.lso, "partition %d: no transaction open", part)
				require.Equal(t, l.hwm, l.next, "partition %d", part)
				total += l.lag
			}
			require.Zero(t, total, "consumer_lag")
			var hwm int64
			for _, h := range kafkatest.HighWatermarks(p.cluster, topic) {
				hwm += h
			}
			stored := storedEvents(t, p)
			t.Logf("codec %s: %d transactions (%d aborted); %d messages committed, %d aborted, %d offsets taken by markers; %d events stored; lag %d",
				name, mix.Transactions, mix.AbortedTransactions, len(mix.Committed), len(mix.Aborted),
				hwm-int64(len(mix.Committed)+len(mix.Aborted)), stored, total)
			require.Positive(t, hwm-int64(len(mix.Committed)+len(mix.Aborted)), "the logs hold markers")
		})
	}
}

// requireNoAbortedEffects checks that no message of an aborted transaction
// left an effect: its event is not stored from its position (an event_id
// also committed elsewhere is stored from there), and it is no dead letter.
func requireNoAbortedEffects(t *testing.T, p *pipeline, mix kafkatest.TxnMix) {
	t.Helper()
	ctx := context.Background()
	committed := map[string]bool{}
	for _, m := range mix.Committed {
		if ev, err := model.Decode(m.Value); err == nil {
			committed[ev.EventID] = true
		}
	}
	var onlyAborted []string
	var abortedInvalid [][]byte
	for _, m := range mix.Aborted {
		ev, err := model.Decode(m.Value)
		switch {
		case err != nil:
			abortedInvalid = append(abortedInvalid, m.Value)
		case !committed[ev.EventID]:
			onlyAborted = append(onlyAborted, ev.EventID)
		}
	}
	require.NotEmpty(t, onlyAborted, "test input: aborted transactions hold events of their own")
	var n int
	require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT count(*) FROM workflow_events WHERE event_id = ANY($1)`, onlyAborted).Scan(&n))
	require.Zero(t, n, "events of aborted transactions stored")
	require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE value = ANY($1)`, abortedInvalid).Scan(&n))
	require.Zero(t, n, "invalid messages of aborted transactions stored as dead letters")
}

type lagRowTxn struct{ next, hwm, lso, lag int64 }

// stableLag reads the consumer_lag view by partition, with the last stable offset.
func stableLag(t *testing.T, p *pipeline) map[int32]lagRowTxn {
	t.Helper()
	out, err := readConsumerLag(p)
	require.NoError(t, err)
	return out
}

// readConsumerLag reads the consumer_lag view by partition; a partition
// whose high watermark is not stored yet is an error.
func readConsumerLag(p *pipeline) (map[int32]lagRowTxn, error) {
	rows, err := p.st.Pool().Query(context.Background(),
		`SELECT partition, next_offset, high_watermark, last_stable_offset, lag FROM consumer_lag WHERE group_id = $1`, p.group)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int32]lagRowTxn{}
	for rows.Next() {
		var part int32
		var next int64
		var hwm, lso, lag *int64
		if err := rows.Scan(&part, &next, &hwm, &lso, &lag); err != nil {
			return nil, err
		}
		if hwm == nil || lso == nil || lag == nil {
			return nil, fmt.Errorf("partition %d: no high watermark stored yet", part)
		}
		out[part] = lagRowTxn{next: next, hwm: *hwm, lso: *lso, lag: *lag}
	}
	return out, rows.Err()
}

func storedEvents(t *testing.T, p *pipeline) int {
	t.Helper()
	var n int
	require.NoError(t, p.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM workflow_events`).Scan(&n))
	return n
}

// TestOpenTransactionHoldsCaughtUp leaves a transaction open in the middle
// of a partition, with plain messages after it (which a read-committed
// consumer reads only once the transaction ends). A worker run until
// caught up applies everything before the transaction, then says it waits
// on an open transaction, reports lag 0 against the last stable offset,
// and does not exit; once the transaction commits it applies the rest and
// exits.
func TestOpenTransactionHoldsCaughtUp(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newPipeline(t, 1)
	wl := workload(310, 40)
	msgs := wl.Messages
	third := len(msgs) / 3
	before, inTxn, after := msgs[:third], msgs[third:2*third], msgs[2*third:]
	p.produce(before)
	txn, err := kafkatest.NewTxnProducer(p.cluster.ListenAddrs(), topic, "open-txn", kgo.ZstdCompression())
	require.NoError(t, err)
	defer txn.Close()
	require.NoError(t, txn.Begin())
	require.NoError(t, txn.Produce(ctx, inTxn))
	p.produce(after) // behind the open transaction
	lso := p.cluster.PartitionInfo(topic, 0).LastStableOffset
	hwm := p.cluster.PartitionInfo(topic, 0).HighWatermark
	require.Equal(t, int64(len(before)), lso)
	require.Equal(t, int64(len(msgs)), hwm)

	cfg := p.config(true)
	cfg.LeaseCheckInterval = 100 * time.Millisecond
	cfg.HighWatermarkInterval = 100 * time.Millisecond
	cfg.Owner = "w"
	log := logrus.New()
	log.SetOutput(testWriter{t})
	hook := test.NewLocal(log)
	w, err := consumer.NewWorker(cfg, p.st, log.WithField("worker", "w"))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	// The state to reach: everything before the transaction applied, the
	// wait logged, consumer_lag at lag 0 with the last stable offset.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		stored, err := p.st.StoredOffsets(ctx, p.group)
		if !assert.NoError(c, err) {
			return
		}
		assert.Equal(c, lso, stored[model.TopicPartition{Topic: topic, Partition: 0}])
		assert.True(c, waitLogged(hook, lso), "the wait on the open transaction is logged")
		lag, err := readConsumerLag(p)
		if assert.NoError(c, err) {
			assert.Equal(c, lagRowTxn{next: lso, hwm: hwm, lso: lso, lag: 0}, lag[0])
		}
	}, time.Minute, 20*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the worker exited (%v) while a transaction was open", err)
	default:
	}
	require.Equal(t, int64(len(before)), w.Stats().Messages.Load(), "nothing of the open transaction or after it applied")

	require.NoError(t, txn.End(ctx, true))
	p.produced = msgs // before, the transaction's, after
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("the worker did not catch up within a minute of the commit")
	}
	p.verify()
	require.Equal(t, hwm+1, mustStored(t, p)[model.TopicPartition{Topic: topic, Partition: 0}], "past the commit marker")
}

// waitLogged reports whether the worker logged that it waits on an open
// transaction at last stable offset lso.
func waitLogged(hook *test.Hook, lso int64) bool {
	for _, e := range hook.AllEntries() {
		if strings.HasPrefix(e.Message, "waiting on an open transaction") && e.Data["last_stable_offset"] == lso {
			return true
		}
	}
	return false
}
