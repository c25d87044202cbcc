package consumer

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The start-up check of a broker connection. sarama reports any failure
// to open a broker connection as "client has run out of available
// brokers", whether the broker is down (worth retrying) or refuses the
// credentials (worth stopping): CheckBrokers goes through the steps of a
// connection itself — TCP, TLS handshake, ApiVersions, SASL, a first
// request — on one broker, so that a refusal is named, in one line, and
// classified once: a ConfigError, or an error to retry.

// handshakeTimeout bounds the check's TLS handshake: a plaintext listener
// may read a ClientHello as the start of a huge request and wait.
const handshakeTimeout = 5 * time.Second

// maxProbeResponse bounds a response the check reads: anything larger is
// not a Kafka answer to its small requests.
const maxProbeResponse = 16 << 20

// CheckBrokers checks the first broker of cfg.Brokers that accepts a TCP
// connection. It returns nil when that broker accepts the configuration,
// a *ConfigError when it refuses it, and another error (to retry) when
// no broker answers.
func CheckBrokers(cfg Config) error {
	var errs []error
	for _, addr := range cfg.Brokers {
		err := checkBroker(cfg, addr)
		var ce *ConfigError
		if errors.As(err, &ce) {
			// Some refusals are a closed connection (kfake answers bad
			// credentials so, and a plaintext listener a ClientHello):
			// a broker going down at that moment would look the same. A
			// refusal counts when a second connection meets it too.
			err = checkBroker(cfg, addr)
		}
		if err == nil || errors.As(err, &ce) {
			return err
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return errors.Join(errs...)
}

func checkBroker(cfg Config, addr string) error {
	d := net.Dialer{Timeout: lookupTimeout}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return err // unreachable: retried
	}
	defer raw.Close()
	conn := raw
	if cfg.TLS != nil {
		tc := tls.Client(raw, serverTLS(cfg.TLS, addr))
		_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			return tlsFailure(addr, err)
		}
		conn = tc
	}
	_ = raw.SetDeadline(time.Now().Add(lookupTimeout))
	p := &probe{conn: conn, format: kmsg.NewRequestFormatter(kmsg.FormatterClientID("projector"))}
	versions, err := p.apiVersions()
	if err != nil {
		if cfg.TLS == nil && closedOrGarbled(err) && speaksTLS(addr) {
			return &ConfigError{Broker: addr, Cause: "the listener speaks TLS and the client does not: set --kafka-tls (KAFKA_TLS=true)"}
		}
		if cfg.TLS != nil {
			if tlsAlert(err) { // TLS 1.3: the server checks the client's certificate after the client's handshake ends
				return &ConfigError{Broker: addr, Cause: "the broker refused the TLS connection: check the client certificate (--kafka-tls-cert-file, --kafka-tls-key-file)", Err: err}
			}
		}
		return err
	}
	p.versions = versions
	if cfg.SASL.Mechanism != "" {
		if err := p.authenticate(addr, cfg.SASL); err != nil {
			return err
		}
	}
	if err := p.metadata(); err != nil {
		if cfg.SASL.Mechanism == "" && closedOrGarbled(err) {
			return &ConfigError{Broker: addr, Cause: "the broker closed the connection at the first request: the listener needs SASL authentication (set --kafka-sasl-mechanism and the credentials)"}
		}
		return err
	}
	return nil
}

// serverTLS is c for a connection to addr: the name to verify is the
// address's host unless c names one (as sarama does).
func serverTLS(c *tls.Config, addr string) *tls.Config {
	c = c.Clone()
	if c.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			c.ServerName = host
		}
	}
	return c
}

// tlsFailure classifies a failed TLS handshake.
func tlsFailure(addr string, err error) error {
	var host x509.HostnameError
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &host):
		return &ConfigError{Broker: addr, Cause: "the broker's certificate is not valid for this host name (hostname mismatch)", Err: err}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return &ConfigError{Broker: addr, Cause: "the broker's certificate has expired or is not yet valid", Err: err}
	case errors.As(err, &unknownCA):
		return &ConfigError{Broker: addr, Cause: "the broker's certificate is not signed by a trusted CA (--kafka-tls-ca-file)", Err: err}
	case errors.As(err, &invalid), errors.As(err, &verify):
		return &ConfigError{Broker: addr, Cause: "the broker's certificate is not trusted", Err: err}
	case errors.As(err, &header):
		return &ConfigError{Broker: addr, Cause: "the listener does not speak TLS: it is a plaintext listener (drop --kafka-tls, or use the TLS listener's port)"}
	case tlsAlert(err):
		return &ConfigError{Broker: addr, Cause: "the broker refused the TLS handshake: check the client certificate (--kafka-tls-cert-file, --kafka-tls-key-file)", Err: err}
	}
	if speaksPlaintext(addr) {
		return &ConfigError{Broker: addr, Cause: "the listener is plaintext and the client speaks TLS: drop --kafka-tls, or use the TLS listener's port"}
	}
	return fmt.Errorf("tls handshake: %w", err)
}

// tlsAlert reports whether the peer ended the TLS connection with an
// alert (a certificate it refuses, one it requires).
func tlsAlert(err error) bool {
	var alert tls.AlertError
	var op *net.OpError
	return errors.As(err, &alert) || (errors.As(err, &op) && op.Op == "remote error")
}

// closedOrGarbled reports whether a request failed because the broker
// closed the connection or answered with something that is not Kafka.
func closedOrGarbled(err error) bool {
	var g garbled
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.As(err, &g)
}

// speaksTLS reports whether addr completes a TLS handshake, whatever its
// certificate.
func speaksTLS(addr string) bool {
	raw, err := net.DialTimeout("tcp", addr, lookupTimeout)
	if err != nil {
		return false
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	return tls.Client(raw, &tls.Config{InsecureSkipVerify: true}).Handshake() == nil // #nosec G402 -- only asks whether the listener speaks TLS
}

// speaksPlaintext reports whether addr answers a plaintext ApiVersions.
func speaksPlaintext(addr string) bool {
	raw, err := net.DialTimeout("tcp", addr, lookupTimeout)
	if err != nil {
		return false
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	p := &probe{conn: raw, format: kmsg.NewRequestFormatter(kmsg.FormatterClientID("projector"))}
	_, err = p.apiVersions()
	return err == nil
}

// garbled is a response that is not Kafka's.
type garbled struct{ what string }

func (g garbled) Error() string { return "not a Kafka response: " + g.what }

// probe speaks the Kafka protocol on one connection, one request at a time.
type probe struct {
	conn     net.Conn
	format   *kmsg.RequestFormatter
	corr     int32
	versions map[int16][2]int16 // the broker's min and max version of each key
}

// version picks the highest version of req both sides speak.
func (p *probe) version(req kmsg.Request) {
	v := req.MaxVersion()
	if r, ok := p.versions[req.Key()]; ok {
		v = max(min(v, r[1]), r[0])
	}
	req.SetVersion(v)
}

// roundTrip sends req and reads its response into resp.
func (p *probe) roundTrip(req kmsg.Request) (kmsg.Response, error) {
	p.corr++
	if _, err := p.conn.Write(p.format.AppendRequest(nil, req, p.corr)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(p.conn, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 || n > maxProbeResponse {
		return nil, garbled{fmt.Sprintf("size %d", n)}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(p.conn, body); err != nil {
		return nil, err
	}
	if corr := int32(binary.BigEndian.Uint32(body)); corr != p.corr {
		return nil, garbled{fmt.Sprintf("correlation id %d, want %d", corr, p.corr)}
	}
	body = body[4:]
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if resp.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16() {
		r := kbin.Reader{Src: body}
		kmsg.SkipTags(&r)
		body = r.Src
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, garbled{err.Error()}
	}
	return resp, nil
}

// apiVersions asks the broker which versions of each request it speaks
// (version 0: every broker answers it, also before authentication).
func (p *probe) apiVersions() (map[int16][2]int16, error) {
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(0)
	resp, err := p.roundTrip(req)
	if err != nil {
		return nil, err
	}
	r := resp.(*kmsg.ApiVersionsResponse)
	if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
		return nil, fmt.Errorf("api versions: %w", err)
	}
	out := make(map[int16][2]int16, len(r.ApiKeys))
	for _, k := range r.ApiKeys {
		out[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	return out, nil
}

// authenticate runs the SASL handshake and exchange.
func (p *probe) authenticate(addr string, s SASL) error {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = s.Mechanism
	p.version(hs)
	hs.SetVersion(max(hs.GetVersion(), 1)) // v1: the exchange goes in SaslAuthenticate requests
	resp, err := p.roundTrip(hs)
	if err != nil {
		if closedOrGarbled(err) {
			return &ConfigError{Broker: addr, Cause: "the broker closed the connection at the SASL handshake: the listener has no SASL (drop --kafka-sasl-mechanism, or use the SASL listener's port)"}
		}
		return fmt.Errorf("sasl handshake: %w", err)
	}
	switch r := resp.(*kmsg.SASLHandshakeResponse); r.ErrorCode {
	case 0:
	case kerr.UnsupportedSaslMechanism.Code:
		return &ConfigError{Broker: addr, Cause: fmt.Sprintf("the broker does not offer SASL mechanism %s (it offers %s)", s.Mechanism, strings.Join(r.SupportedMechanisms, ", "))}
	case kerr.IllegalSaslState.Code:
		return &ConfigError{Broker: addr, Cause: "the listener does not do SASL (drop --kafka-sasl-mechanism, or use the SASL listener's port)"}
	default:
		return fmt.Errorf("sasl handshake: %w", kerr.ErrorForCode(r.ErrorCode))
	}

	refused := &ConfigError{Broker: addr, Cause: fmt.Sprintf("the broker refused the SASL %s credentials of user %q: wrong username or password, or no such user on this listener", s.Mechanism, s.Username)}
	send := func(auth []byte) ([]byte, error) {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.SASLAuthBytes = auth
		p.version(req)
		resp, err := p.roundTrip(req)
		if err != nil {
			if closedOrGarbled(err) {
				// Kafka answers bad credentials with an error code;
				// some brokers (kfake) close the connection instead.
				return nil, refused
			}
			return nil, fmt.Errorf("sasl authenticate: %w", err)
		}
		r := resp.(*kmsg.SASLAuthenticateResponse)
		switch r.ErrorCode {
		case 0:
			return r.SASLAuthBytes, nil
		case kerr.SaslAuthenticationFailed.Code:
			return nil, refused
		}
		return nil, fmt.Errorf("sasl authenticate: %w", kerr.ErrorForCode(r.ErrorCode))
	}

	hash, isSCRAM := scramHash(s.Mechanism)
	if !isSCRAM { // PLAIN
		_, err := send([]byte("\x00" + s.Username + "\x00" + s.Password.Reveal()))
		return err
	}
	cl, err := hash.NewClient(s.Username, s.Password.Reveal(), "")
	if err != nil {
		return &ConfigError{Broker: addr, Cause: "the SASL username or password cannot be used with SCRAM", Err: err}
	}
	conv := cl.NewConversation()
	challenge := ""
	for !conv.Done() {
		msg, err := conv.Step(challenge)
		if err != nil { // the broker's final message refuses the proof, or does not prove it knows the password
			return refused
		}
		if conv.Done() {
			break
		}
		out, err := send([]byte(msg))
		if err != nil {
			return err
		}
		challenge = string(out)
	}
	return nil
}

// metadata sends a first request that needs authentication: a metadata
// request for no topic.
func (p *probe) metadata() error {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	p.version(req)
	if req.GetVersion() == 0 {
		req.Topics = nil // version 0 reads an empty list as every topic
	}
	_, err := p.roundTrip(req)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	return nil
}
