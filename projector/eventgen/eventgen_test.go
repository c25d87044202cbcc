package eventgen

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
)

func defaultConfig(seed uint64, runs int) Config {
	return Config{
		Seed:          seed,
		Runs:          runs,
		Topic:         "workflow-events",
		DuplicateRate: 0.05,
		ShuffleRate:   0.1,
		MalformedRate: 0.01,
		RetryRate:     0.1,
		UnkeyedRate:   0.05,
	}
}

var allReasons = []string{
	model.ReasonTooLarge, model.ReasonInvalidJSON, model.ReasonNotObject,
	model.ReasonMissingField, model.ReasonInvalidField,
	model.ReasonUnsupportedSchemaVersion, model.ReasonUnstorable,
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	a := Generate(defaultConfig(42, 300))
	b := Generate(defaultConfig(42, 300))
	require.Equal(t, a, b)

	c := Generate(defaultConfig(43, 300))
	require.NotEqual(t, a.Messages, c.Messages)
	require.NotEqual(t, a.Messages[0].Value, c.Messages[0].Value)
}

// checked is what check found by decoding a workload.
type checked struct {
	events   []model.Event            // the first of each event_id, in order
	byRun    map[string][]model.Event // distinct events per run
	reasons  map[string]int
	keyed    int // messages whose key is their run id
	nilKeys  int
	headered int
}

// check decodes every message of a workload and verifies it against its
// label: a first valid event, an exact duplicate of an earlier one, or a
// dead letter with exactly the expected reason.
func check(t *testing.T, w Workload, labels []string) checked {
	t.Helper()
	require.Len(t, labels, len(w.Messages))
	require.Len(t, w.Messages, w.Valid+w.Duplicates+w.Invalid)

	c := checked{byRun: map[string][]model.Event{}, reasons: map[string]int{}}
	first := map[string][]byte{}
	for i, m := range w.Messages {
		require.Zero(t, m.Offset)
		if len(m.Headers) > 0 {
			c.headered++
		}
		ev, err := model.Decode(m.Value)
		switch labels[i] {
		case "":
			require.NoError(t, err, "message %d: %s", i, m.Value)
			_, seen := first[ev.EventID]
			require.False(t, seen, "message %d: event_id %q repeated with other bytes", i, ev.EventID)
			first[ev.EventID] = m.Value
			c.events = append(c.events, ev)
			c.byRun[ev.WorkflowRunID] = append(c.byRun[ev.WorkflowRunID], ev)
		case labelDuplicate:
			require.NoError(t, err, "message %d: %s", i, m.Value)
			orig, seen := first[ev.EventID]
			require.True(t, seen, "message %d: duplicate before its original", i)
			require.Equal(t, orig, m.Value)
		default:
			require.Error(t, err, "message %d should be %s: %s", i, labels[i], m.Value)
			var de *model.DecodeError
			require.ErrorAs(t, err, &de)
			require.Equal(t, labels[i], de.Reason, "message %d (%v): %.300s", i, err, m.Value)
			if de.Reason == model.ReasonTooLarge {
				require.Greater(t, len(m.Value), model.MaxValueBytes)
				require.Less(t, len(m.Value), model.MaxValueBytes+4096)
			} else {
				require.LessOrEqual(t, len(m.Value), model.MaxValueBytes)
			}
			c.reasons[de.Reason]++
		}
		if labels[i] == "" || labels[i] == labelDuplicate {
			switch {
			case m.Key == nil:
				c.nilKeys++
			case string(m.Key) == ev.WorkflowRunID:
				c.keyed++
			}
		}
	}
	require.Len(t, first, w.Valid, "distinct event_ids")
	require.Equal(t, w.Reasons, c.reasons)
	sum := 0
	for _, n := range w.Reasons {
		sum += n
	}
	require.Equal(t, w.Invalid, sum)
	return c
}

func TestWorkload(t *testing.T) {
	t.Parallel()
	const runs = 1000
	w, labels := generate(defaultConfig(7, runs))
	c := check(t, w, labels)

	require.Len(t, c.byRun, runs, "every run has a valid event")
	require.InDelta(t, 0.05*float64(w.Valid), float64(w.Duplicates), 1)
	require.InDelta(t, 0.01*float64(w.Valid), float64(w.Invalid), 1)
	for _, r := range allReasons {
		require.Positive(t, w.Reasons[r], "reason %s", r)
	}
	require.Equal(t, 1, w.Reasons[model.ReasonTooLarge])

	// Keys: mostly the run id, some nil, some random.
	valid := w.Valid + w.Duplicates
	require.Greater(t, c.keyed, valid*9/10)
	require.Positive(t, c.nilKeys)
	require.Less(t, c.keyed+c.nilKeys, valid)
	require.Positive(t, c.headered)

	// The projections cover every status, re-runs and errors.
	statuses := map[string]int{}
	attempts := map[int32]int{}
	var withError, outOfOrder, unknown, withSteps int
	for id, evs := range c.byRun {
		run := model.Project(evs)
		require.Equal(t, id, run.WorkflowRunID)
		statuses[run.Status]++
		attempts[run.Attempt]++
		if run.Error.Valid {
			withError++
		}
		if run.StepsSucceeded > 0 {
			withSteps++
		}
		if !slices.IsSortedFunc(evs, func(a, b model.Event) int { return a.Timestamp.Compare(b.Timestamp) }) {
			outOfOrder++
		}
		for _, e := range evs {
			if !model.IsStep(e.EventType) && !model.SignalsRunning(e.EventType) {
				if _, term := model.TerminalStatus(e.EventType); !term && e.EventType != model.TypeRunQueued {
					unknown++
				}
			}
		}
	}
	t.Logf("messages=%d valid=%d duplicates=%d invalid=%d reasons=%v", len(w.Messages), w.Valid, w.Duplicates, w.Invalid, w.Reasons)
	t.Logf("statuses=%v attempts=%v errors=%d out-of-order runs=%d unknown-type events=%d",
		statuses, attempts, withError, outOfOrder, unknown)
	for _, s := range []string{model.StatusQueued, model.StatusRunning, model.StatusSucceeded,
		model.StatusFailed, model.StatusCancelled} {
		require.Positive(t, statuses[s], "status %s", s)
	}
	require.Greater(t, statuses[model.StatusSucceeded], runs/2)
	require.Positive(t, attempts[2])
	require.Positive(t, attempts[3])
	require.Positive(t, withError)
	require.Less(t, withError, statuses[model.StatusFailed], "some failures carry no string error")
	require.Positive(t, outOfOrder)
	require.Positive(t, unknown)
	require.Greater(t, withSteps, runs/2)

	// Timestamps carry sub-microsecond digits somewhere (truncation matters).
	var nanos bool
	for _, m := range w.Messages {
		if bytes.Contains(m.Value, []byte(`"source":"argo"`)) {
			nanos = true
			break
		}
	}
	require.True(t, nanos)
}

func TestSmallAndClean(t *testing.T) {
	t.Parallel()
	// No rates: every message is a valid event keyed by its run, once, in
	// the order of its run's timestamps.
	w, labels := generate(Config{Seed: 1, Runs: 50})
	c := check(t, w, labels)
	require.Zero(t, w.Duplicates)
	require.Zero(t, w.Invalid)
	require.Empty(t, w.Reasons)
	require.NotNil(t, w.Reasons)
	require.Len(t, w.Messages, w.Valid)
	require.Equal(t, w.Valid, c.keyed)
	require.Len(t, c.byRun, 50)
	for id, evs := range c.byRun {
		require.True(t, slices.IsSortedFunc(evs, func(a, b model.Event) int { return a.Timestamp.Compare(b.Timestamp) }), id)
		require.Equal(t, int32(1), model.Project(evs).Attempt, id)
	}

	// Below 200 runs there is no too_large message, but every other reason
	// still shows up.
	w, labels = generate(Config{Seed: 2, Runs: 100, MalformedRate: 0.05})
	check(t, w, labels)
	require.Zero(t, w.Reasons[model.ReasonTooLarge])
	for _, r := range allReasons[1:] {
		require.Positive(t, w.Reasons[r], "reason %s", r)
	}

	// At 200 runs a tiny rate still gives one too_large message.
	w, labels = generate(Config{Seed: 3, Runs: 200, MalformedRate: 0.0001})
	check(t, w, labels)
	require.Equal(t, 1, w.Reasons[model.ReasonTooLarge])

	empty := Generate(Config{Seed: 4, MalformedRate: 1, DuplicateRate: 1})
	require.Empty(t, empty.Messages)
	require.Zero(t, empty.Valid)
}

func TestManySeeds(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			cfg := Config{Seed: seed, Runs: 60, DuplicateRate: 0.3, ShuffleRate: 0.5,
				MalformedRate: 0.2, RetryRate: 0.5, UnkeyedRate: 0.3}
			w, labels := generate(cfg)
			c := check(t, w, labels)
			require.Len(t, c.byRun, cfg.Runs)
		})
	}
}

func BenchmarkGenerate(b *testing.B) {
	cfg := defaultConfig(1, 1000)
	b.ReportAllocs()
	for b.Loop() {
		_ = Generate(cfg)
	}
}

// TestUniform: the bench's workload is exactly n valid events, distinct,
// ten a run, each keyed by its run.
func TestUniform(t *testing.T) {
	t.Parallel()
	msgs := Uniform(1005, "u")
	require.Len(t, msgs, 1005)
	ids := map[string]bool{}
	runs := map[string]int{}
	for _, m := range msgs {
		ev, err := model.Decode(m.Value)
		require.NoError(t, err)
		require.False(t, ids[ev.EventID], "event %s repeated", ev.EventID)
		ids[ev.EventID] = true
		require.Equal(t, ev.WorkflowRunID, string(m.Key))
		runs[ev.WorkflowRunID]++
	}
	require.Len(t, runs, 101)
	for id, n := range runs {
		if id != "u-run-00000100" {
			require.Equal(t, 10, n, id)
		}
	}
}
