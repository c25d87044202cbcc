// Package storetest gives each test a fresh, migrated PostgreSQL database
// cloned from a template (pgtestdb), on the real server named by
// TEST_DATABASE_URL (default store.DefaultURL, the local server).
// There is no fallback: without PostgreSQL the tests fail.
package storetest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"io/fs"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver pgtestdb uses
	"github.com/peterldowns/pgtestdb"
	"github.com/pressly/goose/v3"

	"github.com/projector-run/projector/migrations"
	"github.com/projector-run/projector/store"
)

// defaultURL is the server tests use when TEST_DATABASE_URL is unset.
const defaultURL = store.DefaultURL

// ServerURL returns the URL of the test server itself, as TEST_DATABASE_URL
// names it (default store.DefaultURL, the local server), for what
// a test does to the server rather than in its own database: ending
// other sessions, ALTER DATABASE. Every test takes its server from here.
func ServerURL(t testing.TB) string {
	t.Helper()
	raw := os.Getenv("TEST_DATABASE_URL")
	if raw == "" {
		raw = defaultURL
	}
	if _, err := pgx.ParseConfig(raw); err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	return raw
}

// serverConfig is the pgtestdb config of the test server.
func serverConfig(t testing.TB) pgtestdb.Config {
	t.Helper()
	pc, err := pgx.ParseConfig(ServerURL(t))
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	return pgtestdb.Config{
		DriverName: "pgx",
		Host:       pc.Host,
		Port:       strconv.Itoa(int(pc.Port)),
		User:       pc.User,
		Password:   pc.Password,
		Database:   pc.Database,
		Options:    "sslmode=disable",
		// Tests kill workers mid-transaction; their connections may
		// outlive the test by a moment.
		ForceTerminateConnections: true,
	}
}

// URL creates a fresh migrated database for the test, dropped when the
// test passes, and returns its connection URL.
func URL(t testing.TB) string {
	t.Helper()
	return pgtestdb.Custom(t, serverConfig(t), migrator{}).URL()
}

// EmptyURL creates a fresh database with no migrations applied.
func EmptyURL(t testing.TB) string {
	t.Helper()
	return pgtestdb.Custom(t, serverConfig(t), pgtestdb.NoopMigrator{}).URL()
}

// New opens a store on a fresh migrated database, closed with the test.
func New(t testing.TB) *store.Store {
	t.Helper()
	return Open(t, URL(t))
}

// Open opens a store on url, closed with the test.
func Open(t testing.TB, url string) *store.Store {
	t.Helper()
	return OpenWith(t, url)
}

// OpenWith opens a store on url with the user's projections, set up, and
// closes it with the test.
func OpenWith(t testing.TB, url string, projections ...store.Projection) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{URL: url, MaxConns: 20, Projections: projections})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	if err := st.SetupProjections(context.Background()); err != nil {
		t.Fatalf("set up projections: %v", err)
	}
	return st
}

// migrator applies the embedded goose migrations to pgtestdb's template.
type migrator struct{}

func (migrator) Hash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

func (migrator) Migrate(ctx context.Context, db *sql.DB, _ pgtestdb.Config) error {
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}
