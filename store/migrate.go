package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/projector-run/projector/migrations"
)

// Migrator runs the migrations embedded in the binary. A session lock
// keeps two processes from migrating at once.
type Migrator struct {
	p *goose.Provider
}

// NewMigrator prepares the embedded migrations for the store's database.
func (s *Store) NewMigrator() (*Migrator, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("create migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, stdlib.OpenDBFromPool(s.pool), migrations.FS,
		goose.WithSessionLocker(locker))
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return &Migrator{p: p}, nil
}

// Up applies every pending migration.
func (m *Migrator) Up(ctx context.Context) ([]*goose.MigrationResult, error) { return m.p.Up(ctx) }

// Down rolls back the latest migration.
func (m *Migrator) Down(ctx context.Context) (*goose.MigrationResult, error) {
	return m.p.Down(ctx)
}

// Status lists every migration and whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]*goose.MigrationStatus, error) {
	return m.p.Status(ctx)
}

// CheckCurrent fails when the database lacks migrations that this binary
// needs, so a worker never runs against a schema it does not know.
func (m *Migrator) CheckCurrent(ctx context.Context) error {
	current, target, err := m.p.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("read migration version: %w", err)
	}
	if current < target {
		return fmt.Errorf("%w: database is at version %d, this binary needs %d: run `projector migrate up`",
			ErrNotMigrated, current, target)
	}
	return nil
}

// Close releases the migrator's database handle.
func (m *Migrator) Close() error { return m.p.Close() }
