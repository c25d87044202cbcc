package consumer

import (
	"errors"

	"github.com/projector-run/projector/projector/model"

	"github.com/IBM/sarama"
)

// ConsumeClaim runs the worker's loop for one claim whose lease is
// already taken, outside a consumer group: tests feed it messages one at
// a time to see when it reads them. waiting, when not nil, is called each
// time the loop is about to wait: whether it would read a message, and
// that message's offset.
func ConsumeClaim(w *Worker, sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, lease model.Lease,
	waiting func(reading bool, next int64)) error {
	h := &handler{w: w, probe: &Cluster{client: noBroker{}}, leases: map[model.TopicPartition]model.Lease{{Topic: lease.Topic, Partition: lease.Partition}: lease}, nudge: make(chan struct{}, 1),
		waiting: waiting}
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
