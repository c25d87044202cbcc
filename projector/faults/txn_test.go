//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/projector-run/projector/projector/model"
)

// TestSIGKILLStormTransactional is TestSIGKILLStorm with an exactly-once
// producer: during the storm, a transactional producer (zstd) writes the
// workload in transactions, every third aborted, and a plain producer
// writes to the same partitions between the halves of each transaction.
// Only committed messages may leave effects (verify expects exactly the
// plain and committed ones: an event or dead letter of an aborted
// transaction is a mismatch), and every next_offset must reach its
// partition's high watermark, past the transaction markers that end the
// logs.
func TestSIGKILLStormTransactional(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 6})
	msgs := workload(21, 3000)
	e.produce(msgs[:len(msgs)/5])
	const storm = 25 * time.Second
	waitProduced := e.produceTxnOver(msgs[len(msgs)/5:], storm, kgo.ZstdCompression())
	kills, inSession, inTx := e.storm(storm, func(slot string) []string { return []string{"--group-instance-id", slot} })
	require.Positive(t, inTx, "kills landed inside batch transactions")
	txns, abortedTxns, aborted := waitProduced()
	require.Positive(t, abortedTxns)
	e.waitCaughtUp(2 * time.Minute)
	e.stopAll()
	e.verify("storm-txn", verifyOptions{}, fmt.Sprintf("transactions=%d (aborted: %d, %d messages) kills=%d (after claiming partitions: %d, with a transaction open: %d) fence_rejections=%d",
		txns, abortedTxns, aborted, kills, inSession, inTx, e.countLogs(isFenced)))
}

// produceTxnOver produces msgs in the background over d, in transactions
// of a transactional producer with codec, every third aborted; each
// transaction's messages go in two halves, with a fifth of them from the
// plain producer between the halves. Committed and plain messages are
// recorded as sent (verify expects them); aborted ones are not. The
// returned function waits for the last transaction and returns the number
// of transactions, aborted transactions and aborted messages.
func (e *env) produceTxnOver(msgs []model.Message, d time.Duration, codec kgo.CompressionCodec) (wait func() (txns, abortedTxns, aborted int)) {
	const tick = 100 * time.Millisecond
	chunks := max(1, int(d/tick))
	size := (len(msgs) + chunks - 1) / chunks
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.broker.addr),
		kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID("faults-txn"),
		kgo.TransactionTimeout(time.Minute),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerBatchMaxBytes(maxMessageBytes),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	require.NoError(e.t, err)
	type result struct {
		txns, abortedTxns, aborted int
		err                        error
	}
	done := make(chan result, 1)
	go func() {
		defer cl.Close()
		var r result
		t := time.NewTicker(tick)
		defer t.Stop()
		for i := 0; i < len(msgs); i += size {
			chunk := msgs[i:min(i+size, len(msgs))]
			plain := len(chunk) / 5
			inTxn := chunk[plain:]
			commit := r.txns%3 != 2
			r.txns++
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			sent, err := e.produceTxn(ctx, cl, inTxn, chunk[:plain], commit)
			cancel()
			if err != nil {
				r.err = err
				done <- r
				return
			}
			if !commit {
				r.abortedTxns++
				r.aborted += sent
			}
			<-t.C
		}
		done <- r
	}()
	return func() (int, int, int) {
		e.t.Helper()
		r := <-done
		require.NoError(e.t, r.err)
		return r.txns, r.abortedTxns, r.aborted
	}
}

// produceTxn produces inTxn in one transaction, in two halves with plain
// (through the plain producer) between them, and commits or aborts it.
// When it commits, the transaction's messages are recorded as sent where
// the broker put them. It returns how many messages the transaction held.
func (e *env) produceTxn(ctx context.Context, cl *kgo.Client, inTxn, plain []model.Message, commit bool) (int, error) {
	if err := cl.BeginTransaction(); err != nil {
		return 0, fmt.Errorf("begin transaction: %w", err)
	}
	var sent []sentMsg
	half := len(inTxn) / 2
	for i, part := range [][]model.Message{inTxn[:half], inTxn[half:]} {
		recs := make([]*kgo.Record, len(part))
		index := make(map[*kgo.Record]int, len(part))
		for j, m := range part {
			r := &kgo.Record{Key: m.Key, Value: m.Value}
			for _, h := range m.Headers {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(h.Key), Value: h.Value})
			}
			recs[j] = r
			index[r] = j
		}
		res := cl.ProduceSync(ctx, recs...)
		if err := res.FirstErr(); err != nil {
			return 0, fmt.Errorf("produce in a transaction: %w", err)
		}
		for _, r := range res {
			sent = append(sent, sentMsg{Partition: r.Record.Partition, Offset: r.Record.Offset, Message: part[index[r.Record]]})
		}
		if i == 0 {
			if err := e.prod.produce(ctx, plain); err != nil {
				return 0, err
			}
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return 0, fmt.Errorf("end transaction (commit %t): %w", commit, err)
	}
	if commit {
		e.prod.mu.Lock()
		for i := range sent {
			sent[i].Gen = e.prod.gen
		}
		e.prod.sent = append(e.prod.sent, sent...)
		e.prod.mu.Unlock()
	}
	return len(sent), nil
}
