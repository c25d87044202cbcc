package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/store/storetest"
)

// Connecting to Kafka securely (CONTRACT.md section 8), against the
// in-process broker with TLS and SASL, and certificates the tests make.

// withPassword returns a database URL with a password added. The shared
// test server trusts local connections, so it accepts any password: the
// password is there to show it is never printed.
func withPassword(t *testing.T, raw, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// writeFile writes content to a new file of the test and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

var addrField = regexp.MustCompile(`addr="?([0-9.:]+)"?`)

// TestRunOverSASLSSLWithSCRAMIsExactlyOnceAndPrintsNoSecret runs the
// worker over SASL_SSL (SCRAM-SHA-512, the broker's certificate verified
// against the test's CA), its password from KAFKA_SASL_PASSWORD_FILE, at
// debug level (sarama's own lines included), with /metrics served; every
// valid event is applied once, every invalid one dead-lettered once, and
// neither password appears in the log, /metrics, /readyz or the output
// of offsets show. Not parallel: sarama's logger is the process's, so
// only this test's lines reach its log.
func TestRunOverSASLSSLWithSCRAMIsExactlyOnceAndPrintsNoSecret(t *testing.T) {
	const user, kafkaPassword, dbPassword = "projector", "kafka-Pa55-word-7f3c", "db-Pa55-word-91ab"
	ca := newTestCA(t)
	cluster := kafkatest.New(t, "secure-events", 3,
		kfake.TLS(ca.serverTLS(ca.server("broker", "127.0.0.1", "localhost"), false)),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, kafkaPassword))
	wl := eventgen.Generate(eventgen.Config{Seed: 31, Runs: 120, DuplicateRate: 0.1, MalformedRate: 0.05})
	kafkatest.ProduceWith(t, cluster, "secure-events", wl.Messages, kgo.DialTLSConfig(ca.clientTLS()),
		kgo.SASL(scram.Auth{User: user, Pass: kafkaPassword}.AsSha512Mechanism()))
	dbURL := withPassword(t, storetest.URL(t), dbPassword)
	t.Setenv("KAFKA_SASL_PASSWORD_FILE", writeFile(t, "kafka-password", kafkaPassword+"\n"))
	t.Setenv("DATABASE_URL_FILE", writeFile(t, "database-url", dbURL+"\n"))
	common := []string{"--brokers", cluster.ListenAddrs()[0], "--topics", "secure-events", "--log-level", "debug",
		"--kafka-tls", "--kafka-tls-ca-file", ca.CAFile, "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", user}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	stderr := &lockedBuffer{}
	exited := make(chan int, 1)
	go func() {
		exited <- Run(runCtx, append(append([]string{"projector"}, common...), "run", "--http-addr", "127.0.0.1:0"), io.Discard, stderr)
	}()
	var addr string
	waitUntil(t, time.Minute, func() bool {
		m := addrField.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, "the worker never served HTTP: %s", stderr)
	st := storetest.Open(t, dbURL)
	var events, dead int
	waitUntil(t, time.Minute, func() bool {
		require.NoError(t, st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM workflow_events), (SELECT count(*) FROM dead_letters)`).Scan(&events, &dead))
		return events == wl.Valid && dead == wl.Invalid
	}, "events %d of %d, dead letters %d of %d", &events, wl.Valid, &dead, wl.Invalid)
	var scraped strings.Builder
	for _, path := range []string{"/metrics", "/readyz"} {
		waitUntil(t, time.Minute, func() bool {
			resp, err := http.Get("http://" + addr + path)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			if resp.StatusCode != http.StatusOK {
				return false
			}
			scraped.Write(b)
			return true
		}, "%s never answered 200", path)
	}
	require.Contains(t, scraped.String(), "projector_events_applied_total")
	stop()
	require.Equal(t, 0, <-exited, stderr.String())

	// sarama's clients log while they close, after Run returns: only a
	// buffer safe for concurrent use takes its lines.
	var stdout strings.Builder
	offsetsLog := &lockedBuffer{}
	code := Run(ctx, append(append([]string{"projector"}, common...), "offsets", "show"), &stdout, offsetsLog)
	out, offsetsErr := stdout.String(), offsetsLog.String()
	require.Equal(t, 0, code, offsetsErr)
	require.Contains(t, out, "secure-events")

	log := stderr.String()
	require.Regexp(t, `msg=starting.*kafka_sasl=SCRAM-SHA-512.*kafka_tls=true`, log, "the start-up line names the mechanism and TLS")
	require.Contains(t, log, "component=sarama", "sarama's own debug lines are part of what is scanned")
	require.Contains(t, log, "xxxxx", "the database URL is shown redacted")
	for _, text := range []string{log, scraped.String(), out, offsetsErr} {
		for _, secret := range []string{kafkaPassword, dbPassword} {
			require.NotContains(t, text, secret)
		}
	}
}

// TestRunOverMutualTLSIsExactlyOnce runs the worker to its caught-up exit
// against a broker that requires a client certificate signed by the CA.
func TestRunOverMutualTLSIsExactlyOnce(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	client := ca.issue("projector-client", nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
	cluster := kafkatest.New(t, "mtls-events", 2, kfake.TLS(ca.serverTLS(ca.server("broker", "127.0.0.1"), true)))
	clientTLS := ca.clientTLS()
	clientTLS.Certificates = []tls.Certificate{client.TLS}
	wl := eventgen.Generate(eventgen.Config{Seed: 32, Runs: 80, DuplicateRate: 0.1, MalformedRate: 0.05})
	kafkatest.ProduceWith(t, cluster, "mtls-events", wl.Messages, kgo.DialTLSConfig(clientTLS))
	dbURL := storetest.URL(t)

	code, _, stderr := runCLI(t, "--database-url", dbURL, "--brokers", cluster.ListenAddrs()[0], "--topics", "mtls-events",
		"--kafka-tls", "--kafka-tls-ca-file", ca.CAFile, "--kafka-tls-cert-file", client.CertFile, "--kafka-tls-key-file", client.KeyFile,
		"run", "--until-caught-up")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `msg=starting.*kafka_sasl=none.*kafka_tls=true`, stderr)
	st := storetest.Open(t, dbURL)
	var events, dead int
	require.NoError(t, st.Pool().QueryRow(context.Background(), `SELECT (SELECT count(*) FROM workflow_events), (SELECT count(*) FROM dead_letters)`).Scan(&events, &dead))
	require.Equal(t, wl.Valid, events)
	require.Equal(t, wl.Invalid, dead)
}

// TestKafkaRefusalsExitTwoWithOneLine: each configuration the brokers
// refuse stops run (and offsets show) at start with exit code 2 and one
// line that names the cause, instead of a retry loop.
func TestKafkaRefusalsExitTwoWithOneLine(t *testing.T) {
	t.Parallel()
	const user, password, wrong = "projector", "right-Pa55", "wrong-Pa55"
	ca := newTestCA(t)
	otherCA := newTestCA(t)
	good := ca.server("broker", "127.0.0.1")
	expired := ca.issue("expired", []string{"127.0.0.1"}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), false)
	elsewhere := ca.server("elsewhere", "kafka.example.com")
	dbURL := storetest.URL(t)
	tlsArgs := func(caFile string) []string { return []string{"--kafka-tls", "--kafka-tls-ca-file", caFile} }
	for _, tc := range []struct {
		name    string
		cluster []kfake.Opt
		args    []string
		command []string
		want    string
	}{
		{"wrong SCRAM password over TLS",
			[]kfake.Opt{kfake.TLS(ca.serverTLS(good, false)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", user, password)},
			append(tlsArgs(ca.CAFile), "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", user, "--kafka-sasl-password", wrong),
			nil, `refused the SASL SCRAM-SHA-512 credentials of user "projector"`},
		{"wrong PLAIN password over plaintext",
			[]kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", user, password)},
			[]string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", user, "--kafka-sasl-password", wrong},
			nil, "refused the SASL PLAIN credentials"},
		{"wrong SCRAM password, offsets show",
			[]kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", user, password)},
			[]string{"--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", user, "--kafka-sasl-password", wrong},
			[]string{"offsets", "show"}, "refused the SASL SCRAM-SHA-256 credentials"},
		{"certificate of an untrusted CA",
			[]kfake.Opt{kfake.TLS(ca.serverTLS(good, false))}, tlsArgs(otherCA.CAFile), nil, "not signed by a trusted CA"},
		{"certificate of an untrusted CA, system roots",
			[]kfake.Opt{kfake.TLS(ca.serverTLS(good, false))}, []string{"--kafka-tls"}, nil, "not signed by a trusted CA"},
		{"expired certificate",
			[]kfake.Opt{kfake.TLS(ca.serverTLS(expired, false))}, tlsArgs(ca.CAFile), nil, "certificate has expired"},
		{"hostname mismatch",
			[]kfake.Opt{kfake.TLS(ca.serverTLS(elsewhere, false))}, tlsArgs(ca.CAFile), nil, "not valid for this host name"},
		{"TLS against a plaintext listener",
			nil, tlsArgs(ca.CAFile), nil, "the listener is plaintext"},
		{"plaintext against a TLS listener",
			[]kfake.Opt{kfake.TLS(ca.serverTLS(good, false))}, nil, nil, "the listener speaks TLS"},
		{"no client certificate for mutual TLS",
			[]kfake.Opt{kfake.TLS(ca.serverTLS(good, true))}, tlsArgs(ca.CAFile), nil, "check the client certificate"},
		{"SASL against a listener without SASL",
			nil, []string{"--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", user, "--kafka-sasl-password", password},
			nil, "refused the SASL SCRAM-SHA-512 credentials"},
		{"no SASL against a SASL listener",
			[]kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", user, password)}, nil, nil, "the listener needs SASL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cluster := kafkatest.New(t, "workflow-events", 1, tc.cluster...)
			command := tc.command
			if command == nil {
				command = []string{"run"}
			}
			args := append(append([]string{"--database-url", dbURL, "--brokers", cluster.ListenAddrs()[0]}, tc.args...), command...)
			code, _, stderr := runCLI(t, args...)
			require.Equal(t, 2, code, stderr)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			require.True(t, strings.HasPrefix(last, "projector: kafka at "+cluster.ListenAddrs()[0]+": "), stderr)
			require.Contains(t, last, tc.want)
			require.NotContains(t, stderr, password)
			require.NotContains(t, stderr, wrong)
		})
	}
}

// TestUnreachableBrokerIsRetried: a broker that does not answer is not a
// configuration error: run waits for it, retrying, until stopped (exit 0).
func TestUnreachableBrokerIsRetried(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &lockedBuffer{}
	exited := make(chan int, 1)
	go func() {
		exited <- Run(ctx, []string{"projector", "--database-url", storetest.URL(t), "--brokers", "127.0.0.1:1", "--kafka-tls", "run"}, io.Discard, stderr)
	}()
	waitUntil(t, time.Minute, func() bool { return strings.Count(stderr.String(), "kafka not reachable; retrying") >= 2 },
		"run did not retry the unreachable broker: %s", stderr)
	cancel()
	require.Equal(t, 0, <-exited, stderr.String())
}

// TestSecretsFromFiles: a secret's *_FILE variable is read (its trailing
// newline dropped), a flag wins over it, and the variable and its file
// both set is exit code 2.
func TestSecretsFromFiles(t *testing.T) {
	url := storetest.URL(t)
	t.Setenv("DATABASE_URL_FILE", writeFile(t, "url", url+"\n"))
	code, out, stderr := runCLI(t, "migrate", "status")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "applied")

	code, _, stderr = runCLI(t, "--database-url", "postgres://postgres@127.0.0.1:5432/no_such_database_at_all?sslmode=disable", "migrate", "status")
	require.Equal(t, 2, code, "the flag wins over the file: %s", stderr)
	require.Contains(t, stderr, "no_such_database_at_all")

	t.Setenv("DATABASE_URL", url)
	code, _, stderr = runCLI(t, "migrate", "status")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "DATABASE_URL and DATABASE_URL_FILE are both set")

	require.NoError(t, os.Unsetenv("DATABASE_URL"))
	t.Setenv("DATABASE_URL_FILE", filepath.Join(t.TempDir(), "missing"))
	code, _, stderr = runCLI(t, "migrate", "status")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "DATABASE_URL_FILE")

	t.Setenv("DATABASE_URL_FILE", "")
	t.Setenv("KAFKA_SASL_PASSWORD", "env-secret")
	t.Setenv("KAFKA_SASL_PASSWORD_FILE", writeFile(t, "pw", "file-secret\n"))
	code, _, stderr = runCLI(t, "--database-url", url, "run")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set")
	require.NotContains(t, stderr, "secret")
}

// TestHelpShowsNoSecret: --help lists the security flags and variables,
// and shows no value of a secret set in the environment.
func TestHelpShowsNoSecret(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://u:help-Pa55@db.example/projector")
	t.Setenv("KAFKA_SASL_PASSWORD", "help-kafka-Pa55")
	code, out, _ := runCLI(t, "--help")
	require.Equal(t, 0, code)
	for _, s := range []string{"--kafka-tls", "KAFKA_TLS", "--kafka-tls-ca-file", "KAFKA_TLS_CA_FILE", "--kafka-tls-cert-file",
		"KAFKA_TLS_CERT_FILE", "--kafka-tls-key-file", "KAFKA_TLS_KEY_FILE", "--kafka-tls-insecure-skip-verify",
		"KAFKA_TLS_INSECURE_SKIP_VERIFY", "--kafka-sasl-mechanism", "KAFKA_SASL_MECHANISM", "--kafka-sasl-username",
		"KAFKA_SASL_USERNAME", "--kafka-sasl-password", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE", "DATABASE_URL_FILE"} {
		require.Contains(t, out, s)
	}
	require.NotContains(t, out, "help-Pa55")
	require.NotContains(t, out, "help-kafka-Pa55")
}

// TestInsecureSkipVerifyIsLoggedAsAWarning: the brokers' certificates go
// unverified only when asked, with a warning.
func TestInsecureSkipVerifyIsLoggedAsAWarning(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	cluster := kafkatest.New(t, "workflow-events", 1, kfake.TLS(ca.serverTLS(ca.server("elsewhere", "kafka.example.com"), false)))
	code, _, stderr := runCLI(t, "--database-url", storetest.URL(t), "--brokers", cluster.ListenAddrs()[0],
		"--kafka-tls", "--kafka-tls-insecure-skip-verify", "run", "--until-caught-up")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `level=warning msg="the brokers' TLS certificates are not verified`, stderr)
}

// TestKafkaSecurityUsageErrors: settings that do not fit together are
// exit code 2 before anything connects.
func TestKafkaSecurityUsageErrors(t *testing.T) {
	t.Parallel()
	url := storetest.URL(t)
	ca := newTestCA(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown mechanism", []string{"--kafka-sasl-mechanism", "GSSAPI", "--kafka-sasl-username", "u", "--kafka-sasl-password", "p"}, "kafka-sasl-mechanism"},
		{"mechanism without password", []string{"--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "u"}, "kafka-sasl-mechanism"},
		{"password without mechanism", []string{"--kafka-sasl-username", "u", "--kafka-sasl-password", "p"}, "need --kafka-sasl-mechanism"},
		{"CA file without TLS", []string{"--kafka-tls-ca-file", ca.CAFile}, "need --kafka-tls"},
		{"missing CA file", []string{"--kafka-tls", "--kafka-tls-ca-file", "/no/such/ca.pem"}, "kafka-tls-ca-file"},
		{"certificate without key", []string{"--kafka-tls", "--kafka-tls-cert-file", ca.CAFile}, "needs both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, append(append([]string{"--database-url", url, "--brokers", "127.0.0.1:1"}, tc.args...), "run")...)
			require.Equal(t, 2, code, stderr)
			require.Contains(t, stderr, tc.want)
		})
	}
}

// TestEverySASLMechanismOverPlaintextAndTLS: the worker authenticates
// with each mechanism, over a plaintext and a TLS listener, and applies a
// small workload to its caught-up exit.
func TestEverySASLMechanismOverPlaintextAndTLS(t *testing.T) {
	t.Parallel()
	const user, password = "projector", "mech-Pa55"
	ca := newTestCA(t)
	serverTLS := ca.serverTLS(ca.server("broker", "127.0.0.1"), false)
	for _, mech := range []struct {
		name string
		kgo  sasl.Mechanism
	}{
		{"PLAIN", plain.Auth{User: user, Pass: password}.AsMechanism()},
		{"SCRAM-SHA-256", scram.Auth{User: user, Pass: password}.AsSha256Mechanism()},
		{"SCRAM-SHA-512", scram.Auth{User: user, Pass: password}.AsSha512Mechanism()},
	} {
		for _, withTLS := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s tls=%v", mech.name, withTLS), func(t *testing.T) {
				t.Parallel()
				opts := []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(mech.name, user, password)}
				produce := []kgo.Opt{kgo.SASL(mech.kgo)}
				args := []string{"--kafka-sasl-mechanism", mech.name, "--kafka-sasl-username", user, "--kafka-sasl-password", password}
				if withTLS {
					opts = append(opts, kfake.TLS(serverTLS))
					produce = append(produce, kgo.DialTLSConfig(ca.clientTLS()))
					args = append(args, "--kafka-tls", "--kafka-tls-ca-file", ca.CAFile)
				}
				cluster := kafkatest.New(t, "workflow-events", 2, opts...)
				wl := eventgen.Generate(eventgen.Config{Seed: 71, Runs: 20})
				kafkatest.ProduceWith(t, cluster, "workflow-events", wl.Messages, produce...)
				dbURL := storetest.URL(t)
				code, _, stderr := runCLI(t, append(append([]string{"--database-url", dbURL, "--brokers", cluster.ListenAddrs()[0]}, args...), "run", "--until-caught-up")...)
				require.Equal(t, 0, code, stderr)
				require.Contains(t, stderr, "kafka_sasl="+mech.name)
				var events int
				require.NoError(t, storetest.Open(t, dbURL).Pool().QueryRow(context.Background(), `SELECT count(*) FROM workflow_events`).Scan(&events))
				require.Equal(t, wl.Valid, events)
			})
		}
	}
}
