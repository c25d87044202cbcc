package model

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The properties checked here are those that make the projection safe to
// compute incrementally: the row is a function of the *set* of distinct
// events (contract §3), so
//
//  1. Project does not depend on the order of its input (every permutation
//     of small sets, random shuffles of larger ones) nor on repeated
//     event_ids (it keeps the first);
//  2. Combine is a homomorphism from disjoint union to rows: splitting the
//     set into batches in any way, projecting each batch, and combining the
//     batch rows in any order and any tree shape gives Project of the whole
//     set. This is what the worker relies on when it merges a batch's
//     partial row into the stored row, whatever the batching, and it also
//     checks the claim that Status (with FinishedAt) is enough hidden state
//     to combine running/queued: a generator mode without terminal events
//     stresses exactly that path;
//  3. FromEvent(e) == Project([e]), the base case of the fold.
//
// Project is the literal reference implementation, so agreement with it is
// agreement with the contract. Timestamps are drawn from a handful of values
// so that ties are frequent, and event ids from a small alphabet of ASCII
// and multi-byte pieces so that tie-breaks exercise bytewise order.

// propertySeed is the seed of the property tests: $PROJECTOR_PROPERTY_SEED
// when set (to replay a failure), else random. It is logged.
func propertySeed(t testing.TB) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("PROJECTOR_PROPERTY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "PROJECTOR_PROPERTY_SEED")
		seed = v
	}
	t.Logf("seed %d (replay with PROJECTOR_PROPERTY_SEED=%d)", seed, seed)
	return seed
}

var (
	genTypes = []string{
		TypeRunQueued, TypeRunStarted, TypeRunSucceeded, TypeRunFailed, TypeRunCancelled,
		TypeStepStarted, TypeStepSucceeded, TypeStepFailed, TypeStepSkipped,
		"run.paused", "Run.Failed", "step.retried", "custom",
	}
	genNonTerminalTypes = slices.DeleteFunc(slices.Clone(genTypes), func(typ string) bool {
		_, terminal := TerminalStatus(typ)
		return terminal
	})
	// Types for the steps projection: mostly the four known step types,
	// with a few that belong to no step.
	genStepHeavyTypes = []string{
		TypeStepStarted, TypeStepSucceeded, TypeStepFailed, TypeStepSkipped,
		TypeStepStarted, TypeStepFailed, TypeRunStarted, TypeRunFailed, "step.retried",
	}
	// Step ids: few, so that steps get several events, and ordered
	// bytewise differently from their case-folded order.
	genStepIDs = []string{"build", "Build", "test", "日本", "b"}
	// Pieces of event ids: ASCII of both cases, prefixes, and multi-byte
	// UTF-8 whose bytewise order differs from UTF-16 order.
	genIDPieces = []string{"a", "B", "b", "A", "0", "é", "日", "😀", "\uFFFD", "e\u0301"}
	genSources  = []string{"github-actions", "airflow", "argo"}
	genErrors   = []string{"", "boom", "exit code 1", "日本"}
)

// genMode selects what the event generator leans towards.
type genMode struct {
	noTerminals  bool // only non-terminal types: stresses running vs queued
	sameAttempt  bool // every event of attempt 1: stresses equal-attempt merges
	maxAttempt   int32
	tsSlots      int // distinct timestamps to draw from: few means many ties
	extraErrorOn bool

	// For the steps projection (zero: as for runs).
	stepHeavy       bool // mostly step.* types (genStepHeavyTypes)
	noStepTerminals bool // no step.succeeded, step.failed, step.skipped: steps stay running
	stepIDs         int  // distinct step ids (of genStepIDs); 0 means 3
	runs            int  // distinct workflow_run_ids; 0 or 1 means one run, "run-p"
}

func randomMode(r *rand.Rand) genMode {
	m := genMode{
		noTerminals:  r.IntN(3) == 0,
		sameAttempt:  r.IntN(4) == 0,
		maxAttempt:   3,
		tsSlots:      1 + r.IntN(8),
		extraErrorOn: r.IntN(2) == 0,
	}
	if m.sameAttempt {
		m.maxAttempt = 1
	}
	return m
}

// randomStepMode is randomMode leaning towards the steps projection:
// step-heavy types, several runs, steps with and without terminals.
func randomStepMode(r *rand.Rand) genMode {
	m := randomMode(r)
	m.stepHeavy = r.IntN(4) != 0
	m.noStepTerminals = r.IntN(4) == 0
	m.stepIDs = 1 + r.IntN(len(genStepIDs))
	m.runs = 1 + r.IntN(3)
	return m
}

// genType draws an event type as the mode says.
func genType(r *rand.Rand, m genMode) string {
	types := genTypes
	switch {
	case m.stepHeavy:
		types = genStepHeavyTypes
	case m.noTerminals:
		types = genNonTerminalTypes
	}
	for {
		typ := types[r.IntN(len(types))]
		if _, terminal := TerminalStatus(typ); terminal && m.noTerminals {
			continue
		}
		if _, terminal := stepTerminalStatus(typ); terminal && m.noStepTerminals {
			continue
		}
		return typ
	}
}

// genEvents returns n events with distinct event ids, of one run unless
// m.runs says more.
func genEvents(r *rand.Rand, n int, m genMode) []Event {
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	stepIDs := genStepIDs[:3]
	if m.stepIDs > 0 {
		stepIDs = genStepIDs[:m.stepIDs]
	}
	seen := make(map[string]bool, n)
	events := make([]Event, 0, n)
	for i := range n {
		var id string
		for try := 0; ; try++ {
			id = ""
			for range 1 + r.IntN(3) {
				id += genIDPieces[r.IntN(len(genIDPieces))]
			}
			if try > 20 {
				id += "#" + strconv.Itoa(i)
			}
			if !seen[id] {
				break
			}
		}
		seen[id] = true
		slot := r.IntN(m.tsSlots)
		// Slots are 1 µs or 1 ms apart, so ties and near-ties both occur.
		at := base.Add(time.Duration(slot/2)*time.Millisecond + time.Duration(slot%2)*time.Microsecond)
		typ := genType(r, m)
		e := Event{
			EventID:       id,
			EventType:     typ,
			Source:        genSources[r.IntN(len(genSources))],
			WorkflowID:    "wf-" + id, // distinct, so a wrong "latest" shows
			WorkflowRunID: "run-p",
			Timestamp:     at,
			Attempt:       1 + r.Int32N(m.maxAttempt),
		}
		if m.runs > 1 {
			e.WorkflowRunID = "run-" + strconv.Itoa(r.IntN(m.runs))
		}
		if IsStep(typ) {
			e.StepID = stepIDs[r.IntN(len(stepIDs))]
		}
		if (typ == TypeRunFailed || typ == TypeStepFailed || m.extraErrorOn) && r.IntN(2) == 0 {
			e.Error, e.HasError = genErrors[r.IntN(len(genErrors))], true
		}
		events = append(events, e)
	}
	return events
}

// foldEvents folds FromEvent over events with Combine, left to right.
func foldEvents(events []Event) Run {
	var acc Run
	for _, e := range events {
		acc = Combine(acc, FromEvent(e))
	}
	return acc
}

// combineTree combines parts with combine in a random binary tree shape,
// randomly swapping the operands at each node; no parts give the zero T
// (the identity).
func combineTree[T any](r *rand.Rand, parts []T, combine func(x, y T) T) T {
	switch len(parts) {
	case 0:
		var zero T
		return zero
	case 1:
		return parts[0]
	}
	k := 1 + r.IntN(len(parts)-1)
	left, right := combineTree(r, parts[:k], combine), combineTree(r, parts[k:], combine)
	if r.IntN(2) == 0 {
		return combine(right, left)
	}
	return combine(left, right)
}

// randomBatches cuts events (in their order) into 1..len(events) non-empty
// batches of random sizes.
func randomBatches(r *rand.Rand, events []Event) [][]Event {
	var batches [][]Event
	for rest := events; len(rest) > 0; {
		k := 1 + r.IntN(len(rest))
		if r.IntN(3) == 0 {
			k = 1 + r.IntN(min(3, len(rest)))
		}
		batches = append(batches, rest[:k])
		rest = rest[k:]
	}
	return batches
}

// permutations calls f with every permutation of s (Heap's algorithm), in
// place.
func permutations(s []Event, f func([]Event)) {
	c := make([]int, len(s))
	f(s)
	for i := 1; i < len(s); {
		if c[i] < i {
			if i%2 == 0 {
				s[0], s[i] = s[i], s[0]
			} else {
				s[c[i]], s[i] = s[i], s[c[i]]
			}
			f(s)
			c[i]++
			i = 1
		} else {
			c[i] = 0
			i++
		}
	}
}

func TestProjectPropertyPermutations(t *testing.T) {
	t.Parallel()
	seed := propertySeed(t)
	r := rand.New(rand.NewPCG(seed, 1))
	for iter := range 400 {
		m := randomMode(r)
		events := genEvents(r, 1+r.IntN(6), m)
		want := Project(events)
		for _, e := range events {
			require.Equal(t, Project([]Event{e}), FromEvent(e), "seed %d iter %d: FromEvent", seed, iter)
		}
		count := 0
		perm := slices.Clone(events)
		permutations(perm, func(p []Event) {
			count++
			if got := Project(p); !runsEqual(want, got) {
				require.Equal(t, want, got, "seed %d iter %d: Project of permutation %v", seed, iter, p)
			}
			if got := foldEvents(p); !runsEqual(want, got) {
				require.Equal(t, want, got, "seed %d iter %d: fold of permutation %v", seed, iter, p)
			}
		})
		require.Equal(t, factorial(len(events)), count)
	}
}

func TestProjectPropertyBatchesCombine(t *testing.T) {
	t.Parallel()
	seed := propertySeed(t)
	r := rand.New(rand.NewPCG(seed, 2))
	for iter := range 600 {
		m := randomMode(r)
		events := genEvents(r, 1+r.IntN(60), m)
		want := Project(events)
		msg := func(what string) []any {
			return []any{"seed %d iter %d mode %+v: %s", seed, iter, m, what}
		}

		// Order does not matter.
		shuffled := slices.Clone(events)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		require.Equal(t, want, Project(shuffled), msg("shuffled")...)

		// Exact duplicates do not matter.
		dup := slices.Clone(events)
		for range r.IntN(2 * len(events)) {
			dup = append(dup, events[r.IntN(len(events))])
		}
		r.Shuffle(len(dup), func(i, j int) { dup[i], dup[j] = dup[j], dup[i] })
		require.Equal(t, want, Project(dup), msg("duplicated")...)

		// A repeated event_id after the first occurrence is ignored, even
		// when its content differs.
		conflicting := slices.Clone(events)
		for range r.IntN(len(events) + 1) {
			e := events[r.IntN(len(events))]
			other := genEvents(r, 1, randomMode(r))[0]
			other.EventID = e.EventID
			conflicting = append(conflicting, other)
		}
		require.Equal(t, want, Project(conflicting), msg("conflicting duplicates")...)

		// Any split into batches, combined in any order and tree shape.
		for range 4 {
			batches := randomBatches(r, shuffled)
			runs := make([]Run, 0, len(batches)+2)
			for _, batch := range batches {
				if r.IntN(2) == 0 {
					runs = append(runs, Project(batch))
				} else {
					runs = append(runs, foldEvents(batch))
				}
			}
			if r.IntN(4) == 0 {
				runs = append(runs, Run{}) // the identity, anywhere
			}
			r.Shuffle(len(runs), func(i, j int) { runs[i], runs[j] = runs[j], runs[i] })
			require.Equal(t, want, combineTree(r, runs, Combine), msg("batches combined")...)
		}

		// Commutativity and associativity on three disjoint parts.
		if len(shuffled) >= 3 {
			i := 1 + r.IntN(len(shuffled)-2)
			j := i + 1 + r.IntN(len(shuffled)-i-1)
			a, b, c := Project(shuffled[:i]), Project(shuffled[i:j]), Project(shuffled[j:])
			require.Equal(t, Combine(a, b), Combine(b, a), msg("commutative")...)
			require.Equal(t, Combine(Combine(a, b), c), Combine(a, Combine(b, c)), msg("associative")...)
			require.Equal(t, want, Combine(Combine(a, b), c), msg("three parts")...)
		}
	}
}

// runsEqual is a cheap equality for the hot loops; require.Equal reports
// the difference when it fails.
func runsEqual(a, b Run) bool { return a.Equal(b) }

func factorial(n int) int {
	f := 1
	for i := 2; i <= n; i++ {
		f *= i
	}
	return f
}

// fuzzEvents decodes fuzz bytes into events, 4 bytes per event:
//
//	b0: type (known and unknown)
//	b1: bits 0-1 attempt (0..3: 0 is out of contract but must still
//	    combine), bit 2 HasError, bit 3 ends a batch after this event,
//	    bit 4 reduces the two topmost batch rows on the stack, bit 5 swaps
//	    the operands of that reduction, bits 6-7 the step id (step.* types)
//	b2: timestamp: few values, 1 µs and 1 ms apart
//	b3: event id from one or two pieces (so ids repeat)
//
// It returns the events (with repeated ids, as received) and the batch
// row obtained by the stack machine driven by the control bits: each
// distinct event is folded into the current batch with add, and batches
// are reduced with combine (zero T is the empty batch).
func fuzzEvents[T any](data []byte, add func(T, Event) T, combine func(x, y T) T) ([]Event, T) {
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var (
		events []Event
		seen   = map[string]bool{}
		stack  []T
		batch  T
		zero   T
	)
	for len(data) >= 4 {
		b0, b1, b2, b3 := data[0], data[1], data[2], data[3]
		data = data[4:]
		typ := genTypes[int(b0)%len(genTypes)]
		id := genIDPieces[int(b3)%len(genIDPieces)]
		if int(b3) >= len(genIDPieces) {
			id += genIDPieces[(int(b3)/len(genIDPieces))%len(genIDPieces)]
		}
		e := Event{
			EventID:       id,
			EventType:     typ,
			Source:        genSources[int(b0>>4)%len(genSources)],
			WorkflowID:    "wf-" + id + "-" + strconv.Itoa(int(b0)),
			WorkflowRunID: "run-f",
			Timestamp: base.Add(time.Duration(b2&7)*time.Millisecond +
				time.Duration((b2>>3)&3)*time.Microsecond),
			Attempt: int32(b1 & 3),
		}
		if IsStep(typ) {
			e.StepID = genStepIDs[int(b1>>6)]
		}
		if b1&4 != 0 {
			e.Error, e.HasError = genErrors[int(b2>>5)%len(genErrors)], true
		}
		events = append(events, e)
		// The batches only receive distinct events: the first occurrence,
		// as Project keeps.
		if !seen[id] {
			seen[id] = true
			batch = add(batch, e)
		}
		if b1&8 != 0 {
			stack = append(stack, batch)
			batch = zero
		}
		if b1&16 != 0 && len(stack) >= 2 {
			x, y := stack[len(stack)-2], stack[len(stack)-1]
			stack = stack[:len(stack)-2]
			if b1&32 != 0 {
				x, y = y, x
			}
			stack = append(stack, combine(x, y))
		}
	}
	stack = append(stack, batch)
	acc := zero
	for i := len(stack) - 1; i >= 0; i-- {
		acc = combine(stack[i], acc)
	}
	return events, acc
}

// fuzzSeeds are the seed inputs of the Combine fuzz targets.
func fuzzSeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0})
	f.Add([]byte{
		0, 1, 0, 1, // run.queued a1
		1, 1, 1, 2, // run.started
		6, 9, 2, 3, // step.succeeded, end batch
		3, 5, 3, 4, // run.failed with error
		2, 1 | 8 | 16, 3, 5, // run.succeeded tie, end batch, reduce
		10, 2, 0, 6, // unknown type attempt 2
		4, 2 | 8 | 16 | 32, 9, 7, // cancelled attempt 2, reduce swapped
	})
	f.Add([]byte{2, 1, 7, 1, 3, 1 | 4 | 8, 7, 2, 4, 1, 7, 3, 2, 1, 7, 1})
	f.Add([]byte{
		5, 1, 0, 1, // step.started a1 "build"
		7, 1 | 4 | 8, 2, 2, // step.failed with error, end batch
		6, 1 | 64, 2, 3, // step.succeeded "Build"
		8, 1 | 8 | 16, 2, 4, // step.skipped tie, end batch, reduce
		7, 1 | 4 | 64 | 8 | 16 | 32, 2, 5, // step.failed "Build" tie, reduce swapped
		5, 2 | 128, 1, 6, // step.started a2 "test"
	})
}

// FuzzCombine checks that folding distinct events with Combine, batched and
// bracketed as the fuzz bytes say, equals Project of all the events.
func FuzzCombine(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		t.Parallel()
		events, got := fuzzEvents(data, func(r Run, e Event) Run { return Combine(r, FromEvent(e)) }, Combine)
		want := Project(events)
		if !runsEqual(want, got) {
			require.Equal(t, want, got, "events %+v", events)
		}
	})
}
