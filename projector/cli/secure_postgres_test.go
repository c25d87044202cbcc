package cli

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/store/storetest"
)

// Connecting to PostgreSQL securely: TLS (sslmode=require, verify-full
// with a CA the test makes) and the refusals that fail at start. The
// shared server trusts local connections and its settings are not ours
// to change, so these tests run a server of their own (initdb, pg_ctl)
// with TLS on and password authentication. They fail, never skip, when
// the server programs are missing.

// tlsPostgres is a private PostgreSQL server with TLS and scram-sha-256
// password authentication over TCP.
type tlsPostgres struct {
	port     int
	password string
	ca       *testCA
}

func startTLSPostgres(t *testing.T) *tlsPostgres {
	t.Helper()
	initdb, pgCtl := storetest.PGBinary(t, "initdb"), storetest.PGBinary(t, "pg_ctl")
	dir, err := os.MkdirTemp("", "projector-tls-pg-")
	require.NoError(t, err)
	var runAs []string
	chown := func(string) {}
	if os.Geteuid() == 0 { // initdb refuses to run as root
		u, err := user.Lookup("postgres")
		require.NoError(t, err, "running as root: the private server runs as the postgres user, which must exist")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		chown = func(p string) { require.NoError(t, os.Chown(p, uid, gid)) }
		runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	chown(dir)
	command := func(name string, args ...string) *exec.Cmd {
		argv := append(append(append([]string{}, runAs...), name), args...)
		return exec.Command(argv[0], argv[1:]...)
	}
	data := filepath.Join(dir, "data")
	t.Cleanup(func() {
		_ = command(pgCtl, "-D", data, "-m", "immediate", "-w", "stop").Run()
		_ = os.RemoveAll(dir)
	})

	s := &tlsPostgres{password: "pg-Pa55-word-0c1d", ca: newTestCA(t)}
	pwfile := filepath.Join(dir, "pwfile")
	require.NoError(t, os.WriteFile(pwfile, []byte(s.password+"\n"), 0o600))
	chown(pwfile)
	out, err := command(initdb, "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
		"--pwfile", pwfile, "-E", "UTF8", "--no-sync").CombinedOutput()
	require.NoError(t, err, "initdb: %s", out)

	// The server's certificate names localhost only: verify-full to
	// 127.0.0.1 is a hostname mismatch.
	cert := s.ca.server("postgres-server", "localhost")
	for _, f := range []string{cert.CertFile, cert.KeyFile} {
		dst := filepath.Join(dir, filepath.Base(f))
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(dst, b, 0o600))
		chown(dst)
	}
	// Only TLS connections over TCP, with a password.
	hba := "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n"
	require.NoError(t, os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600))
	chown(filepath.Join(data, "pg_hba.conf"))

	s.port = storetest.FreePort(t)
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=localhost -c fsync=off -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s",
		s.port, dir, filepath.Join(dir, filepath.Base(cert.CertFile)), filepath.Join(dir, filepath.Base(cert.KeyFile)))
	out, err = command(pgCtl, "-D", data, "-l", filepath.Join(dir, "server.log"), "-o", opts, "-w", "-t", "120", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		require.NoError(t, err, "start the private PostgreSQL server: %s\n%s", out, log)
	}
	return s
}

// url is a URL of database db as user with password on host (localhost
// or 127.0.0.1), with the given libpq parameters.
func (s *tlsPostgres) url(host, user, password, db string, params ...string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: net.JoinHostPort(host, strconv.Itoa(s.port)), Path: "/" + db}
	u.RawQuery = strings.Join(params, "&")
	return u.String()
}

// TestPostgresOverTLS: with sslmode=require, then verify-full against
// the test's CA, the binary migrates and the worker applies a workload;
// a wrong password and a certificate that does not name the host fail at
// start with exit code 2 and one line, without the password.
func TestPostgresOverTLS(t *testing.T) {
	t.Parallel()
	pg := startTLSPostgres(t)
	admin, err := pgx.Connect(context.Background(), pg.url("localhost", "postgres", pg.password, "postgres", "sslmode=require"))
	require.NoError(t, err)
	defer admin.Close(context.Background())
	_, err = admin.Exec(context.Background(), "CREATE DATABASE projector")
	require.NoError(t, err)

	cluster := kafkatest.New(t, "workflow-events", 2)
	wl := eventgen.Generate(eventgen.Config{Seed: 41, Runs: 60, MalformedRate: 0.05})
	kafkatest.Produce(t, cluster, "workflow-events", wl.Messages)
	brokers := cluster.ListenAddrs()[0]

	requireTLS := pg.url("127.0.0.1", "postgres", pg.password, "projector", "sslmode=require")
	code, _, stderr := runCLI(t, "--database-url", requireTLS, "migrate", "up")
	require.Equal(t, 0, code, "migrate up over sslmode=require: %s", stderr)

	verify := pg.url("localhost", "postgres", pg.password, "projector", "sslmode=verify-full", "sslrootcert="+pg.ca.CAFile)
	code, _, stderr = runCLI(t, "--database-url", verify, "--brokers", brokers, "run", "--until-caught-up")
	require.Equal(t, 0, code, "run over sslmode=verify-full: %s", stderr)
	require.NotContains(t, stderr, pg.password)
	conn, err := pgx.Connect(context.Background(), requireTLS)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var events, dead int
	var ssl bool
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM workflow_events), (SELECT count(*) FROM dead_letters),
		(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())`).Scan(&events, &dead, &ssl))
	require.Equal(t, wl.Valid, events)
	require.Equal(t, wl.Invalid, dead)
	require.True(t, ssl, "the connection is encrypted")

	for _, tc := range []struct {
		name, url, want string
		command         []string
	}{
		{"wrong password, run", pg.url("localhost", "postgres", "wrong-Pa55", "projector", "sslmode=require"),
			"password authentication failed", []string{"run"}},
		{"wrong password, dlq list", pg.url("localhost", "postgres", "wrong-Pa55", "projector", "sslmode=require"),
			"password authentication failed", []string{"dlq", "list"}},
		{"wrong password, migrate", pg.url("localhost", "postgres", "wrong-Pa55", "projector", "sslmode=require"),
			"password authentication failed", []string{"migrate", "up"}},
		{"certificate for another host", pg.url("127.0.0.1", "postgres", pg.password, "projector", "sslmode=verify-full", "sslrootcert="+pg.ca.CAFile),
			"cannot validate certificate for 127.0.0.1", []string{"run"}},
		{"certificate of an untrusted CA", pg.url("localhost", "postgres", pg.password, "projector", "sslmode=verify-full", "sslrootcert="+newTestCA(t).CAFile),
			"certificate signed by unknown authority", []string{"offsets", "show"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, append([]string{"--database-url", tc.url, "--brokers", brokers}, tc.command...)...)
			require.Equal(t, 2, code, stderr)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			require.True(t, strings.HasPrefix(last, "projector: "), stderr)
			require.Contains(t, last, tc.want)
			require.NotContains(t, stderr, "wrong-Pa55")
			require.NotContains(t, stderr, pg.password)
		})
	}
}

// TestPostgresRefusalsExitTwo: a role or a database that does not exist
// fails run (which used to retry it forever) and the one-shot commands at
// start, with exit code 2 and one line. On the shared server.
func TestPostgresRefusalsExitTwo(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(storetest.URL(t))
	require.NoError(t, err)
	noDB := *u
	noDB.Path = "/no_such_database_here"
	noRole := *u
	noRole.User = url.UserPassword("no_such_role_here", "role-Pa55")
	for _, tc := range []struct {
		name, url, want string
		command         []string
	}{
		{"database does not exist, run", noDB.String(), `database "no_such_database_here" does not exist`, []string{"run"}},
		{"database does not exist, rebuild", noDB.String(), `database "no_such_database_here" does not exist`, []string{"rebuild"}},
		{"role does not exist, run", noRole.String(), `role "no_such_role_here" does not exist`, []string{"run"}},
		{"role does not exist, dlq list", noRole.String(), `role "no_such_role_here" does not exist`, []string{"dlq", "list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, append([]string{"--database-url", tc.url, "--brokers", "127.0.0.1:1"}, tc.command...)...)
			require.Equal(t, 2, code, stderr)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			require.True(t, strings.HasPrefix(lines[len(lines)-1], "projector: "), stderr)
			require.Contains(t, lines[len(lines)-1], tc.want)
			require.NotContains(t, stderr, "role-Pa55")
		})
	}
}
