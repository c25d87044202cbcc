package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/projector-run/projector/projector/model"
)

// Config configures a Worker. Flags and environment variables are bound to
// it in projector/cli.
type Config struct {
	// Brokers are the Kafka bootstrap addresses. Default localhost:9092.
	Brokers []string
	// Topics are the topics to consume. Default workflow-events.
	Topics []string
	// Group is the Kafka consumer group, and the key of the stored
	// offsets. Default workflow-projector.
	Group string
	// KafkaVersion is the protocol version sarama speaks. Default 2.8.0.
	KafkaVersion string
	// BatchSize is the most messages of one partition applied in one
	// transaction. Default 2000.
	BatchSize int
	// BatchWait is how long a partition's batch waits for more messages
	// after its first one before it is applied. Default 20ms.
	BatchWait time.Duration
	// UntilCaughtUp makes Run return once the stored offset of every
	// partition of Topics has reached its high watermark. Default false.
	UntilCaughtUp bool
	// LeaseCheckInterval is how often an idle claim checks that its stored
	// offset and lease are unchanged, so that an offset moved by an
	// operator is noticed without new messages. Default 2s.
	LeaseCheckInterval time.Duration
	// RetryMin and RetryMax bound the exponential backoff of transient
	// failures. Default 100ms and 10s.
	RetryMin, RetryMax time.Duration
	// Owner names this worker in consumer_offsets.lease_owner. Default
	// hostname:pid.
	Owner string
	// MirrorOffsets copies each stored offset to the group's committed
	// offsets in Kafka after the database commit, for lag tools that read
	// Kafka (kafka-consumer-groups, Burrow). Advisory: positions always
	// come from PostgreSQL. Default false.
	MirrorOffsets bool
	// InstanceID makes the worker a static member of the group (KIP-345,
	// Kafka 2.3 or later): a worker that restarts with the same ID takes
	// its partitions back without a rebalance of the whole group, so a
	// worker that crashes and restarts over and over does not stall the
	// others; a stopped one's partitions move after the session timeout
	// (10s). Give each worker a stable ID of its own, e.g. its pod name.
	// Default empty: dynamic membership, where every start or stop of a
	// worker rebalances the whole group.
	InstanceID string
	// HighWatermarkInterval is how often each claimed partition's high
	// watermark is stored beside its offset, for the consumer_lag view.
	// Default 5s.
	HighWatermarkInterval time.Duration
	// LogInterval is how often each claimed partition logs, at info, what
	// it applied since its last such line (offset range, events, dead
	// letters, time). Default 10s.
	LogInterval time.Duration
	// Observer, when set, is told about claims, fences, retries and
	// rebalances, e.g. a *Metrics. Default none.
	Observer Observer
	// Middleware decorates the apply step, outermost first: each attempt
	// at a batch goes through it to the Sink's Apply, e.g.
	// Metrics.Measure. Default none.
	Middleware []Middleware
}

// ApplyFunc is the apply step: one attempt at writing a batch (Sink.Apply).
type ApplyFunc func(ctx context.Context, b *model.Batch) (model.Applied, error)

// Middleware decorates the apply step: it returns an ApplyFunc that calls
// next, with something around it (metrics, tracing).
type Middleware func(next ApplyFunc) ApplyFunc

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Brokers:            []string{"localhost:9092"},
		Topics:             []string{"workflow-events"},
		Group:              "workflow-projector",
		KafkaVersion:       "2.8.0",
		BatchSize:          2000,
		BatchWait:          20 * time.Millisecond,
		LeaseCheckInterval: 2 * time.Second,
		RetryMin:           100 * time.Millisecond,
		RetryMax:           10 * time.Second,

		HighWatermarkInterval: 5 * time.Second,
		LogInterval:           10 * time.Second,
	}
}

// Validate reports every invalid field, one per line.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one broker address is required"))
	}
	for _, b := range c.Brokers {
		if i := strings.LastIndexByte(b, ':'); i <= 0 || i == len(b)-1 {
			errs = append(errs, fmt.Errorf("brokers: %q is not host:port", b))
		}
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("topics: at least one topic is required"))
	}
	for _, t := range c.Topics {
		if t == "" || len(t) > 249 || strings.Trim(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			errs = append(errs, fmt.Errorf("topics: %q is not a valid Kafka topic name", t))
		}
	}
	if c.Group == "" {
		errs = append(errs, errors.New("group: must not be empty"))
	}
	if v, err := sarama.ParseKafkaVersion(c.KafkaVersion); err != nil {
		errs = append(errs, fmt.Errorf("kafka-version: %q is not a Kafka version like 2.8.0", c.KafkaVersion))
	} else if !v.IsAtLeast(sarama.V0_11_0_0) {
		// Reading committed data only (transactional producers) needs
		// the fetch and offset requests of 0.11.
		errs = append(errs, fmt.Errorf("kafka-version: needs 0.11.0 or later (read_committed), got %s", c.KafkaVersion))
	}
	if c.BatchSize < 1 || c.BatchSize > 100_000 {
		errs = append(errs, fmt.Errorf("batch-size: must be from 1 to 100000, got %d", c.BatchSize))
	}
	if c.BatchWait < 0 || c.BatchWait > time.Minute {
		errs = append(errs, fmt.Errorf("batch-wait: must be from 0 to 1m, got %s", c.BatchWait))
	}
	if c.LeaseCheckInterval <= 0 {
		errs = append(errs, fmt.Errorf("lease-check-interval: must be positive, got %s", c.LeaseCheckInterval))
	}
	if c.HighWatermarkInterval <= 0 {
		errs = append(errs, fmt.Errorf("high-watermark-interval: must be positive, got %s", c.HighWatermarkInterval))
	}
	if c.LogInterval <= 0 {
		errs = append(errs, fmt.Errorf("log-interval: must be positive, got %s", c.LogInterval))
	}
	if c.InstanceID != "" {
		if len(c.InstanceID) > 249 || strings.Trim(c.InstanceID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			errs = append(errs, fmt.Errorf("group-instance-id: %q must be at most 249 of a-z, A-Z, 0-9, '.', '_' and '-'", c.InstanceID))
		}
		if v, err := sarama.ParseKafkaVersion(c.KafkaVersion); err == nil && !v.IsAtLeast(sarama.V2_3_0_0) {
			errs = append(errs, fmt.Errorf("group-instance-id: needs kafka-version 2.3.0 or later, got %s", c.KafkaVersion))
		}
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("retry: need 0 < min <= max, got %s and %s", c.RetryMin, c.RetryMax))
	}
	return errors.Join(errs...)
}
