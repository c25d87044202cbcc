package consumer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

// This file holds how the program secures its connections to the brokers:
// TLS from PEM files and SASL (PLAIN, SCRAM), applied to the one sarama
// configuration (NewSaramaConfig), and the errors that say a connection
// was refused for a reason only a change of configuration mends.

// TLSFiles names the PEM files of a TLS configuration.
type TLSFiles struct {
	// CAFile is a bundle of the CAs that sign the brokers' certificates;
	// empty for the system roots.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key, for
	// mutual TLS; both or neither.
	CertFile, KeyFile string
	// InsecureSkipVerify accepts any certificate the brokers present:
	// encrypted, but open to a man in the middle. For tests only.
	InsecureSkipVerify bool
}

// LoadTLS reads the files into a TLS configuration (TLS 1.2 or later).
// The errors name the file, never its contents.
func LoadTLS(f TLSFiles) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: f.InsecureSkipVerify} // #nosec G402 -- only when asked for, and logged as a warning
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka-tls-ca-file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka-tls-ca-file: %s holds no PEM certificate", f.CAFile)
		}
	}
	switch {
	case f.CertFile != "" && f.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka-tls-cert-file, kafka-tls-key-file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case f.CertFile != "" || f.KeyFile != "":
		return nil, errors.New("kafka-tls-cert-file, kafka-tls-key-file: mutual TLS needs both the certificate and its key")
	}
	return c, nil
}

// applySecurity sets sarama's TLS and SASL from cfg.
func applySecurity(sc *sarama.Config, cfg Config) {
	if cfg.TLS != nil {
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = cfg.TLS
	}
	if cfg.SASL.Mechanism == "" {
		return
	}
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.Version = sarama.SASLHandshakeV1
	sc.Net.SASL.Mechanism = sarama.SASLMechanism(cfg.SASL.Mechanism)
	sc.Net.SASL.User = cfg.SASL.Username
	sc.Net.SASL.Password = cfg.SASL.Password.Reveal()
	if hash, ok := scramHash(cfg.SASL.Mechanism); ok {
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: hash} }
	}
}

// scramHash returns the hash of a SCRAM mechanism.
func scramHash(mechanism string) (scram.HashGeneratorFcn, bool) {
	switch mechanism {
	case SASLSCRAMSHA256:
		return scram.SHA256, true
	case SASLSCRAMSHA512:
		return scram.SHA512, true
	}
	return nil, false
}

// scramClient is sarama's SCRAM client, on xdg-go/scram (RFC 5802), as
// sarama's own examples do it.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	cl, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return fmt.Errorf("scram: %w", err)
	}
	c.conv = cl.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }

func (c *scramClient) Done() bool { return c.conv.Done() }

// ConfigError is a connection to the brokers refused for a reason that
// only a change of configuration mends: credentials, certificates, TLS or
// SASL where the listener has none. Retrying does not help; at start it
// is exit code 2. Cause says which, in one line, without any secret.
type ConfigError struct {
	Broker string
	Cause  string
	Err    error
}

func (e *ConfigError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("kafka at %s: %s", e.Broker, e.Cause)
	}
	return fmt.Sprintf("kafka at %s: %s (%v)", e.Broker, e.Cause, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// IsConfigError reports whether err says the brokers refuse this
// configuration: a ConfigError from the start-up check, or the same
// refusals met by sarama on a connection later on (credentials rotated,
// a certificate expired while the worker ran).
func IsConfigError(err error) bool {
	if err == nil {
		return false
	}
	var ce *ConfigError
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &ce) || errors.As(err, &unknownCA) || errors.As(err, &invalid) ||
		errors.As(err, &host) || errors.As(err, &verify) || tlsAlert(err) ||
		errors.Is(err, sarama.ErrSASLAuthenticationFailed) || errors.Is(err, sarama.ErrUnsupportedSASLMechanism) ||
		errors.Is(err, sarama.ErrIllegalSASLState)
}
