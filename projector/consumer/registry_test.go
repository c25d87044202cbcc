package consumer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/projectiontest"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// TestNewProjectionIsBuiltFromHistory: projections loaded for the first
// time on a database that holds events are built from them while a worker
// that has them goes on applying new events; every event reaches them
// once, none is missed between the build and the batches. An older
// worker, which lacks them, stops at its next batch instead of applying
// events they would miss.
func TestNewProjectionIsBuiltFromHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, 4)
	url := storetest.URL(t)
	old := storetest.Open(t, url) // a binary without the user's projections
	p.st = old
	wl := workload(41, 600)
	half := len(wl.Messages) / 2
	p.produce(wl.Messages[:half])
	r := p.start("old", p.config(true))
	r.wait(t)

	// The new binary: its worker runs while its projections are built.
	p.st = storetest.OpenWith(t, url, projectiontest.Counts{N: "pc"}, projectiontest.PerRun{N: "pr"})
	r2 := p.start("new", p.config(false))
	built := make(chan error, 1)
	var steps int64
	go func() {
		names, err := p.st.BuildProjections(ctx, store.BuildOptions{Progress: func(string, int64, int64) { steps++ }})
		if err == nil && len(names) != 3 {
			err = errors.New("built " + joinNames(names) + ", want workflow_steps, pc and pr")
		}
		built <- err
	}()
	p.produce(wl.Messages[half:])
	select {
	case err := <-built:
		require.NoError(t, err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the build did not finish in 2 minutes")
	}
	waitUntil(t, 2*time.Minute, func() bool { return caughtUp(t, p) })
	r2.stop(t)
	require.Positive(t, steps, "the build reported its progress")
	p.verify()

	status, err := p.st.ProjectionStatus(ctx)
	require.NoError(t, err)
	require.Len(t, status, 4)
	for _, s := range status {
		require.Equal(t, "ready", s.State, s.Name)
		require.Equal(t, int64(wl.Valid), s.EventsApplied, "events applied by %s", s.Name)
	}

	// The old binary now lacks projections the database has.
	require.ErrorIs(t, old.CheckProjections(ctx), model.ErrProjectionNotLoaded)
	extra := workload(42, 20)
	p.produce(extra.Messages)
	p.st = old
	cfg := p.config(false)
	cfg.Owner = "old-again"
	w, err := consumer.NewWorker(cfg, old, testLogger(t, "old-again"))
	require.NoError(t, err)
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = w.Run(runCtx)
	var unknown *store.UnknownProjectionsError
	require.ErrorAs(t, err, &unknown, "the old worker stops")
	require.Equal(t, []string{"pc", "pr"}, unknown.Names)
	require.Zero(t, w.Stats().Events.Load(), "and applies nothing")
}

func joinNames(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}
