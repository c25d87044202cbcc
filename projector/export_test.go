package projector

import (
	"errors"

	"github.com/IBM/sarama"
)

// ConsumeClaim runs the worker's loop for one claim whose lease is
// already taken, outside a consumer group: tests feed it messages one at
// a time to see when it reads them.
func ConsumeClaim(w *Worker, sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, lease Lease) error {
	h := &handler{w: w, probe: noBroker{}, leases: map[TopicPartition]Lease{{lease.Topic, lease.Partition}: lease}, nudge: make(chan struct{}, 1)}
	return h.ConsumeClaim(sess, claim)
}

// noBroker is the probe client of a claim run outside a consumer group:
// every broker look-up fails, so no last stable offset is known and no
// offset moves past transaction markers.
type noBroker struct{ sarama.Client }

var errNoBroker = errors.New("no broker: a claim run outside a consumer group")

func (noBroker) Config() *sarama.Config { return sarama.NewConfig() }

func (noBroker) Leader(string, int32) (*sarama.Broker, error) { return nil, errNoBroker }

func (noBroker) LeaderAndEpoch(string, int32) (*sarama.Broker, int32, error) {
	return nil, 0, errNoBroker
}

func (noBroker) RefreshMetadata(...string) error { return errNoBroker }
