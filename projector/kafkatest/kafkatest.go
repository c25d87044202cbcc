// Package kafkatest runs an in-process Kafka-protocol broker (kfake) for
// tests, the demo and benchmarks, and produces workloads into it with a
// real Kafka client (franz-go).
package kafkatest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/projector-run/projector/projector/model"
)

// Start starts a one-broker cluster with the topic created with the given
// number of partitions.
func Start(topic string, partitions int32, opts ...kfake.Opt) (*kfake.Cluster, error) {
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start in-process kafka: %w", err)
	}
	return c, nil
}

// New starts a cluster for the test and closes it afterwards.
func New(t testing.TB, topic string, partitions int32, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := Start(topic, partitions, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Producer produces messages to a topic, partitioned by key like Kafka's
// own clients (murmur2), and waits until each is acknowledged.
type Producer struct {
	cl    *kgo.Client
	topic string
}

// NewProducer connects a producer; opts add to its client's options
// (TLS, SASL for a secured cluster).
func NewProducer(brokers []string, topic string, opts ...kgo.Opt) (*Producer, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchMaxBytes(2 << 20),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect producer: %w", err)
	}
	return &Producer{cl: cl, topic: topic}, nil
}

// Produce sends msgs in order and returns once all are acknowledged.
func (p *Producer) Produce(ctx context.Context, msgs []model.Message) error {
	return p.produce(ctx, msgs, time.Time{})
}

// produce stamps the records at at, or when they are sent if at is zero.
func (p *Producer) produce(ctx context.Context, msgs []model.Message, at time.Time) error {
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		r := &kgo.Record{Key: m.Key, Value: m.Value, Timestamp: at}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(h.Key), Value: h.Value})
		}
		recs[i] = r
	}
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", p.topic, err)
	}
	return nil
}

// Close closes the producer's connections.
func (p *Producer) Close() { p.cl.Close() }

// Produce sends msgs to the cluster's topic, failing the test on error.
func Produce(t testing.TB, c *kfake.Cluster, topic string, msgs []model.Message) {
	t.Helper()
	ProduceAt(t, c, topic, msgs, time.Time{})
}

// ProduceAt is Produce with every message's timestamp at (when they are
// sent if at is zero), to the millisecond as Kafka keeps it.
func ProduceAt(t testing.TB, c *kfake.Cluster, topic string, msgs []model.Message, at time.Time) {
	t.Helper()
	p, err := NewProducer(c.ListenAddrs(), topic)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.produce(context.Background(), msgs, at); err != nil {
		t.Fatal(err)
	}
}

// ProduceWith is Produce on a client with opts added to its options: TLS
// and SASL for a secured cluster.
func ProduceWith(t testing.TB, c *kfake.Cluster, topic string, msgs []model.Message, opts ...kgo.Opt) {
	t.Helper()
	p, err := NewProducer(c.ListenAddrs(), topic, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Produce(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
}

// HighWatermarks returns the high watermark of every partition of topic.
func HighWatermarks(c *kfake.Cluster, topic string) map[int32]int64 {
	out := map[int32]int64{}
	for _, pi := range c.PartitionInfos(topic) {
		out[pi.Partition] = pi.HighWatermark
	}
	return out
}

// Codecs are the compression codecs a Kafka producer may use, by name.
var Codecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}

// CodecNames lists the keys of Codecs in a fixed order.
var CodecNames = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// TxnProducer is an exactly-once producer (franz-go with a transactional
// ID), as Kafka Streams or Flink write: messages produced between Begin
// and Commit or Abort are read by read-committed consumers only once
// committed, never when aborted, and every partition the transaction
// wrote gets a transaction marker (a control record that takes an offset
// and delivers no message) when it ends.
type TxnProducer struct {
	cl    *kgo.Client
	topic string
}

// NewTxnProducer connects a transactional producer whose batches use
// codec. Like Producer, it partitions by key.
func NewTxnProducer(brokers []string, topic, txnID string, codec kgo.CompressionCodec) (*TxnProducer, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(5*time.Minute), // an open transaction ends only when a test ends it
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerBatchMaxBytes(2<<20),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if err != nil {
		return nil, fmt.Errorf("connect transactional producer: %w", err)
	}
	return &TxnProducer{cl: cl, topic: topic}, nil
}

// Begin starts a transaction.
func (p *TxnProducer) Begin() error {
	if err := p.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	return nil
}

// Produce sends msgs in the open transaction and returns once all are
// acknowledged (written to the log, not yet committed).
func (p *TxnProducer) Produce(ctx context.Context, msgs []model.Message) error {
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		r := &kgo.Record{Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(h.Key), Value: h.Value})
		}
		recs[i] = r
	}
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s in a transaction: %w", p.topic, err)
	}
	return nil
}

// End commits (commit true) or aborts the open transaction.
func (p *TxnProducer) End(ctx context.Context, commit bool) error {
	if err := p.cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush transaction: %w", err)
	}
	if err := p.cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		return fmt.Errorf("end transaction (commit %t): %w", commit, err)
	}
	return nil
}

// Close closes the producer's connections.
func (p *TxnProducer) Close() { p.cl.Close() }

// PlainProducer connects a producer like NewProducer whose batches use
// codec.
func PlainProducer(brokers []string, topic string, codec kgo.CompressionCodec) (*Producer, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerBatchMaxBytes(2<<20),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if err != nil {
		return nil, fmt.Errorf("connect producer: %w", err)
	}
	return &Producer{cl: cl, topic: topic}, nil
}

// TxnMix is what ProduceTxnMix produced.
type TxnMix struct {
	// Committed are the messages a read-committed consumer reads: those
	// of committed transactions and of the plain producer, in the order
	// they were produced.
	Committed []model.Message
	// Aborted are the messages of aborted transactions.
	Aborted []model.Message
	// Transactions and AbortedTransactions count the transactions.
	Transactions, AbortedTransactions int
}

// ProduceTxnMix produces msgs in transactions of txnSize messages, every
// third aborted, each transaction's messages in two halves with a chunk of
// plainSize messages from a plain (non-transactional) producer between
// them and after them, so that the log interleaves plain batches with
// committed and aborted transactional ones, and the last thing on each
// partition a transaction wrote to is a marker. Both producers use codec.
func ProduceTxnMix(ctx context.Context, brokers []string, topic, txnID string, codec kgo.CompressionCodec,
	msgs []model.Message, txnSize, plainSize int) (TxnMix, error) {
	var mix TxnMix
	txn, err := NewTxnProducer(brokers, topic, txnID, codec)
	if err != nil {
		return mix, err
	}
	defer txn.Close()
	plain, err := PlainProducer(brokers, topic, codec)
	if err != nil {
		return mix, err
	}
	defer plain.Close()
	take := func(n int) []model.Message {
		n = min(n, len(msgs))
		out := msgs[:n]
		msgs = msgs[n:]
		return out
	}
	for len(msgs) > 0 {
		commit := mix.Transactions%3 != 2
		mix.Transactions++
		if !commit {
			mix.AbortedTransactions++
		}
		if err := txn.Begin(); err != nil {
			return mix, err
		}
		var in []model.Message
		for half := range 2 {
			part := take(txnSize/2 + half*(txnSize%2))
			if err := txn.Produce(ctx, part); err != nil {
				return mix, err
			}
			in = append(in, part...)
			p := take(plainSize)
			if err := plain.Produce(ctx, p); err != nil {
				return mix, err
			}
			mix.Committed = append(mix.Committed, p...)
		}
		if err := txn.End(ctx, commit); err != nil {
			return mix, err
		}
		if commit {
			mix.Committed = append(mix.Committed, in...)
		} else {
			mix.Aborted = append(mix.Aborted, in...)
		}
	}
	return mix, nil
}
