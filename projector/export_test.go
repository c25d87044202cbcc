package projector

import "github.com/IBM/sarama"

// ConsumeClaim runs the worker's loop for one claim whose lease is
// already taken, outside a consumer group: tests feed it messages one at
// a time to see when it reads them.
func ConsumeClaim(w *Worker, sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, lease Lease) error {
	h := &handler{w: w, leases: map[TopicPartition]Lease{{lease.Topic, lease.Partition}: lease}, nudge: make(chan struct{}, 1)}
	return h.ConsumeClaim(sess, claim)
}

// The decoder tests' builders of JSON events, for the tests that ask
// PostgreSQL (decode_pg_test.go).
var (
	DecEvent  = decEvent
	DecNest   = decNest
	DecDigits = decDigits
	DecPadTo  = decPadTo
)
