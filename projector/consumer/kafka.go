package consumer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// This file is where the program meets Kafka's client: the one sarama
// configuration (NewSaramaConfig), and the one helper for look-ups about
// the topics (Cluster). The worker, the offsets commands and /readyz all
// go through them.

// ClientKind says what a sarama client is for.
type ClientKind int

const (
	// ConsumerClient is the worker's consumer-group client.
	ConsumerClient ClientKind = iota
	// LookupClient answers look-ups (Cluster): metadata, offsets, the
	// read-committed fetch past transaction markers.
	LookupClient
)

// lookupTimeout bounds each network step of a look-up client: a broker
// that does not answer fails a look-up in seconds, not in sarama's 30.
const lookupTimeout = 10 * time.Second

// NewSaramaConfig returns the sarama configuration of every client the
// program opens, from cfg's Kafka settings (Brokers are not part of it).
// Every client reads committed data only: messages of aborted
// transactions are never delivered, and offsets are those a read-committed
// consumer sees (txn.go).
func NewSaramaConfig(cfg Config, kind ClientKind) *sarama.Config {
	sc := sarama.NewConfig()
	sc.ClientID = "projector"
	sc.Version, _ = sarama.ParseKafkaVersion(cfg.KafkaVersion) // checked by Validate
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	applySecurity(sc, cfg) // TLS and SASL, security.go
	if kind == LookupClient {
		sc.Net.DialTimeout = lookupTimeout
		sc.Net.ReadTimeout = lookupTimeout
		sc.Net.WriteTimeout = lookupTimeout
		sc.Metadata.Retry.Max = 2
		return sc
	}
	sc.Consumer.Return.Errors = true
	// Kafka's committed offsets are never used: positions come from
	// PostgreSQL in Setup. Nothing is committed to Kafka unless the
	// stored offsets are mirrored there for lag tools (handler.mirror).
	sc.Consumer.Offsets.AutoCommit.Enable = cfg.MirrorOffsets
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Group.ResetInvalidOffsets = true
	// An eager strategy: with cooperative rebalancing, partitions added
	// later start without Setup, so from Kafka's offsets.
	sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	// A JoinGroup waits at the coordinator up to the rebalance timeout,
	// but sarama reads every answer within Net.ReadTimeout (30s). With
	// sarama's default of 60s, a join phase held by a member that died
	// mid-rebalance times every JoinGroup out, and each retry restarts
	// the phase: the group never forms again (IBM/sarama#2820; Kafka's
	// own client waits rebalance timeout + 5s). A third of the read
	// timeout leaves room for coordinators that restart the phase's
	// clock on every rejoin (kfake does); our claims end at once on a
	// rebalance, so 10s is ample.
	sc.Consumer.Group.Rebalance.Timeout = 10 * time.Second
	sc.Consumer.Group.InstanceId = cfg.InstanceID // static membership when set
	sc.Consumer.MaxProcessingTime = time.Second
	// Bounded memory: at most this many messages wait per partition, and
	// a fetch asks for 256 KiB per partition (sarama grows it for a larger
	// message). Compressed batches decode to several times that, so larger
	// fetches mostly cost memory: measured, 1 MiB doubled the peak heap.
	sc.ChannelBufferSize = 256
	sc.Consumer.Fetch.Default = 256 << 10
	// A short fetch wait lets an idle claim, and the whole worker on
	// shutdown, answer within 100 ms.
	sc.Consumer.MaxWaitTime = 100 * time.Millisecond
	return sc
}

// ErrUnknownTopic means a topic does not exist on the brokers.
var ErrUnknownTopic = errors.New("topic does not exist on the brokers")

// Cluster answers look-ups about the topics' partitions, as a
// read-committed consumer sees them, on a client of its own: on a
// consumer's connection, each would queue behind a fetch that the broker
// holds for up to its wait time.
type Cluster struct {
	client sarama.Client
}

// DialCluster checks that a broker accepts the configuration (a refusal
// is a *ConfigError naming its cause, preflight.go) and connects a look-up
// client to cfg.Brokers.
func DialCluster(cfg Config) (*Cluster, error) {
	if err := CheckBrokers(cfg); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return nil, err
		}
		return nil, fmt.Errorf("connect to kafka at %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	client, err := sarama.NewClient(cfg.Brokers, NewSaramaConfig(cfg, LookupClient))
	if err != nil {
		return nil, fmt.Errorf("connect to kafka at %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	return &Cluster{client: client}, nil
}

// Close closes the client's connections.
func (c *Cluster) Close() error { return c.client.Close() }

// CheckTopics asks the brokers for the topics' metadata now (not from the
// client's cache), and fails with ErrUnknownTopic when one does not exist.
func (c *Cluster) CheckTopics(topics []string) error {
	if err := c.client.RefreshMetadata(topics...); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return fmt.Errorf("topics %s: %w", strings.Join(topics, ","), ErrUnknownTopic)
		}
		return fmt.Errorf("metadata of topics %s: %w", strings.Join(topics, ","), err)
	}
	for _, t := range topics {
		if _, err := c.Partitions(t); err != nil {
			return err
		}
	}
	return nil
}

// Partitions returns a topic's partitions in order; a topic that does not
// exist is ErrUnknownTopic.
func (c *Cluster) Partitions(topic string) ([]int32, error) {
	parts, err := c.client.Partitions(topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil, fmt.Errorf("topic %q: %w", topic, ErrUnknownTopic)
	}
	if err != nil {
		return nil, fmt.Errorf("partitions of topic %q: %w", topic, err)
	}
	parts = slices.Clone(parts)
	slices.Sort(parts)
	return parts, nil
}

// LogStart returns the first offset of a partition's log.
func (c *Cluster) LogStart(topic string, partition int32) (int64, error) {
	off, err := c.client.GetOffset(topic, partition, sarama.OffsetOldest)
	if err != nil {
		return 0, fmt.Errorf("log start of %s/%d: %w", topic, partition, err)
	}
	return off, nil
}

// HighWatermark returns the offset after the last message of a
// partition's log (transaction markers and open transactions included).
func (c *Cluster) HighWatermark(topic string, partition int32) (int64, error) {
	off, err := c.client.GetOffset(topic, partition, sarama.OffsetNewest)
	if err != nil {
		return 0, fmt.Errorf("high watermark of %s/%d: %w", topic, partition, err)
	}
	return off, nil
}

// Range is a partition's log as a read-committed consumer sees it.
type Range struct {
	// Start is the first offset of the log.
	Start int64
	// LastStable is where the oldest open transaction begins, or
	// HighWatermark when none is open: a read-committed consumer reads
	// nothing from there until it ends.
	LastStable int64
	// HighWatermark is the offset after the last message.
	HighWatermark int64
}

// Range looks up a partition's log start, last stable offset and high
// watermark.
func (c *Cluster) Range(topic string, partition int32) (Range, error) {
	var r Range
	var err error
	if r.Start, err = c.LogStart(topic, partition); err != nil {
		return r, err
	}
	if r.HighWatermark, err = c.HighWatermark(topic, partition); err != nil {
		return r, err
	}
	if r.LastStable, err = c.LastStableOffset(topic, partition); err != nil {
		return r, fmt.Errorf("last stable offset of %s/%d: %w", topic, partition, err)
	}
	r.LastStable = min(r.LastStable, r.HighWatermark)
	return r, nil
}
