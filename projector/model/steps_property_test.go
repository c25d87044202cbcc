package model

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// The properties of the steps projection are those of the run projection
// (run_property_test.go), with the generator leaning towards step events
// (randomStepMode: several runs, attempts and step ids, steps with and
// without terminal events, ties on timestamps):
//
//  1. ProjectSteps does not depend on the order of its input nor on
//     repeated event_ids (it keeps the first);
//  2. CombineSteps, applied key by key (combineStepSets), is a
//     homomorphism from disjoint union to rows: any split into batches,
//     each projected with ProjectSteps or FoldSteps, combined in any order
//     and tree shape, gives ProjectSteps of the whole set. This is what the
//     store relies on when it merges a batch's partial rows into
//     workflow_steps;
//  3. StepFromEvent(e) is ProjectSteps([e]) (no row for a non-step event).

// combineStepSets merges two sets of step rows, each sorted by key with
// one row per key, into one: CombineSteps(x's, y's) where a key is in
// both, in that operand order. nil is its identity.
func combineStepSets(x, y []Step) []Step {
	out := make([]Step, 0, len(x)+len(y))
	for len(x) > 0 && len(y) > 0 {
		switch c := compareStepKeys(x[0], y[0]); {
		case c < 0:
			out, x = append(out, x[0]), x[1:]
		case c > 0:
			out, y = append(out, y[0]), y[1:]
		default:
			out, x, y = append(out, CombineSteps(x[0], y[0])), x[1:], y[1:]
		}
	}
	out = append(append(out, x...), y...)
	if len(out) == 0 {
		return nil
	}
	return out
}

// addStepEvent folds one event into a set of step rows.
func addStepEvent(set []Step, e Event) []Step {
	s, ok := StepFromEvent(e)
	if !ok {
		return set
	}
	return combineStepSets(set, []Step{s})
}

// foldStepEvents folds events into step rows with CombineSteps, left to
// right.
func foldStepEvents(events []Event) []Step {
	var acc []Step
	for _, e := range events {
		acc = addStepEvent(acc, e)
	}
	return acc
}

// stepRecords wraps events as the records FoldSteps takes.
func stepRecords(events []Event) []*Record {
	recs := make([]*Record, len(events))
	for i, e := range events {
		recs[i] = &Record{Offset: int64(i), Event: e}
	}
	return recs
}

func TestProjectStepsPropertyPermutations(t *testing.T) {
	t.Parallel()
	seed := propertySeed(t)
	r := rand.New(rand.NewPCG(seed, 11))
	for iter := range 400 {
		m := randomStepMode(r)
		events := genEvents(r, 1+r.IntN(6), m)
		want := ProjectSteps(events)
		for _, e := range events {
			s, ok := StepFromEvent(e)
			if !ok {
				require.Empty(t, ProjectSteps([]Event{e}), "seed %d iter %d: %s is no step", seed, iter, e.EventType)
				continue
			}
			require.Equal(t, ProjectSteps([]Event{e}), []Step{s}, "seed %d iter %d: StepFromEvent", seed, iter)
		}
		perm := slices.Clone(events)
		permutations(perm, func(p []Event) {
			if got := ProjectSteps(p); !slices.Equal(want, got) {
				require.Equal(t, want, got, "seed %d iter %d: ProjectSteps of permutation %v", seed, iter, p)
			}
			if got := foldStepEvents(p); !slices.Equal(want, got) {
				require.Equal(t, want, got, "seed %d iter %d: fold of permutation %v", seed, iter, p)
			}
		})
	}
}

func TestProjectStepsPropertyBatchesCombine(t *testing.T) {
	t.Parallel()
	seed := propertySeed(t)
	r := rand.New(rand.NewPCG(seed, 12))
	for iter := range 600 {
		m := randomStepMode(r)
		events := genEvents(r, 1+r.IntN(60), m)
		want := ProjectSteps(events)
		msg := func(what string) []any {
			return []any{"seed %d iter %d mode %+v: %s", seed, iter, m, what}
		}
		require.True(t, slices.IsSortedFunc(want, compareStepKeys), msg("sorted")...)
		require.Equal(t, want, FoldSteps(stepRecords(events)), msg("FoldSteps")...)

		// Order does not matter.
		shuffled := slices.Clone(events)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		require.Equal(t, want, ProjectSteps(shuffled), msg("shuffled")...)
		require.Equal(t, want, FoldSteps(stepRecords(shuffled)), msg("FoldSteps shuffled")...)

		// Exact duplicates do not matter.
		dup := slices.Clone(events)
		for range r.IntN(2 * len(events)) {
			dup = append(dup, events[r.IntN(len(events))])
		}
		r.Shuffle(len(dup), func(i, j int) { dup[i], dup[j] = dup[j], dup[i] })
		require.Equal(t, want, ProjectSteps(dup), msg("duplicated")...)

		// A repeated event_id after the first occurrence is ignored, even
		// when its content (type, step, attempt) differs.
		conflicting := slices.Clone(events)
		for range r.IntN(len(events) + 1) {
			e := events[r.IntN(len(events))]
			other := genEvents(r, 1, randomStepMode(r))[0]
			other.EventID = e.EventID
			conflicting = append(conflicting, other)
		}
		require.Equal(t, want, ProjectSteps(conflicting), msg("conflicting duplicates")...)

		// Any split into batches, combined in any order and tree shape.
		for range 4 {
			batches := randomBatches(r, shuffled)
			sets := make([][]Step, 0, len(batches)+1)
			for _, batch := range batches {
				switch r.IntN(3) {
				case 0:
					sets = append(sets, ProjectSteps(batch))
				case 1:
					sets = append(sets, FoldSteps(stepRecords(batch)))
				default:
					sets = append(sets, foldStepEvents(batch))
				}
			}
			if r.IntN(4) == 0 {
				sets = append(sets, nil) // the identity, anywhere
			}
			r.Shuffle(len(sets), func(i, j int) { sets[i], sets[j] = sets[j], sets[i] })
			require.Equal(t, want, combineTree(r, sets, combineStepSets), msg("batches combined")...)
		}

		// Commutativity, associativity and identity of CombineSteps itself
		// on three disjoint parts of one step's events.
		if len(want) > 0 {
			k := want[r.IntN(len(want))]
			var of []Event
			for _, e := range shuffled {
				if s, ok := StepFromEvent(e); ok && s.key() == k.key() {
					of = append(of, e)
				}
			}
			require.Equal(t, []Step{k}, ProjectSteps(of), msg("one step")...)
			if len(of) >= 3 {
				i := 1 + r.IntN(len(of)-2)
				j := i + 1 + r.IntN(len(of)-i-1)
				a, b, c := ProjectSteps(of[:i])[0], ProjectSteps(of[i:j])[0], ProjectSteps(of[j:])[0]
				require.Equal(t, CombineSteps(a, b), CombineSteps(b, a), msg("commutative")...)
				require.Equal(t, CombineSteps(CombineSteps(a, b), c), CombineSteps(a, CombineSteps(b, c)), msg("associative")...)
				require.Equal(t, k, CombineSteps(CombineSteps(a, b), c), msg("three parts")...)
				require.Equal(t, a, CombineSteps(a, Step{}), msg("identity")...)
				require.Equal(t, a, CombineSteps(Step{}, a), msg("identity")...)
			}
		}
	}
}

// FuzzCombineSteps checks that folding distinct events into step rows with
// CombineSteps (key by key), batched and bracketed as the fuzz bytes say
// (the encoding of fuzzEvents), equals ProjectSteps of all the events.
func FuzzCombineSteps(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		t.Parallel()
		events, got := fuzzEvents(data, addStepEvent, combineStepSets)
		want := ProjectSteps(events)
		if !slices.Equal(want, got) {
			require.Equal(t, want, got, "events %+v", events)
		}
	})
}
