// Package sqlprojections holds the worked examples of projections in SQL
// (README, "Projections in SQL"): one file per projection under examples/,
// loaded with --projections-dir. For tests, it also says what their tables
// must hold given the distinct events (Want), computed in Go,
// independently of the SQL, and renders the tables the same way (Tables).
package sqlprojections

import (
	"context"
	"embed"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// Examples holds the example files, under examples/.
//
//go:embed examples/*.sql
var Examples embed.FS

// Load loads the examples as projections.
func Load() ([]store.Projection, error) { return store.LoadSQLProjectionsFS(Examples, "examples") }

// Dir is the examples' directory in the source tree, for
// --projections-dir in tests.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "examples")
}

// Tables renders the examples' tables, a line per row, sorted.
func Tables(ctx context.Context, db store.DB) ([]string, error) {
	var out []string
	add := func(q string, line func(scan func(...any) error) (string, error)) error {
		rows, err := db.Query(ctx, q)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			l, err := line(rows.Scan)
			if err != nil {
				return err
			}
			out = append(out, l)
		}
		return rows.Err()
	}
	err := add(`SELECT source, day, runs FROM runs_per_source_day`, func(scan func(...any) error) (string, error) {
		var source string
		var day time.Time
		var runs int64
		err := scan(&source, &day, &runs)
		return runsLine(source, day, runs), err
	})
	if err == nil {
		err = add(`SELECT workflow_id, workflow_run_id, status, changed_at, event_id FROM latest_run_per_workflow`, func(scan func(...any) error) (string, error) {
			var wf, run, status, id string
			var at time.Time
			err := scan(&wf, &run, &status, &at, &id)
			return latestLine(wf, run, status, at, id), err
		})
	}
	if err == nil {
		err = add(`SELECT event_type, hour, events, runs FROM events_per_type_hour`, func(scan func(...any) error) (string, error) {
			var typ string
			var hour time.Time
			var events, runs int64
			err := scan(&typ, &hour, &events, &runs)
			return hourLine(typ, hour, events, runs), err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("read the examples' tables: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// Want is what Tables must return once the examples have applied events,
// the distinct events stored.
func Want(events []model.Event) []string {
	type sourceDay struct {
		source, day string
	}
	type typeHour struct {
		typ  string
		hour time.Time
	}
	queued := map[sourceDay]int64{}
	latest := map[string]model.Event{}
	perHour := map[typeHour]int64{}
	runsPerHour := map[typeHour]map[string]bool{}
	for _, e := range events {
		ts := e.Timestamp.UTC()
		if e.EventType == "run.queued" {
			queued[sourceDay{e.Source, ts.Format(time.DateOnly)}]++
		}
		switch e.EventType {
		case "run.queued", "run.started", "run.succeeded", "run.failed", "run.cancelled":
			l, ok := latest[e.WorkflowID]
			if !ok || e.Timestamp.After(l.Timestamp) || e.Timestamp.Equal(l.Timestamp) && e.EventID > l.EventID {
				latest[e.WorkflowID] = e
			}
		}
		k := typeHour{e.EventType, ts.Truncate(time.Hour)}
		perHour[k]++
		if runsPerHour[k] == nil {
			runsPerHour[k] = map[string]bool{}
		}
		runsPerHour[k][e.WorkflowRunID] = true
	}
	var out []string
	for k, n := range queued {
		day, _ := time.Parse(time.DateOnly, k.day)
		out = append(out, runsLine(k.source, day, n))
	}
	for wf, e := range latest {
		out = append(out, latestLine(wf, e.WorkflowRunID, e.EventType[len("run."):], e.Timestamp, e.EventID))
	}
	for k, n := range perHour {
		out = append(out, hourLine(k.typ, k.hour, n, int64(len(runsPerHour[k]))))
	}
	slices.Sort(out)
	return out
}

func runsLine(source string, day time.Time, runs int64) string {
	return fmt.Sprintf("runs_per_source_day %q %s %d", source, day.Format(time.DateOnly), runs)
}

func latestLine(wf, run, status string, at time.Time, id string) string {
	return fmt.Sprintf("latest_run_per_workflow %q %q %s %s %q", wf, run, status, at.UTC().Format(time.RFC3339Nano), id)
}

func hourLine(typ string, hour time.Time, events, runs int64) string {
	return fmt.Sprintf("events_per_type_hour %q %s %d %d", typ, hour.UTC().Format(time.RFC3339), events, runs)
}
