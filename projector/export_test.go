package projector

import "github.com/IBM/sarama"

// ConsumeClaim runs the worker's loop for one claim whose lease is
// already taken, outside a consumer group: tests feed it messages one at
// a time to see when it reads them. waiting, when not nil, is called each
// time the loop is about to wait: whether it would read a message, and
// that message's offset.
func ConsumeClaim(w *Worker, sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, lease Lease,
	waiting func(reading bool, next int64)) error {
	h := &handler{w: w, leases: map[TopicPartition]Lease{{lease.Topic, lease.Partition}: lease}, nudge: make(chan struct{}, 1),
		waiting: waiting}
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
