package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector-run/projector/projector/model"
)

// Projections in SQL (contract 7.2): a file NAME.sql is a Projection like
// any other, whose Setup, Apply and Forget are the file's sections, run in
// the transaction the store gives every projection.
//
// Apply reads the events from new_events and Forget the runs from
// forgotten_runs: two temporary tables that every connection of a store
// with SQL projections creates once, when it connects (sqlRelationsDDL),
// ON COMMIT DELETE ROWS, so that no transaction creates or drops a table
// (a commit empties them in place: no catalog rows change). The store
// fills them once per Apply or Forget of its projections, however many
// SQL projections there are (fillNewEvents, fillForgottenRuns), before it
// calls them: new_events with the events' rows from workflow_events (the
// transaction stored them already), forgotten_runs with the runs.

// sqlRelationsDDL creates new_events and forgotten_runs on a connection:
// new_events has the columns of workflow_events (a test compares them),
// both are indexed on workflow_run_id, with the collation of
// workflow_events so that they join it on its index.
const sqlRelationsDDL = `
CREATE TEMP TABLE IF NOT EXISTS new_events (
    event_id        text COLLATE "C" NOT NULL,
    workflow_run_id text COLLATE "C" NOT NULL,
    workflow_id     text NOT NULL,
    event_type      text NOT NULL,
    source          text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    attempt         integer NOT NULL,
    step_id         text,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    "offset"        bigint NOT NULL,
    payload         jsonb NOT NULL,
    received_at     timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
CREATE INDEX IF NOT EXISTS new_events_run_idx ON pg_temp.new_events (workflow_run_id);
CREATE TEMP TABLE IF NOT EXISTS forgotten_runs (
    workflow_run_id text COLLATE "C" PRIMARY KEY
) ON COMMIT DELETE ROWS;`

// fillNewEventsSQL copies the events stored by the transaction into
// new_events.
const fillNewEventsSQL = `
INSERT INTO pg_temp.new_events (event_id, workflow_run_id, workflow_id, event_type, source, occurred_at, attempt,
    step_id, topic, partition, "offset", payload, received_at)
SELECT event_id, workflow_run_id, workflow_id, event_type, source, occurred_at, attempt,
    step_id, topic, partition, "offset", payload, received_at
FROM workflow_events WHERE event_id = ANY($1::text[])`

// sqlProjection is a projection file.
type sqlProjection struct {
	name, file string
	sections   map[string]sqlSection
}

func (p *sqlProjection) Name() string { return p.name }

// Kind is "sql" (KindOf).
func (p *sqlProjection) Kind() string { return "sql" }

// File is the file the projection was loaded from.
func (p *sqlProjection) File() string { return p.file }

func (p *sqlProjection) Setup(ctx context.Context, db DB) error { return p.run(ctx, db, "Setup") }

// Apply runs the Apply section: new_events holds events (fillNewEvents).
func (p *sqlProjection) Apply(ctx context.Context, db DB, _ []model.Event) error {
	return p.run(ctx, db, "Apply")
}

// Forget runs the Forget section: forgotten_runs holds the runs
// (fillForgottenRuns).
func (p *sqlProjection) Forget(ctx context.Context, db DB, _ []string) error {
	return p.run(ctx, db, "Forget")
}

// run sends a section's statements in one round trip (pgx sends a query
// without arguments with the simple protocol, which takes several
// statements). PostgreSQL's error keeps its place in the chain, with the
// file, the section and the file's line added.
func (p *sqlProjection) run(ctx context.Context, db DB, section string) error {
	s := p.sections[section]
	if _, err := db.Exec(ctx, s.text); err != nil {
		return p.fileError(s, err)
	}
	return nil
}

func (p *sqlProjection) fileError(s sqlSection, err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return fmt.Errorf("%s: section %s: %w", p.file, s.name, err)
	}
	// Without a position, the whole section sent at once says no more
	// than its lines.
	return &SQLFileError{File: p.file, Section: s.name, Line: lineOf(s.text, pe.Position, s.line),
		FirstLine: s.line + leadingLines(s.text), LastLine: s.last, Err: err}
}

// check runs a section one statement at a time, so that an error names
// the statement's line even when PostgreSQL gives no position.
func (p *sqlProjection) check(ctx context.Context, db DB, section string) error {
	s := p.sections[section]
	for _, st := range s.statements {
		if _, err := db.Exec(ctx, st.text); err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				return fmt.Errorf("%s: section %s: %w", p.file, s.name, err)
			}
			line := lineOf(st.text, pe.Position, s.line+st.first)
			if line == 0 {
				line = s.line + st.line
			}
			return &SQLFileError{File: p.file, Section: s.name, Line: line, Err: err}
		}
	}
	return nil
}

// isSQL reports whether p is a projection in SQL.
func isSQL(p Projection) bool { _, ok := p.(*sqlProjection); return ok }

// firstSQL returns the first projection in SQL of ps, nil if none.
func firstSQL(ps []Projection) Projection {
	for _, p := range ps {
		if isSQL(p) {
			return p
		}
	}
	return nil
}

// fillNewEvents puts events, stored by db's transaction, into new_events
// for the SQL projections of ps, once for them all. An error is the first
// one's: never the data's fault.
func fillNewEvents(ctx context.Context, db DB, ps []Projection, events []model.Event) error {
	p := firstSQL(ps)
	if p == nil {
		return nil
	}
	ids := make([]string, len(events))
	for i := range events {
		ids[i] = events[i].EventID
	}
	b := &pgx.Batch{}
	// Emptied first: a transaction may apply several sets of events
	// (a rebuild, a reset). Every event is stored when it is applied,
	// except in a build, whose snapshot may hold events that a prune
	// running meanwhile deletes: left out, as if pruned before the build
	// began (failing would retry the chunk for ever).
	b.Queue("DELETE FROM pg_temp.new_events")
	b.Queue(fillNewEventsSQL, ids)
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		return &model.ProjectionError{Projection: p.Name(), Op: "apply", Err: fmt.Errorf("fill new_events: %w", err)}
	}
	return nil
}

// fillForgottenRuns puts runIDs into forgotten_runs for the SQL
// projections of ps, once for them all; nil means every run with stored
// events.
func fillForgottenRuns(ctx context.Context, db DB, ps []Projection, runIDs []string) error {
	p := firstSQL(ps)
	if p == nil {
		return nil
	}
	b := &pgx.Batch{}
	b.Queue("DELETE FROM pg_temp.forgotten_runs")
	if runIDs == nil {
		b.Queue("INSERT INTO pg_temp.forgotten_runs SELECT DISTINCT workflow_run_id FROM workflow_events")
	} else {
		b.Queue("INSERT INTO pg_temp.forgotten_runs SELECT DISTINCT unnest($1::text[])", runIDs)
	}
	if err := db.SendBatch(ctx, b).Close(); err != nil {
		return &model.ProjectionError{Projection: p.Name(), Op: "forget", Err: fmt.Errorf("fill forgotten_runs: %w", err)}
	}
	return nil
}

// LoadSQLProjections loads every NAME.sql of dir as the projection NAME
// (other files are ignored). A directory that cannot be read, a file name
// that is not a projection's name, or a file that does not parse is an
// error; a *SQLFileError names the file.
func LoadSQLProjections(dir string) ([]Projection, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("read projections directory: %w", err)
	}
	return loadSQL(os.DirFS(dir), ".", func(name string) string { return filepath.Join(dir, name) })
}

// LoadSQLProjectionsFS is LoadSQLProjections from the directory dir of
// fsys (embedded files, for instance).
func LoadSQLProjectionsFS(fsys fs.FS, dir string) ([]Projection, error) {
	return loadSQL(fsys, dir, func(name string) string { return path.Join(dir, name) })
}

func loadSQL(fsys fs.FS, dir string, label func(name string) string) ([]Projection, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read projections directory %s: %w", label(""), unwrapPath(err))
	}
	var out []Projection
	for _, e := range entries { // sorted by name: the order they apply
		stem, ok := strings.CutSuffix(e.Name(), ".sql")
		if !ok || e.IsDir() {
			continue
		}
		file := label(e.Name())
		if !validName.MatchString(stem) {
			return nil, &SQLFileError{File: file, Err: errors.New("not a projection's file name: NAME.sql, NAME [a-z][a-z0-9_]*, at most 63 bytes")}
		}
		src, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, &SQLFileError{File: file, Err: unwrapPath(err)}
		}
		sections, err := parseSQLFile(file, string(src))
		if err != nil {
			return nil, err
		}
		out = append(out, &sqlProjection{name: stem, file: file, sections: sections})
	}
	return out, nil
}

// unwrapPath drops the path an fs error repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// CheckSQLProjections checks every projection in SQL against the
// database, changing nothing: in a transaction that is rolled back, each
// runs its Setup, then its Apply with new_events empty and its Forget
// with forgotten_runs empty, so that PostgreSQL checks every statement,
// relation and column they name, one statement at a time. The files PostgreSQL refuses are
// *SQLFileErrors, joined.
func (s *Store) CheckSQLProjections(ctx context.Context) error {
	var ps []*sqlProjection
	for _, p := range s.projections {
		if sp, ok := p.(*sqlProjection); ok {
			ps = append(ps, sp)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("check projections in SQL: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// As SetupProjections: one setup at a time.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('projector setup'))"); err != nil {
		return fmt.Errorf("check projections in SQL: wait for other setups: %w", err)
	}
	var errs []error
	for _, p := range ps {
		if _, err := tx.Exec(ctx, "SAVEPOINT projector_check"); err != nil {
			return fmt.Errorf("check projections in SQL: %w", err)
		}
		for _, name := range sqlSections {
			err := p.check(ctx, tx, name)
			var fe *SQLFileError
			if errors.As(err, &fe) {
				errs = append(errs, fe)
				if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT projector_check"); err != nil {
					return fmt.Errorf("check projections in SQL: %w", err)
				}
				break
			}
			if err != nil {
				return fmt.Errorf("check projections in SQL: %w", err)
			}
		}
	}
	return errors.Join(errs...)
}

// hasSQL reports whether ps has a projection in SQL.
func hasSQL(ps []Projection) bool { return firstSQL(ps) != nil }

// ErrSQLRelations means PostgreSQL refuses to create new_events and
// forgotten_runs on a connection (the role lacks the TEMPORARY privilege
// on the database, say): projections in SQL cannot run, and retrying does
// not help.
var ErrSQLRelations = errors.New("PostgreSQL refuses the temporary tables new_events and forgotten_runs " +
	"that projections in SQL need (GRANT TEMPORARY ON DATABASE to the worker's role)")

// createSQLRelations creates new_events and forgotten_runs on a new
// connection.
func createSQLRelations(ctx context.Context, c *pgx.Conn) error {
	_, err := c.Exec(ctx, sqlRelationsDDL)
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && strings.HasPrefix(pe.Code, "42") {
		return fmt.Errorf("%w: %w", ErrSQLRelations, err)
	}
	if err != nil {
		return fmt.Errorf("create new_events and forgotten_runs: %w", err)
	}
	return nil
}
