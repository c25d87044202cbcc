package main

import (
	"context"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/projector-run/projector/projector/model"
)

// The floor estimates the least that any sink keeping the contract's
// tables must have the server do for the workload: store every event,
// its run's row and its steps' rows, with their primary keys. The bench
// times it as COPY of those rows, computed in advance, on several
// connections at once, each a share of the runs in one transaction: no
// broker, no decoding, no fence, no merge, no offsets. A worker must
// store at least these rows, so on the same server, measured the same
// way, the floor's ratio to COPY into the bare table approximates the
// best ratio a worker could reach; the projector's ratio to the floor is
// what its own machinery costs.
//
// It is timed twice: with the contract's keys alone (and the schema's
// defaults, generated column and checks), and with every index of the
// schema too (the run index that reset and rebuild need, the BRINs, the
// dashboards' indexes).

// floorTables are the tables a floor fills, made like the schema's.
var floorTables = []struct{ name, like, key string }{
	{"floor_events", "workflow_events", "event_id"},
	{"floor_runs", "workflow_runs", "workflow_run_id"},
	{"floor_steps", "workflow_steps", "workflow_run_id, attempt, step_id"},
}

var (
	floorRunColumns = []string{"workflow_run_id", "workflow_id", "source", "attempt", "status", "queued_at", "started_at", "finished_at",
		"error", "steps_succeeded", "steps_failed", "steps_skipped", "event_count", "first_event_at", "last_event_at", "latest_event_id", "deciding_event_id"}
	floorStepColumns = []string{"workflow_run_id", "attempt", "step_id", "workflow_id", "source", "status", "started_at", "finished_at",
		"error", "event_count", "first_event_at", "last_event_at", "latest_event_id", "deciding_event_id"}
)

// floorShare is one connection's rows: the events of some runs, and
// those runs' and steps' rows.
type floorShare struct {
	events, runs, steps [][]any
}

// floorShares splits msgs' events by run into n shares and folds each
// share's runs and steps, as the projector would fold them from scratch.
func floorShares(msgs []model.Message, n int) ([]floorShare, error) {
	byShare := make([][]model.Event, n)
	shares := make([]floorShare, n)
	for i, m := range msgs {
		e, err := model.Decode(m.Value)
		if err != nil {
			return nil, err
		}
		k := int(crc32.ChecksumIEEE([]byte(e.WorkflowRunID)) % uint32(n))
		byShare[k] = append(byShare[k], e)
		shares[k].events = append(shares[k].events, eventRow(e, int32(k), int64(i)))
	}
	for k, events := range byShare {
		for _, r := range model.FoldEvents(events) {
			shares[k].runs = append(shares[k].runs, []any{r.WorkflowRunID, r.WorkflowID, r.Source, r.Attempt, r.Status,
				r.QueuedAt, r.StartedAt, r.FinishedAt, r.Error, r.StepsSucceeded, r.StepsFailed, r.StepsSkipped,
				r.EventCount, r.FirstEventAt, r.LastEventAt, r.LatestEventID, nullString(r.TerminalEventID)})
		}
		for _, s := range model.FoldStepEvents(events) {
			shares[k].steps = append(shares[k].steps, []any{s.WorkflowRunID, s.Attempt, s.StepID, s.WorkflowID, s.Source, s.Status,
				s.StartedAt, s.FinishedAt, s.Error, s.EventCount, s.FirstEventAt, s.LastEventAt, s.LatestEventID, nullString(s.TerminalEventID)})
		}
	}
	return shares, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// contractFloor times the floor on n connections of dbURL: with the
// contract's primary keys alone, or with every index and constraint of
// the schema when schema is set. It returns events/s and the CPU time
// the rest of the machine (PostgreSQL) spent an event, in µs (0 when
// /proc/stat cannot be read).
func contractFloor(ctx context.Context, dbURL string, shares []floorShare, schema bool) (rate, serverMicros float64, err error) {
	conns := make([]*pgx.Conn, len(shares))
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close(ctx)
			}
		}
	}()
	for i := range conns {
		c, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return 0, 0, err
		}
		conns[i] = c
	}
	ddl := ""
	for _, t := range floorTables {
		like := "LIKE " + t.like + " INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS, PRIMARY KEY (" + t.key + ")"
		if schema {
			like = "LIKE " + t.like + " INCLUDING ALL"
		}
		ddl += fmt.Sprintf("DROP TABLE IF EXISTS %[1]s; CREATE TABLE %[1]s (%[2]s);", t.name, like)
	}
	if _, err := conns[0].Exec(ctx, ddl+"CHECKPOINT"); err != nil {
		return 0, 0, fmt.Errorf("floor tables: %w", err)
	}
	defer func() {
		for _, t := range floorTables {
			_, _ = conns[0].Exec(ctx, "DROP TABLE "+t.name)
		}
	}()

	events := 0
	for _, s := range shares {
		events += len(s.events)
	}
	cpu0 := readCPU()
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range shares {
		conn := conns[i]
		g.Go(func() error {
			return pgx.BeginFunc(gctx, conn, func(tx pgx.Tx) error {
				for _, c := range []struct {
					table string
					cols  []string
					rows  [][]any
				}{
					{"floor_events", eventColumns, s.events},
					{"floor_runs", floorRunColumns, s.runs},
					{"floor_steps", floorStepColumns, s.steps},
				} {
					if _, err := tx.CopyFrom(gctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
						return fmt.Errorf("floor: copy into %s: %w", c.table, err)
					}
				}
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	var serverCPU time.Duration
	if cpu1 := readCPU(); cpu0.ok && cpu1.ok {
		serverCPU = (cpu1.busy - cpu0.busy) - (cpu1.self - cpu0.self)
	}
	return float64(events) / elapsed.Seconds(), serverCPU.Seconds() * 1e6 / float64(events), nil
}
