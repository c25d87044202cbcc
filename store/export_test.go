package store

import (
	"context"

	"github.com/projector-run/projector/projector"
)

// ApplySkipStored applies b with the insert that skips stored event_ids
// only, never by COPY, so that tests can compare the two ways.
func (s *Store) ApplySkipStored(ctx context.Context, b *projector.Batch) (projector.Applied, error) {
	res, _, err := s.apply(ctx, b, b.UniqueRecords(), true)
	return res, err
}
