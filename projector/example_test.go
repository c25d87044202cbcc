package projector_test

import (
	"context"
	"slices"

	"github.com/projector-run/projector/projector"
)

// eventsPerSource counts the stored events of each source, in the table
// events_per_source. Counting is order-insensitive: batches of different
// partitions may add to the same row in any order and get the same sums.
type eventsPerSource struct{}

func (eventsPerSource) Name() string { return "events_per_source" }

func (eventsPerSource) Setup(ctx context.Context, db projector.DB) error {
	_, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS events_per_source (
		source text PRIMARY KEY, events bigint NOT NULL)`)
	return err
}

func (eventsPerSource) Apply(ctx context.Context, db projector.DB, events []projector.Event) error {
	n := map[string]int64{}
	for _, e := range events {
		n[e.Source]++
	}
	// Every batch upserts its rows in one order: batches of other
	// partitions, applied concurrently, would deadlock otherwise.
	sources := make([]string, 0, len(n))
	for s := range n {
		sources = append(sources, s)
	}
	slices.Sort(sources)
	counts := make([]int64, len(sources))
	for i, s := range sources {
		counts[i] = n[s]
	}
	_, err := db.Exec(ctx, `INSERT INTO events_per_source AS t (source, events)
		SELECT * FROM unnest($1::text[], $2::bigint[])
		ON CONFLICT (source) DO UPDATE SET events = t.events + excluded.events`, sources, counts)
	return err
}

// Forget subtracts the counts of the runs' events, which are still stored
// when it is called; the projector then applies those that remain.
func (eventsPerSource) Forget(ctx context.Context, db projector.DB, runIDs []string) error {
	if runIDs == nil {
		_, err := db.Exec(ctx, `DELETE FROM events_per_source`)
		return err
	}
	_, err := db.Exec(ctx, `UPDATE events_per_source AS t SET events = t.events - f.n
		FROM (SELECT source, count(*) AS n FROM workflow_events
		      WHERE workflow_run_id = ANY($1::text[]) GROUP BY source) AS f
		WHERE t.source = f.source`, runIDs)
	return err
}

// A user's binary: the whole projector command line, with the
// events_per_source projection applied after the built-in ones. (An
// example without an output comment is compiled, not run.)
func Example() {
	projector.Main(eventsPerSource{})
}
