package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector"
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
	m := projector.NewMetrics()
	cfg := p.config(true)
	cfg.Owner = "w"
	cfg.Observer = m
	w, err := projector.NewWorker(cfg, p.st, log)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var se *projector.SchemaError
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
