//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/projector-run/projector/store/storetest"
	"github.com/stretchr/testify/require"
)

// pgServer is a PostgreSQL server of the test's own, in a temporary
// directory on a free port, so that a scenario can restart and crash it
// without disturbing any other test on the shared server. It needs the
// server binaries (initdb, pg_ctl) on this machine; as root it runs them
// as the postgres user.
type pgServer struct {
	t        testing.TB
	dir      string
	port     int
	runAs    string // "" or the user to run the server as
	initdb   string
	pgCtl    string
	settings []string
}

// startPostgres initializes and starts a private server; the extra
// settings are name=value server settings.
func startPostgres(t testing.TB, settings ...string) *pgServer {
	t.Helper()
	s := &pgServer{t: t, initdb: storetest.PGBinary(t, "initdb"), pgCtl: storetest.PGBinary(t, "pg_ctl"), settings: settings}
	dir, err := os.MkdirTemp("", "projector-faults-pg-")
	require.NoError(t, err)
	s.dir = dir
	t.Cleanup(func() {
		_ = s.command(s.pgCtl, "-D", s.data(), "-m", "immediate", "-w", "stop").Run()
		_ = os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 { // initdb refuses to run as root
		u, err := user.Lookup("postgres")
		require.NoError(t, err, "running as root: the private server runs as the postgres user, which must exist")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		require.NoError(t, os.Chown(dir, uid, gid))
		s.runAs = "postgres"
	}
	out, err := s.command(s.initdb, "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput()
	require.NoError(t, err, "initdb: %s", out)
	s.port = storetest.FreePort(t)
	s.start()
	return s
}

func (s *pgServer) data() string { return filepath.Join(s.dir, "data") }

func (s *pgServer) command(name string, args ...string) *exec.Cmd {
	if s.runAs != "" {
		return exec.Command("runuser", append([]string{"-u", s.runAs, "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

// start starts the server and waits until it accepts connections (after
// crash recovery, when it was crashed).
func (s *pgServer) start() {
	s.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60", s.port, s.dir)
	for _, kv := range s.settings {
		opts += " -c " + kv
	}
	out, err := s.command(s.pgCtl, "-D", s.data(), "-l", filepath.Join(s.dir, "server.log"), "-o", opts, "-w", "-t", "120", "start").CombinedOutput()
	require.NoError(s.t, err, "start the private PostgreSQL server: %s", out)
}

// stop stops the server: "fast" ends every session and checkpoints,
// "immediate" is a crash (no checkpoint, recovery on the next start).
func (s *pgServer) stop(mode string) {
	s.t.Helper()
	out, err := s.command(s.pgCtl, "-D", s.data(), "-m", mode, "-w", "-t", "120", "stop").CombinedOutput()
	require.NoError(s.t, err, "stop the private PostgreSQL server (%s): %s", mode, out)
}

func (s *pgServer) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// createDatabase creates a database and migrates it with the binary under
// test, and returns its URL.
func (s *pgServer) createDatabase(name string) string {
	s.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.url("postgres"))
	require.NoError(s.t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(s.t, err)
	url := s.url(name)
	out, err := exec.Command(projectorBin, "--database-url", url, "migrate", "up").CombinedOutput()
	require.NoError(s.t, err, "projector migrate up: %s", out)
	return url
}
