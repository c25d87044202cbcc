// Package projectiontest holds projections of a user's kind, written only
// against the public projection API, and the tables they must end with,
// computed from the produced events: the tests run them through every
// path that applies, forgets or re-applies events, and compare.
//
// The public API's projector.Projection, projector.DB and projector.Event
// are aliases of store.Projection, store.DB and model.Event; this package
// names the originals because package projector imports the command line
// (projector/cli), whose own tests use these projections: importing
// projector here would be an import cycle. projector's tests check that
// these projections are projector.Projections.
package projectiontest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// Counts is an order-insensitive aggregate: events per source and
// event_type, in the table NAME_counts. Forget subtracts the stored events
// of the forgotten runs.
type Counts struct{ N string }

// Name implements store.Projection.
func (c Counts) Name() string { return c.N }

func (c Counts) table() string { return c.N + "_counts" }

// Setup implements store.Projection.
func (c Counts) Setup(ctx context.Context, db store.DB) error {
	_, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+c.table()+` (
		source text NOT NULL, event_type text NOT NULL, events bigint NOT NULL,
		PRIMARY KEY (source, event_type))`)
	return err
}

// Apply implements store.Projection: one upsert adds the batch's counts.
func (c Counts) Apply(ctx context.Context, db store.DB, events []model.Event) error {
	type key struct{ source, typ string }
	n := map[key]int64{}
	for _, e := range events {
		n[key{e.Source, e.EventType}]++
	}
	keys := make([]key, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	// Rows locked in one order by every batch: concurrent batches of
	// other partitions upsert the same rows, and would deadlock otherwise.
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(strings.Compare(a.source, b.source), strings.Compare(a.typ, b.typ)) })
	var sources, types []string
	var counts []int64
	for _, k := range keys {
		sources, types, counts = append(sources, k.source), append(types, k.typ), append(counts, n[k])
	}
	_, err := db.Exec(ctx, `INSERT INTO `+c.table()+` AS t (source, event_type, events)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
		ON CONFLICT (source, event_type) DO UPDATE SET events = t.events + excluded.events`, sources, types, counts)
	return err
}

// Forget implements store.Projection: the stored events of the runs are
// still there, so their counts are subtracted.
func (c Counts) Forget(ctx context.Context, db store.DB, runIDs []string) error {
	if runIDs == nil {
		_, err := db.Exec(ctx, `DELETE FROM `+c.table())
		return err
	}
	_, err := db.Exec(ctx, `UPDATE `+c.table()+` AS t SET events = t.events - f.n
		FROM (SELECT source, event_type, count(*) AS n FROM workflow_events
		      WHERE workflow_run_id = ANY($1::text[]) GROUP BY source, event_type) AS f
		WHERE t.source = f.source AND t.event_type = f.event_type`, runIDs)
	return err
}

// PerRun is a table of one row per run: its events, and the first and
// latest timestamps, in NAME_runs. Forget deletes the runs' rows.
type PerRun struct{ N string }

// Name implements store.Projection.
func (p PerRun) Name() string { return p.N }

func (p PerRun) table() string { return p.N + "_runs" }

// Setup implements store.Projection.
func (p PerRun) Setup(ctx context.Context, db store.DB) error {
	_, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+p.table()+` (
		workflow_run_id text PRIMARY KEY, events bigint NOT NULL,
		first_at timestamptz NOT NULL, last_at timestamptz NOT NULL)`)
	return err
}

// Apply implements store.Projection: a merge of counts and bounds, so that
// a run's events may come in any order and in any batches.
func (p PerRun) Apply(ctx context.Context, db store.DB, events []model.Event) error {
	type agg struct {
		n           int64
		first, last time.Time
	}
	runs := map[string]*agg{}
	for _, e := range events {
		a := runs[e.WorkflowRunID]
		if a == nil {
			a = &agg{first: e.Timestamp, last: e.Timestamp}
			runs[e.WorkflowRunID] = a
		}
		a.n++
		if e.Timestamp.Before(a.first) {
			a.first = e.Timestamp
		}
		if e.Timestamp.After(a.last) {
			a.last = e.Timestamp
		}
	}
	ids := make([]string, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
	}
	slices.Sort(ids) // rows locked in one order by every batch
	counts, firsts, lasts := make([]int64, len(ids)), make([]time.Time, len(ids)), make([]time.Time, len(ids))
	for i, id := range ids {
		counts[i], firsts[i], lasts[i] = runs[id].n, runs[id].first, runs[id].last
	}
	_, err := db.Exec(ctx, `INSERT INTO `+p.table()+` AS t (workflow_run_id, events, first_at, last_at)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[])
		ON CONFLICT (workflow_run_id) DO UPDATE SET events = t.events + excluded.events,
			first_at = LEAST(t.first_at, excluded.first_at), last_at = GREATEST(t.last_at, excluded.last_at)`,
		ids, counts, firsts, lasts)
	return err
}

// Forget implements store.Projection.
func (p PerRun) Forget(ctx context.Context, db store.DB, runIDs []string) error {
	if runIDs == nil {
		_, err := db.Exec(ctx, `DELETE FROM `+p.table())
		return err
	}
	_, err := db.Exec(ctx, `DELETE FROM `+p.table()+` WHERE workflow_run_id = ANY($1::text[])`, runIDs)
	return err
}

// Tables returns what the tables of Counts{name} and PerRun{name} hold,
// as sorted lines, read from db.
func Tables(ctx context.Context, db store.DB, counts, perRun string) ([]string, error) {
	return lines(ctx, db, `SELECT format('%s %s %s', source, event_type, events) FROM `+counts+`_counts WHERE events <> 0
		UNION ALL
		SELECT format('run %s %s %s %s', workflow_run_id, events, to_char(first_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
			to_char(last_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')) FROM `+perRun+`_runs`)
}

func lines(ctx context.Context, db store.DB, q string) ([]string, error) {
	rows, err := db.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, rows.Err()
}

// Want returns the lines Tables must return for the distinct events:
// computed here, from scratch, without SQL.
func Want(events []model.Event) []string {
	counts := map[string]int64{}
	type agg struct {
		n           int64
		first, last time.Time
	}
	runs := map[string]*agg{}
	for _, e := range events {
		counts[e.Source+" "+e.EventType]++
		a := runs[e.WorkflowRunID]
		if a == nil {
			a = &agg{first: e.Timestamp, last: e.Timestamp}
			runs[e.WorkflowRunID] = a
		}
		a.n++
		a.first = minTime(a.first, e.Timestamp)
		a.last = maxTime(a.last, e.Timestamp)
	}
	var out []string
	for k, n := range counts {
		out = append(out, fmt.Sprintf("%s %d", k, n))
	}
	const layout = "2006-01-02T15:04:05.000000"
	for id, a := range runs {
		out = append(out, strings.Join([]string{"run", id, fmt.Sprint(a.n), a.first.UTC().Format(layout), a.last.UTC().Format(layout)}, " "))
	}
	slices.Sort(out)
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
