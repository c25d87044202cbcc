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

	"github.com/projector-run/projector/projector"
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

// NewProducer connects a producer.
func NewProducer(brokers []string, topic string) (*Producer, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchMaxBytes(2<<20),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if err != nil {
		return nil, fmt.Errorf("connect producer: %w", err)
	}
	return &Producer{cl: cl, topic: topic}, nil
}

// Produce sends msgs in order and returns once all are acknowledged.
func (p *Producer) Produce(ctx context.Context, msgs []projector.Message) error {
	return p.produce(ctx, msgs, time.Time{})
}

// produce stamps the records at at, or when they are sent if at is zero.
func (p *Producer) produce(ctx context.Context, msgs []projector.Message, at time.Time) error {
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
func Produce(t testing.TB, c *kfake.Cluster, topic string, msgs []projector.Message) {
	t.Helper()
	ProduceAt(t, c, topic, msgs, time.Time{})
}

// ProduceAt is Produce with every message's timestamp at (when they are
// sent if at is zero), to the millisecond as Kafka keeps it.
func ProduceAt(t testing.TB, c *kfake.Cluster, topic string, msgs []projector.Message, at time.Time) {
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

// HighWatermarks returns the high watermark of every partition of topic.
func HighWatermarks(c *kfake.Cluster, topic string) map[int32]int64 {
	out := map[int32]int64{}
	for _, pi := range c.PartitionInfos(topic) {
		out[pi.Partition] = pi.HighWatermark
	}
	return out
}
