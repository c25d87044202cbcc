package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// Reprocessing (offsets reset, rebuild) rewrites the projections from the
// stored events: workflow_runs by comparing each run with its projection
// (runSync), every other projection through Forget and Apply. Both hold an EXCLUSIVE lock on consumer_offsets for their
// whole transaction: every batch transaction starts by locking its
// partition's offset row, so none is in flight while they read and write,
// whatever partitions its runs span, and none can lose an update. Readers
// see the old rows until the single commit.

// lockTimeout bounds how long reset and rebuild wait for the offsets lock
// (batches hold it for milliseconds; another reset or rebuild for longer).
const lockTimeout = time.Minute

// runChunk is how many runs a recompute reads, compares and writes at once.
const runChunk = 1000

// ErrLockTimeout means reset or rebuild could not take the offsets lock in
// time: another reset, rebuild or a long transaction holds it.
var ErrLockTimeout = errors.New("timed out waiting for the consumer_offsets lock (is another reset or rebuild running?)")

// RunChanges says what recomputing stored runs from their events found,
// and, unless it was a dry run, wrote.
type RunChanges struct {
	// Recomputed is the number of runs projected from their events.
	Recomputed int64
	// Inserted runs had events but no stored row.
	Inserted int64
	// Updated runs had a stored row that differed from their projection.
	Updated int64
	// Deleted runs had a stored row but no event (left).
	Deleted int64
	// Unchanged runs were already right.
	Unchanged int64
	// Samples are the first few differences, in workflow_run_id order.
	Samples []RunDiff
}

// Changed is the number of rows inserted, updated or deleted.
func (c RunChanges) Changed() int64 { return c.Inserted + c.Updated + c.Deleted }

// RunDiff is one difference between a stored run and its projection.
type RunDiff struct {
	WorkflowRunID string
	// Change is "insert", "update" or "delete".
	Change string
	// Fields lists the columns that differ, as "column: stored -> projected".
	Fields []string
}

func (d RunDiff) String() string {
	s := d.Change + " " + d.WorkflowRunID
	if len(d.Fields) > 0 {
		s += ": " + strings.Join(d.Fields, ", ")
	}
	return s
}

// OffsetRow is a stored offset of a group.
type OffsetRow struct {
	Topic      string
	Partition  int32
	NextOffset int64
	LeaseEpoch int64
	LeaseOwner string
	UpdatedAt  time.Time
}

// GroupOffsets returns the stored offsets of a group, by topic and
// partition.
func (s *Store) GroupOffsets(ctx context.Context, group string) ([]OffsetRow, error) {
	rows, err := s.q.OffsetsOfGroup(ctx, s.pool, group)
	if err != nil {
		return nil, fmt.Errorf("list offsets of group %s: %w", group, err)
	}
	out := make([]OffsetRow, len(rows))
	for i, r := range rows {
		out[i] = OffsetRow{Topic: r.Topic, Partition: r.Partition, NextOffset: r.NextOffset,
			LeaseEpoch: r.LeaseEpoch, LeaseOwner: r.LeaseOwner, UpdatedAt: r.UpdatedAt.Time.UTC()}
	}
	return out, nil
}

// OffsetTarget is where a reset moves one partition's stored offset.
type OffsetTarget struct {
	Topic     string
	Partition int32
	Offset    int64
}

// PartitionReset is what a reset did, or would do, to one partition.
type PartitionReset struct {
	Topic     string
	Partition int32
	// From is the stored next_offset before the reset; HadRow is false
	// when the partition had none.
	From   int64
	HadRow bool
	To     int64
	// Events and DeadLetters are the rows removed: those of the messages
	// at or after To.
	Events, DeadLetters int64
}

// ResetOptions say what ResetOffsets moves.
type ResetOptions struct {
	Group   string
	Targets []OffsetTarget
	// DryRun computes the result in a read-only snapshot and changes
	// nothing.
	DryRun bool
	// Samples caps RunChanges.Samples.
	Samples int
}

// ResetResult is what ResetOffsets did, or would do.
type ResetResult struct {
	Partitions []PartitionReset
	// Runs are the runs the removed events touched, recomputed from the
	// events that remain.
	Runs RunChanges
}

// ResetOffsets moves the group's stored offsets of the target partitions,
// in one transaction that also removes the effects of every message at or
// after each new offset (its event or its dead letter) and recomputes the
// runs those events touched from the events that remain, so that consuming
// again applies each of them exactly once more. Each moved row's lease
// epoch is bumped: a worker holding the partition fails its fence and
// re-positions from the new offset. A partition with no stored row gets
// one.
//
// With DryRun, it computes the same result in a read-only snapshot and
// changes nothing.
func (s *Store) ResetOffsets(ctx context.Context, opts ResetOptions) (ResetResult, error) {
	group, dryRun := opts.Group, opts.DryRun
	targets := slices.Clone(opts.Targets)
	slices.SortFunc(targets, func(a, b OffsetTarget) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	pos := positionsOf(targets)
	var res ResetResult
	err := s.reprocessTx(ctx, dryRun, func(tx pgx.Tx) error {
		res = ResetResult{}
		stored, err := s.q.OffsetsOfGroup(ctx, tx, group)
		if err != nil {
			return fmt.Errorf("read offsets: %w", err)
		}
		type tp struct {
			topic     string
			partition int32
		}
		idx := make(map[tp]int, len(targets))
		for i, t := range targets {
			idx[tp{t.Topic, t.Partition}] = i
			res.Partitions = append(res.Partitions, PartitionReset{Topic: t.Topic, Partition: t.Partition, To: t.Offset})
		}
		for _, r := range stored {
			if i, ok := idx[tp{r.Topic, r.Partition}]; ok {
				res.Partitions[i].From, res.Partitions[i].HadRow = r.NextOffset, true
			}
		}
		events, err := s.q.CountEventsFrom(ctx, tx, dbsqlc.CountEventsFromParams(pos))
		if err != nil {
			return fmt.Errorf("count events to remove: %w", err)
		}
		for _, r := range events {
			res.Partitions[idx[tp{r.Topic, r.Partition}]].Events = r.Events
		}
		dead, err := s.q.CountDeadLettersFrom(ctx, tx, dbsqlc.CountDeadLettersFromParams(pos))
		if err != nil {
			return fmt.Errorf("count dead letters to remove: %w", err)
		}
		for _, r := range dead {
			res.Partitions[idx[tp{r.Topic, r.Partition}]].DeadLetters = r.DeadLetters
		}
		runIDs, err := s.q.RunsOfEventsFrom(ctx, tx, dbsqlc.RunsOfEventsFromParams(pos))
		if err != nil {
			return fmt.Errorf("list runs to recompute: %w", err)
		}
		// A run whose events before the retention horizon were pruned
		// cannot be recomputed from what is stored.
		if err := s.checkPrunedRuns(ctx, tx, runIDs); err != nil {
			return err
		}
		// The other projections forget the runs while their events are
		// all still stored, and get the remaining ones again below. A dry
		// run, read only, leaves them be: it reports workflow_runs.
		others := s.others("")
		if !dryRun {
			if err := forgetRuns(ctx, tx, others, runIDs); err != nil {
				return err
			}
			if _, err := s.q.DeleteEventsFrom(ctx, tx, dbsqlc.DeleteEventsFromParams(pos)); err != nil {
				return fmt.Errorf("remove events: %w", err)
			}
			if _, err := s.q.DeleteDeadLettersFrom(ctx, tx, dbsqlc.DeleteDeadLettersFromParams(pos)); err != nil {
				return fmt.Errorf("remove dead letters: %w", err)
			}
		}
		sy := &runSync{s: s, tx: tx, apply: !dryRun, samples: opts.Samples, res: &res.Runs}
		var reapplied int64
		for chunk := range slices.Chunk(runIDs, runChunk) {
			// The events at the removed positions are gone already, unless
			// this is a dry run: leave them out either way.
			events, err := s.loadEvents(ctx, tx, dbsqlc.EventsOfRunsParams{
				RunIds: chunk, ExceptTopics: pos.Topics, ExceptPartitions: pos.Partitions, ExceptFromOffsets: pos.FromOffsets,
			})
			if err != nil {
				return err
			}
			rows, err := s.q.RunsByID(ctx, tx, chunk)
			if err != nil {
				return fmt.Errorf("read runs: %w", err)
			}
			if err := sy.sync(ctx, rows, projectRuns(events)); err != nil {
				return err
			}
			if !dryRun {
				if err := apply(ctx, tx, others, events); err != nil {
					return err
				}
				reapplied += int64(len(events))
			}
		}
		if dryRun {
			return nil
		}
		err = s.q.ResetOffsets(ctx, tx, dbsqlc.ResetOffsetsParams{
			GroupID: group, Topics: pos.Topics, Partitions: pos.Partitions, Offsets: pos.FromOffsets,
		})
		if err != nil {
			return fmt.Errorf("move offsets: %w", err)
		}
		if err := s.q.AddOtherEvents(ctx, tx, dbsqlc.AddOtherEventsParams{Events: reapplied, Names: s.names()}); err != nil {
			return fmt.Errorf("count re-applied events: %w", err)
		}
		return nil
	})
	if err != nil {
		return ResetResult{}, fmt.Errorf("reset offsets of group %s: %w", group, err)
	}
	return res, nil
}

// positions is the (topic, partition, from_offset) arrays that the reset
// queries take, zipped row by row.
type positions struct {
	Topics      []string
	Partitions  []int32
	FromOffsets []int64
}

func positionsOf(targets []OffsetTarget) positions {
	var p positions
	for _, t := range targets {
		p.Topics = append(p.Topics, t.Topic)
		p.Partitions = append(p.Partitions, t.Partition)
		p.FromOffsets = append(p.FromOffsets, t.Offset)
	}
	return p
}

// RebuildOptions configure Rebuild.
type RebuildOptions struct {
	// Projection, when set, is the one projection to rebuild; every one
	// when empty.
	Projection string
	// DryRun computes the differences of workflow_runs in a read-only
	// snapshot and writes nothing. Other projections cannot say what
	// would change: a dry run of one of them only counts the events.
	DryRun bool
	// Samples caps the differences reported in RunChanges.Samples.
	Samples int
	// Progress, when set, is called after each chunk with the number of
	// events read so far and the total.
	Progress func(done, total int64)
	// ChunkRuns is how many runs are read, compared and written at once.
	// Default 1000.
	ChunkRuns int
	// KeepPrunedRuns rebuilds every run but those whose history was
	// pruned in part (their events before the retention horizon), whose
	// rows, in every projection, stay as they are. Without it, a rebuild
	// of a database that has such runs fails with ErrPrunedHistory.
	KeepPrunedRuns bool
}

// RebuildResult is what Rebuild found and, unless it was a dry run, wrote.
type RebuildResult struct {
	// Events is the number of stored events read.
	Events int64
	// Projections are the names of the projections rebuilt.
	Projections []string
	// RunChanges are those of workflow_runs, when it was rebuilt.
	RunChanges
}

// ErrUnknownProjection means a projection named by a command is not one of
// the store's.
var ErrUnknownProjection = errors.New("no such projection")

// Rebuild recomputes the projections (every one, or opts.Projection) from
// workflow_events alone, decoded again from their stored payloads by
// today's rules, in one transaction that holds the offsets lock
// throughout, so that batches wait and readers see either the old tables
// or the new ones. workflow_runs is compared run by run with
// model.Project of the run's events: the rows that differ are
// written, and rows of runs without events deleted. Every other
// projection forgets everything (Forget with nil) and is given every
// stored event again (Apply), a chunk of runs at a time. The tables
// themselves are never replaced (views and grants on them stay valid):
// the transaction is the shadow.
func (s *Store) Rebuild(ctx context.Context, opts RebuildOptions) (RebuildResult, error) {
	runs := opts.Projection == "" || opts.Projection == (runsProjection{}).Name()
	others := s.others(opts.Projection)
	if opts.Projection != "" && !runs && len(others) == 0 {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w (loaded: %s)", opts.Projection, ErrUnknownProjection, strings.Join(s.names(), ", "))
	}
	if opts.Projection == (runsProjection{}).Name() {
		others = nil
	}
	var names []string
	if runs {
		names = append(names, (runsProjection{}).Name())
	}
	for _, p := range others {
		names = append(names, p.Name())
	}
	var res RebuildResult
	err := s.reprocessTx(ctx, opts.DryRun, func(tx pgx.Tx) error {
		res = RebuildResult{Projections: names}
		total, err := s.q.CountEvents(ctx, tx)
		if err != nil {
			return fmt.Errorf("count events: %w", err)
		}
		// Runs whose history was pruned in part cannot be rebuilt from
		// what is stored: refused, or kept as they are.
		var pruned prunedFilter
		if opts.KeepPrunedRuns {
			if pruned, err = s.prunedFilter(ctx, tx); err != nil {
				return err
			}
		} else if err := s.checkPrunedRuns(ctx, tx, nil); err != nil {
			return err
		}
		if !opts.DryRun && !pruned.active() {
			if err := forgetAll(ctx, tx, others); err != nil {
				return err
			}
		}
		sy := &runSync{s: s, tx: tx, apply: !opts.DryRun, samples: opts.Samples, res: &res.RunChanges}
		chunk := int32(runChunk)
		if opts.ChunkRuns > 0 {
			chunk = int32(min(opts.ChunkRuns, 1<<20))
		}
		if runs {
			// A row keyed '' (no event has an empty workflow_run_id)
			// sorts before every range below.
			empty, err := s.q.RunsByID(ctx, tx, []string{""})
			if err != nil {
				return fmt.Errorf("read runs: %w", err)
			}
			if err := sy.sync(ctx, empty, nil); err != nil {
				return err
			}
		}
		after := ""
		for {
			ids, err := s.q.RunIDsWithEventsAfter(ctx, tx, dbsqlc.RunIDsWithEventsAfterParams{After: after, MaxRuns: chunk})
			if err != nil {
				return fmt.Errorf("list runs: %w", err)
			}
			if len(ids) == 0 {
				break
			}
			last := ids[len(ids)-1]
			if ids, err = s.notPrunedIDs(ctx, tx, pruned, ids); err != nil {
				return err
			}
			events, err := s.loadEvents(ctx, tx, dbsqlc.EventsOfRunsParams{RunIds: ids})
			if err != nil {
				return err
			}
			if runs {
				rows, err := s.q.RunsInRange(ctx, tx, dbsqlc.RunsInRangeParams{After: after, Through: last})
				if err != nil {
					return fmt.Errorf("read runs: %w", err)
				}
				rows = pruned.rows(rows)
				if err := sy.sync(ctx, rows, projectRuns(events)); err != nil {
					return err
				}
			}
			if !opts.DryRun {
				if pruned.active() {
					if err := forgetRuns(ctx, tx, others, ids); err != nil {
						return err
					}
				}
				if err := apply(ctx, tx, others, events); err != nil {
					return err
				}
			}
			res.Events += int64(len(events))
			after = last
			if opts.Progress != nil {
				opts.Progress(res.Events, total)
			}
		}
		if !opts.DryRun {
			if err := s.finishBuilds(ctx, tx, res.Projections, res.Events); err != nil {
				return err
			}
		}
		if !runs {
			return nil
		}
		// Rows after the last run with events have none.
		for {
			rows, err := s.q.RunsAfter(ctx, tx, dbsqlc.RunsAfterParams{After: after, MaxRuns: chunk})
			if err != nil {
				return fmt.Errorf("read runs: %w", err)
			}
			if len(rows) == 0 {
				break
			}
			after = rows[len(rows)-1].WorkflowRunID
			if err := sy.sync(ctx, pruned.rows(rows), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", strings.Join(names, ", "), err)
	}
	return res, nil
}

// finishBuilds records in the projections table that names were built
// from all n stored events, now, in tx (which holds the offsets lock).
func (s *Store) finishBuilds(ctx context.Context, tx pgx.Tx, names []string, n int64) error {
	batchEvents, err := s.q.BatchEvents(ctx, tx)
	if err != nil {
		return fmt.Errorf("count applied events: %w", err)
	}
	for _, name := range names {
		p := s.projections[slices.IndexFunc(s.projections, func(p Projection) bool { return p.Name() == name })]
		if err := s.q.StartBuild(ctx, tx, dbsqlc.StartBuildParams{Name: name, Kind: KindOf(p), BatchEvents: batchEvents}); err != nil {
			return fmt.Errorf("register projection %s: %w", name, err)
		}
		if err := s.q.FinishBuild(ctx, tx, dbsqlc.FinishBuildParams{Name: name, Events: n, BatchEvents: batchEvents}); err != nil {
			return fmt.Errorf("register projection %s: %w", name, err)
		}
	}
	return nil
}

// names are the names of the store's projections, in order.
func (s *Store) names() []string { return s.loaded }

// reprocessTx runs fn in the transaction of a reset or a rebuild. For
// real, it first takes the offsets lock (see LockOffsetsTable); a dry run
// reads one consistent snapshot instead, takes no lock and writes nothing.
func (s *Store) reprocessTx(ctx context.Context, dryRun bool, fn func(tx pgx.Tx) error) error {
	if dryRun {
		tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		return fn(tx)
	}
	return s.lockedTx(ctx, func(tx pgx.Tx) error {
		building, err := s.q.BuildingProjections(ctx, tx)
		if err != nil {
			return fmt.Errorf("list projections: %w", err)
		}
		if len(building) > 0 {
			return fmt.Errorf("%s: %w", strings.Join(building, ", "), ErrBuilding)
		}
		if err := s.checkProjections(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

// loadEvents reads the stored events that p selects, each partition's in
// offset order, decoding every stored payload again with today's rules
// (model.Decode), so that a rebuild follows the decoder as well as the
// projections.
func (s *Store) loadEvents(ctx context.Context, tx pgx.Tx, p dbsqlc.EventsOfRunsParams) ([]model.Event, error) {
	rows, err := s.q.EventsOfRuns(ctx, tx, p)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	events := make([]model.Event, len(rows))
	for i, r := range rows {
		ev, err := model.Decode(r.Payload)
		if err != nil {
			return nil, fmt.Errorf("stored event %s no longer decodes: %w", r.EventID, err)
		}
		if ev.EventID != r.EventID || ev.WorkflowRunID != r.WorkflowRunID {
			return nil, fmt.Errorf("stored event %s of run %s decodes as event %s of run %s",
				r.EventID, r.WorkflowRunID, ev.EventID, ev.WorkflowRunID)
		}
		ev.Topic, ev.Partition, ev.Offset = r.Topic, r.Partition, r.Offset
		events[i] = ev
	}
	return events, nil
}

// projectRuns projects each run of events from scratch (model.Project)
// and returns the runs in workflow_run_id order.
func projectRuns(events []model.Event) []model.Run {
	byRun := make(map[string][]model.Event)
	for _, ev := range events {
		byRun[ev.WorkflowRunID] = append(byRun[ev.WorkflowRunID], ev)
	}
	runs := make([]model.Run, 0, len(byRun))
	for _, events := range byRun {
		runs = append(runs, model.Project(events))
	}
	slices.SortFunc(runs, func(a, b model.Run) int { return strings.Compare(a.WorkflowRunID, b.WorkflowRunID) })
	return runs
}

// others are the projections that reprocessing forgets and applies again:
// every one but workflow_runs, whose rows it compares and rewrites
// (runSync), so that it can say what changed. With only set, just that
// one.
func (s *Store) others(only string) []Projection {
	var out []Projection
	for _, p := range s.projections {
		if _, ok := p.(runsProjection); ok || (only != "" && p.Name() != only) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// runSync compares stored runs with their projections and, when apply is
// set, writes the difference.
type runSync struct {
	s       *Store
	tx      pgx.Tx
	apply   bool
	samples int
	res     *RunChanges
}

// sync compares the stored rows of a set of runs with the runs computed
// for the same set, both in workflow_run_id order: a stored row with no
// computed run is deleted, a computed run with no row inserted, a row
// that differs replaced.
func (sy *runSync) sync(ctx context.Context, stored []dbsqlc.WorkflowRun, computed []model.Run) error {
	var remove []string
	var write []model.Run
	i, j := 0, 0
	for i < len(stored) || j < len(computed) {
		var c int
		switch {
		case i == len(stored):
			c = 1
		case j == len(computed):
			c = -1
		default:
			c = strings.Compare(stored[i].WorkflowRunID, computed[j].WorkflowRunID)
		}
		switch {
		case c < 0: // a row without events
			id := stored[i].WorkflowRunID
			sy.res.Deleted++
			sy.sample(RunDiff{WorkflowRunID: id, Change: "delete"})
			remove = append(remove, id)
			i++
		case c > 0: // a run without a row
			r := computed[j]
			sy.res.Recomputed++
			sy.res.Inserted++
			sy.sample(RunDiff{WorkflowRunID: r.WorkflowRunID, Change: "insert"})
			write = append(write, r)
			j++
		default:
			old, r := runRow(stored[i]).Run, computed[j]
			sy.res.Recomputed++
			if old.Equal(r) {
				sy.res.Unchanged++
			} else {
				sy.res.Updated++
				sy.sample(RunDiff{WorkflowRunID: r.WorkflowRunID, Change: "update", Fields: diffFields(old, r)})
				remove = append(remove, r.WorkflowRunID)
				write = append(write, r)
			}
			i++
			j++
		}
	}
	if !sy.apply {
		return nil
	}
	// A changed row is deleted and inserted again: merging a run's whole
	// projection into no row stores exactly that projection.
	if len(remove) > 0 {
		if _, err := sy.s.q.DeleteRuns(ctx, sy.tx, remove); err != nil {
			return fmt.Errorf("delete %d runs: %w", len(remove), err)
		}
	}
	return mergeRuns(ctx, sy.tx, write)
}

func (sy *runSync) sample(d RunDiff) {
	if len(sy.res.Samples) < sy.samples {
		sy.res.Samples = append(sy.res.Samples, d)
	}
}

// diffFields lists the columns in which two projections of a run differ.
func diffFields(old, cur model.Run) []string {
	var out []string
	add := func(name string, a, b any) {
		if !sameValue(a, b) {
			out = append(out, fmt.Sprintf("%s: %s -> %s", name, showValue(a), showValue(b)))
		}
	}
	add("workflow_id", old.WorkflowID, cur.WorkflowID)
	add("source", old.Source, cur.Source)
	add("attempt", old.Attempt, cur.Attempt)
	add("status", old.Status, cur.Status)
	add("queued_at", old.QueuedAt, cur.QueuedAt)
	add("started_at", old.StartedAt, cur.StartedAt)
	add("finished_at", old.FinishedAt, cur.FinishedAt)
	add("error", old.Error, cur.Error)
	add("steps_succeeded", old.StepsSucceeded, cur.StepsSucceeded)
	add("steps_failed", old.StepsFailed, cur.StepsFailed)
	add("steps_skipped", old.StepsSkipped, cur.StepsSkipped)
	add("event_count", old.EventCount, cur.EventCount)
	add("first_event_at", old.FirstEventAt, cur.FirstEventAt)
	add("last_event_at", old.LastEventAt, cur.LastEventAt)
	add("latest_event_id", old.LatestEventID, cur.LatestEventID)
	add("deciding_event_id", old.TerminalEventID, cur.TerminalEventID)
	return out
}

// sameValue compares two values of a column, times as instants.
func sameValue(a, b any) bool {
	switch a := a.(type) {
	case time.Time:
		return a.Equal(b.(time.Time))
	case sql.NullTime:
		b := b.(sql.NullTime)
		return a.Valid == b.Valid && (!a.Valid || a.Time.Equal(b.Time))
	}
	return a == b
}

func showValue(v any) string {
	switch v := v.(type) {
	case sql.NullTime:
		if !v.Valid {
			return "null"
		}
		return v.Time.Format(time.RFC3339Nano)
	case sql.NullString:
		if !v.Valid {
			return "null"
		}
		return strconv.Quote(v.String)
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(v)
}
