package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/store"
)

// The HTTP endpoint of `projector run --http-addr`: /metrics (Prometheus),
// /healthz (the process answers) and /readyz (PostgreSQL and the broker
// answer, and the worker is not stuck retrying).

const (
	// probeTimeout bounds each readiness check.
	probeTimeout = 3 * time.Second
	// readyRetryLimit: a worker that has retried transient failures for
	// this long without any progress (no session, claim or commit) is not
	// ready.
	readyRetryLimit = 30 * time.Second
	// httpShutdownTimeout is how long requests in flight may take to finish
	// once the worker stops.
	httpShutdownTimeout = 5 * time.Second
)

// listenHTTP listens on addr (host:port; an empty host means every
// interface, port 0 any free port). An address that does not parse is a
// usage error.
func listenHTTP(addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usagef("--http-addr: %q is not host:port (like :8080 or 127.0.0.1:8080)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	return ln, nil
}

// newRegistry returns a registry with the Go runtime's and the process's
// metrics, the worker's, and more.
func newRegistry(m *consumer.Metrics, more ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m,
	)
	reg.MustRegister(more...)
	return reg
}

// readyCheck is one condition of readiness.
type readyCheck struct {
	name  string
	check func(context.Context) error
}

// newHTTPHandler serves /metrics from g, /healthz, /readyz from checks,
// and Go's profiles under /debug/pprof/ (heap, CPU, goroutines), for
// looking at a worker in production.
func newHTTPHandler(g prometheus.Gatherer, checks []readyCheck) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		errs := make([]error, len(checks))
		var wg sync.WaitGroup
		for i, c := range checks {
			wg.Go(func() { errs[i] = c.check(ctx) })
		}
		wg.Wait()
		var b strings.Builder
		status := http.StatusOK
		for i, c := range checks {
			if errs[i] != nil {
				status = http.StatusServiceUnavailable
				fmt.Fprintf(&b, "%s: %s\n", c.name, oneLine(errs[i]))
			} else {
				fmt.Fprintf(&b, "%s: ok\n", c.name)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(b.String()))
	})
	return mux
}

// databaseCheck pings PostgreSQL through st, a pool of its own, so that
// a pool busy with batches does not make the worker look unready.
func databaseCheck(st *store.Store) readyCheck {
	return readyCheck{"postgresql", func(ctx context.Context) error {
		if err := st.Ping(ctx); err != nil {
			return fmt.Errorf("unreachable: %w", err)
		}
		return nil
	}}
}

// kafkaCheck asks the brokers for the metadata of the topics, on a
// look-up client of its own, connected at the first check and again after
// a check that failed.
func kafkaCheck(cfg consumer.Config) readyCheck {
	var mu sync.Mutex
	var c *consumer.Cluster
	check := func() error {
		mu.Lock()
		defer mu.Unlock()
		if c == nil {
			var err error
			if c, err = consumer.DialCluster(cfg); err != nil {
				return fmt.Errorf("unreachable: %w", err)
			}
		}
		if err := c.CheckTopics(cfg.Topics); err != nil {
			_ = c.Close()
			c = nil
			return err
		}
		return nil
	}
	return readyCheck{"kafka", func(ctx context.Context) error {
		// sarama's calls take no context; their own timeouts bound them,
		// and the answer is dropped when ctx ends first.
		done := make(chan error, 1)
		go func() { done <- check() }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return fmt.Errorf("no answer from %s: %w", strings.Join(cfg.Brokers, ","), ctx.Err())
		}
	}}
}

// workerCheck fails at once while the worker retries against a broken
// schema or a failing projection, and while it has been retrying other transient failures for
// longer than limit without progress.
func workerCheck(w *consumer.Worker, limit time.Duration) readyCheck {
	return readyCheck{"worker", func(context.Context) error {
		if err := w.Stuck(); err != nil {
			return err
		}
		since := w.RetryingSince()
		if since.IsZero() {
			return nil
		}
		if d := time.Since(since); d > limit {
			return fmt.Errorf("retrying transient failures for %s without progress (see the log's warnings)", d.Round(time.Second))
		}
		return nil
	}}
}

// serveHTTP serves h on ln until ctx ends, then shuts the server down,
// giving requests in flight httpShutdownTimeout to finish.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, log logrus.FieldLogger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.WithField("addr", ln.Addr().String()).Info("serving /metrics, /healthz and /readyz")
	select {
	case err := <-served:
		return fmt.Errorf("http server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server on %s: %w", ln.Addr(), err)
	}
	return nil
}
