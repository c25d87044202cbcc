package consumer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// TestMissingTableIsLoudAndHeals: a table renamed away under a worker is
// a broken schema, not a passing glitch. The worker says so at once: an
// error line naming the relation, Worker.Stuck (behind /readyz) and
// projector_schema_errors_total. It retries the batches, storing and
// skipping nothing, and once the table is back it applies every event
// exactly once and is no longer in error.
func TestMissingTableIsLoudAndHeals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 2)
	_, err := p.st.Pool().Exec(ctx, `ALTER TABLE workflow_runs RENAME TO workflow_runs_away`)
	require.NoError(t, err)
	p.produce(workload(31, 40).Messages)

	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.InfoLevel)
	m := consumer.NewMetrics()
	cfg := p.config(true)
	cfg.Owner = "w"
	cfg.Observer = m
	cfg.Middleware = []consumer.Middleware{m.Measure}
	w, err := consumer.NewWorker(cfg, p.st, log)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var se *model.SchemaError
		if !assert.ErrorAs(c, w.Stuck(), &se, "the worker reports the broken schema") {
			return
		}
		assert.Equal(c, "workflow_runs", se.Relation)
		assert.GreaterOrEqual(c, scrape(t, m)["projector_schema_errors_total"]["relation=workflow_runs"], 2.0)
	}, time.Minute, 10*time.Millisecond)

	var loud bool
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel && e.Data["relation"] == "workflow_runs" {
			loud = true
		}
	}
	require.True(t, loud, "an error line names the missing relation")
	var stored int
	require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT count(*) FROM workflow_events`).Scan(&stored))
	require.Zero(t, stored, "a batch that cannot merge its runs stores none of its events")

	_, err = p.st.Pool().Exec(ctx, `ALTER TABLE workflow_runs_away RENAME TO workflow_runs`)
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(2 * time.Minute):
		t.Fatal("worker did not catch up in 2 minutes once the table was back")
	}
	require.NoError(t, w.Stuck(), "progress clears the schema error")
	p.verify()
}

// TestFailingProjectionStallsAndHeals: a user's projection that fails (its
// table dropped after Setup; a CHECK constraint of its table refusing
// every row, a data error of PostgreSQL's) stalls its partitions: nothing
// is stored, no event becomes a dead letter, no offset moves. The worker
// says so: Worker.Stuck is a ProjectionError naming it,
// projector_projection_errors_total counts it, an error line has the
// field projection. Once the projection is mended, the worker applies
// every event exactly once, to every projection.
func TestFailingProjectionStallsAndHeals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		projection string
		// breakIt breaks the projection after Setup; mend mends it.
		breakIt, mend string
		dataError     bool
	}{
		{name: "missing table", projection: "pr", breakIt: `DROP TABLE pr_runs`},
		{name: "check constraint", projection: "pc", dataError: true,
			breakIt: `ALTER TABLE pc_counts ADD CONSTRAINT refuse_all CHECK (events < 0)`,
			mend:    `ALTER TABLE pc_counts DROP CONSTRAINT refuse_all`},
		// A deferred constraint would only fail at COMMIT, where it could
		// not be told from the data's fault: it must still be the
		// projection's error.
		{name: "deferred constraint", projection: "pc", dataError: true,
			breakIt: `CREATE TABLE pc_sources (source text PRIMARY KEY);
				ALTER TABLE pc_counts ADD CONSTRAINT refuse_later FOREIGN KEY (source) REFERENCES pc_sources DEFERRABLE INITIALLY DEFERRED`,
			mend: `ALTER TABLE pc_counts DROP CONSTRAINT refuse_later`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			p := newPipeline(t, 2)
			_, err := p.st.Pool().Exec(ctx, tc.breakIt)
			require.NoError(t, err)
			p.produce(workload(32, 40).Messages)

			log, hook := test.NewNullLogger()
			log.SetLevel(logrus.InfoLevel)
			m := consumer.NewMetrics()
			cfg := p.config(true)
			cfg.Owner = "w"
			cfg.Observer = m
			cfg.Middleware = []consumer.Middleware{m.Measure}
			w, err := consumer.NewWorker(cfg, p.st, log)
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()

			// Checked on every round, on the test's goroutine: the
			// worker stores nothing while the projection fails.
			stalled := func() {
				var events, dead, moved int
				require.NoError(t, p.st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM workflow_events),
					(SELECT count(*) FROM dead_letters), (SELECT count(*) FROM consumer_offsets WHERE next_offset <> 0)`).Scan(&events, &dead, &moved))
				require.Zero(t, events, "a batch whose projection fails stores none of its events")
				require.Zero(t, dead, "a projection's failure makes no dead letter, not even of the invalid messages of its batch")
				require.Zero(t, moved, "no stored offset moves")
			}
			var pe *model.ProjectionError
			waitUntil(t, time.Minute, func() bool {
				stalled()
				return errors.As(w.Stuck(), &pe) &&
					scrape(t, m)["projector_projection_errors_total"]["projection="+tc.projection] >= 2
			}, "the worker never reported the failing projection")
			require.Equal(t, tc.projection, pe.Projection, "Worker.Stuck names the projection")
			require.Equal(t, "apply", pe.Op)
			require.Equal(t, tc.dataError, store.IsDataError(pe), "PostgreSQL refused the projection's rows: %v", pe)
			require.Zero(t, sum(scrape(t, m)["projector_schema_errors_total"]), "a projection's failure is not counted as the schema's")
			var loud bool
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.ErrorLevel && e.Data["projection"] == tc.projection {
					loud = true
				}
			}
			require.True(t, loud, "an error line names the failing projection")
			stalled()

			if tc.mend != "" {
				_, err = p.st.Pool().Exec(ctx, tc.mend)
				require.NoError(t, err)
			} else {
				require.NoError(t, p.st.SetupProjections(ctx), "Setup creates the table again")
			}
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(2 * time.Minute):
				t.Fatal("worker did not catch up in 2 minutes once the projection was mended")
			}
			require.NoError(t, w.Stuck(), "progress clears the projection's error")
			p.verify()
		})
	}
}
