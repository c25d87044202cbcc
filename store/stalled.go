package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// DefaultStalledCopyAfter is how long a batch COPY may wait on its client
// without receiving a byte before ReapStalledCopies ends its session: the
// COPY counterpart of IdleInTransactionTimeout.
const DefaultStalledCopyAfter = 10 * time.Second

// copyWatch remembers the batch COPYs seen waiting on their client, and
// how far each had got, between calls of ReapStalledCopies.
type copyWatch struct {
	after time.Duration // Config.StalledCopyAfter
	// now is time.Now when nil; tests set it (export_test.go).
	now  func() time.Time
	mu   sync.Mutex
	seen map[copyKey]copySeen
}

type copyKey struct {
	pid   int32
	start time.Time // the COPY's query_start: a pid is reused
}

type copySeen struct {
	bytes int64
	since time.Time // when it was first seen waiting at these bytes
}

// ReapStalledCopies ends the sessions whose batch COPY into
// workflow_events has waited on its client, with no byte received, for
// Config.StalledCopyAfter or more, and returns them. Such a session belongs to a
// worker that froze mid-COPY (SIGSTOP, a long pause of its host, a cut
// network): it holds its partition's offset row, so the partition's next
// owner cannot claim it, and neither idle_in_transaction_session_timeout
// nor statement_timeout ends a COPY that waits for data. Ending it rolls
// its transaction back; the frozen worker, if it wakes, fails its fence.
// A COPY is stalled only if two calls that far apart see it at the
// same byte, so call this more often than that (the worker does, every
// few seconds); a COPY that is slow but moving is left alone.
func (s *Store) ReapStalledCopies(ctx context.Context) ([]model.StalledSession, error) {
	rows, err := s.q.StalledCopies(ctx, s.pool, copyEventsSQL)
	if err != nil {
		return nil, fmt.Errorf("look for stalled copies: %w", err)
	}
	now := time.Now()
	if s.copies.now != nil {
		now = s.copies.now()
	}
	s.copies.mu.Lock()
	prev := s.copies.seen
	next := make(map[copyKey]copySeen, len(rows))
	var stalled []dbsqlc.StalledCopiesRow
	for _, r := range rows {
		k := copyKey{r.Pid.Int32, r.QueryStart.Time}
		cur := copySeen{bytes: r.BytesProcessed.Int64, since: now}
		if p, ok := prev[k]; ok && p.bytes == cur.bytes {
			cur.since = p.since
			if now.Sub(p.since) >= s.copies.after {
				stalled = append(stalled, r)
				continue
			}
		}
		next[k] = cur
	}
	s.copies.seen = next
	s.copies.mu.Unlock()

	var ended []model.StalledSession
	for _, r := range stalled {
		ok, err := s.q.TerminateBackend(ctx, s.pool, r.Pid.Int32)
		if err != nil {
			return ended, fmt.Errorf("end stalled session %d: %w", r.Pid.Int32, err)
		}
		if ok {
			ended = append(ended, model.StalledSession{
				PID: r.Pid.Int32, ApplicationName: r.ApplicationName, ClientAddr: r.ClientAddr,
				Since: r.QueryStart.Time, Bytes: r.BytesProcessed.Int64,
			})
		}
	}
	return ended, nil
}
