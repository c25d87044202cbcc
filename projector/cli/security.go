package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/retrypolicy"
	"github.com/projector-run/projector/store"
)

// Connecting securely (CONTRACT.md section 8): the root flags of TLS and
// SASL to the brokers, secrets read from files, and the start-up check
// that fails fast on a configuration the brokers refuse.

// securityFlags are the root flags of TLS and SASL to the brokers. None
// has a default that could show a secret in --help.
func securityFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "kafka-tls", Usage: "connect to the brokers with TLS", Sources: cli.EnvVars("KAFKA_TLS")},
		&cli.StringFlag{Name: "kafka-tls-ca-file", Usage: "CA bundle (PEM) that signs the brokers' certificates; the system roots when absent", Sources: cli.EnvVars("KAFKA_TLS_CA_FILE")},
		&cli.StringFlag{Name: "kafka-tls-cert-file", Usage: "client certificate (PEM), for mutual TLS", Sources: cli.EnvVars("KAFKA_TLS_CERT_FILE")},
		&cli.StringFlag{Name: "kafka-tls-key-file", Usage: "client key (PEM), for mutual TLS", Sources: cli.EnvVars("KAFKA_TLS_KEY_FILE")},
		&cli.BoolFlag{Name: "kafka-tls-insecure-skip-verify", Usage: "do not verify the brokers' certificates (logged as a warning; tests only)", Sources: cli.EnvVars("KAFKA_TLS_INSECURE_SKIP_VERIFY")},
		&cli.StringFlag{Name: "kafka-sasl-mechanism", Usage: "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; none when empty", Sources: cli.EnvVars("KAFKA_SASL_MECHANISM")},
		&cli.StringFlag{Name: "kafka-sasl-username", Usage: "SASL username", Sources: cli.EnvVars("KAFKA_SASL_USERNAME")},
		&cli.StringFlag{Name: "kafka-sasl-password", Usage: "SASL password (or KAFKA_SASL_PASSWORD_FILE: a file that holds it)", Sources: cli.EnvVars("KAFKA_SASL_PASSWORD")},
	}
}

// secretFiles are the flags whose value may come from a file named by an
// environment variable, as container platforms mount secrets.
var secretFiles = []struct{ flag, env, fileEnv string }{
	{"database-url", "DATABASE_URL", "DATABASE_URL_FILE"},
	{"kafka-sasl-password", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"},
}

// readSecretFiles sets each flag of secretFiles from its file when the
// file's variable is set: a flag on the command line wins over the file,
// and the variable and its file both set is a usage error (which one was
// meant?). A trailing newline of the file is dropped.
func readSecretFiles(cmd *cli.Command) error {
	for _, s := range secretFiles {
		path := os.Getenv(s.fileEnv)
		if path == "" {
			continue
		}
		if v := os.Getenv(s.env); v != "" && cmd.String(s.flag) == v {
			return usagef("%s and %s are both set: give one", s.env, s.fileEnv)
		}
		if cmd.IsSet(s.flag) && cmd.String(s.flag) != "" {
			continue // the flag wins
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return usagef("%s: %v", s.fileEnv, err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return usagef("%s: %s is empty", s.fileEnv, path)
		}
		if err := cmd.Set(s.flag, v); err != nil {
			return usagef("%s: %v", s.fileEnv, err)
		}
	}
	return nil
}

// kafkaSecurity fills cfg's TLS and SASL from the flags. Files that cannot
// be read, and settings that do not fit together, are usage errors.
func (a *app) kafkaSecurity(cmd *cli.Command, cfg *consumer.Config) error {
	files := consumer.TLSFiles{
		CAFile:             cmd.String("kafka-tls-ca-file"),
		CertFile:           cmd.String("kafka-tls-cert-file"),
		KeyFile:            cmd.String("kafka-tls-key-file"),
		InsecureSkipVerify: cmd.Bool("kafka-tls-insecure-skip-verify"),
	}
	if cmd.Bool("kafka-tls") {
		tc, err := consumer.LoadTLS(files)
		if err != nil {
			return usageError{err}
		}
		cfg.TLS = tc
		if files.InsecureSkipVerify {
			a.log.Warn("the brokers' TLS certificates are not verified (--kafka-tls-insecure-skip-verify): the connection is encrypted but open to a man in the middle")
		}
	} else if files != (consumer.TLSFiles{}) {
		return usagef("--kafka-tls-ca-file, --kafka-tls-cert-file, --kafka-tls-key-file and --kafka-tls-insecure-skip-verify need --kafka-tls")
	}
	cfg.SASL = consumer.SASL{
		Mechanism: strings.ToUpper(cmd.String("kafka-sasl-mechanism")),
		Username:  cmd.String("kafka-sasl-username"),
		Password:  consumer.Secret(cmd.String("kafka-sasl-password")),
	}
	return nil
}

// kafkaFields are the start-up log's fields of the connection to the
// brokers: whether TLS is on and the SASL mechanism, never a secret.
func kafkaFields(cfg consumer.Config) logrus.Fields {
	f := logrus.Fields{"kafka_tls": cfg.TLS != nil, "kafka_sasl": "none"}
	if cfg.SASL.Mechanism != "" {
		f["kafka_sasl"] = cfg.SASL.Mechanism
		f["kafka_sasl_username"] = cfg.SASL.Username
	}
	return f
}

// checkKafka waits until a broker answers, and fails with a usage error
// (exit code 2) when the brokers refuse the configuration: credentials,
// certificates, TLS or SASL where the listener has none.
func (a *app) checkKafka(ctx context.Context, cfg consumer.Config) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		done := make(chan error, 1)
		go func() { done <- consumer.CheckBrokers(cfg) }() // bounded by its own timeouts
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			return struct{}{}, backoff.Permanent(ctx.Err())
		}
		if ce := (*consumer.ConfigError)(nil); errors.As(err, &ce) {
			return struct{}{}, backoff.Permanent(usageError{err})
		}
		return struct{}{}, err
	}, backoff.WithBackOff(retrypolicy.NewBackOff(200*time.Millisecond, 10*time.Second)), backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			a.log.WithError(err).WithField("retry_in", next.Round(time.Millisecond).String()).Warn("kafka not reachable; retrying")
		}))
	if ctx.Err() != nil {
		return nil // stopped (SIGINT, SIGTERM) while checking: exit 0
	}
	return err
}

// databaseRefused wraps an error of PostgreSQL that only a change of
// configuration mends (store.IsConfigError) as a usage error naming the
// database without its password.
func databaseRefused(url string, err error) error {
	return usageError{fmt.Errorf("database %s refuses the connection: %w", store.RedactURL(url), err)}
}
