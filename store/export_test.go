package store

import (
	"context"
	"time"

	"github.com/projector-run/projector/projector"
)

// ApplySkipStored applies b with the insert that skips stored event_ids
// only, never by COPY, so that tests can compare the two ways.
func (s *Store) ApplySkipStored(ctx context.Context, b *projector.Batch) (projector.Applied, error) {
	w := newWork(b, true)
	defer w.release()
	res, _, err := s.apply(ctx, w)
	return res, err
}

// AppendEventsCopy and CopySize are the COPY stream's encoder and size.
var (
	AppendEventsCopy = appendEventsCopy
	CopySize         = copySize
)

// CopyEventsSQL is the batch COPY statement.
const CopyEventsSQL = copyEventsSQL

// SetStalledCopyClock makes ReapStalledCopies read the time from now.
func SetStalledCopyClock(s *Store, now func() time.Time) { s.copies.now = now }
