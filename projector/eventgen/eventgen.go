// Package eventgen generates a deterministic, realistic workload of
// workflow events (contract §1-2) for the demo, the end-to-end tests and
// the benchmarks: runs of CI/CD and data pipelines from several sources,
// re-runs, out-of-order delivery, exact duplicates, unkeyed messages and
// malformed messages covering every dead-letter reason.
//
// The same Config always gives the same messages, byte for byte: every
// random choice comes from a PCG seeded with Config.Seed, and the base time
// is derived from the seed, never from the clock.
package eventgen

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/projector-run/projector/projector/model"
)

// Config describes a workload. Rates are fractions in [0, 1]; a negative
// or NaN rate counts as 0.
type Config struct {
	Seed uint64
	// Runs is the number of workflow runs. Every run has at least one valid
	// event, so the projection of the workload has exactly Runs rows.
	Runs int
	// Topic is informational only.
	Topic string
	// DuplicateRate is the fraction of valid messages that are sent again:
	// the same value bytes at a later position, sometimes far later.
	DuplicateRate float64
	// ShuffleRate is the fraction of runs whose events are emitted out of
	// order (and sometimes one of them very late).
	ShuffleRate float64
	// MalformedRate is the number of extra malformed messages, as a
	// fraction of the number of valid events.
	MalformedRate float64
	// RetryRate is the fraction of runs whose first attempt fails or is
	// cancelled and that are re-run (attempt 2, occasionally 3).
	RetryRate float64
	// UnkeyedRate is the fraction of messages sent with a nil or random key
	// instead of the workflow_run_id.
	UnkeyedRate float64
}

// Workload is a generated sequence of Kafka messages and what consuming it
// must produce.
type Workload struct {
	// Messages in production order. Offset is unset (0); Key is the
	// workflow_run_id, except for unkeyed messages.
	Messages []model.Message
	// Valid is the number of distinct valid events (distinct event_ids).
	Valid int
	// Duplicates is the number of valid messages sent a second time (same
	// value bytes): len(Messages) == Valid + Duplicates + Invalid.
	Duplicates int
	// Invalid is the number of malformed messages; each must become one
	// dead letter.
	Invalid int
	// Reasons maps each expected dead-letter reason to its count; the counts
	// add up to Invalid.
	Reasons map[string]int
}

// Generate builds the workload described by cfg.
func Generate(cfg Config) Workload {
	w, _ := generate(cfg)
	return w
}

// labelDuplicate marks a re-sent valid message in the labels generate
// returns; a first valid message has the label "", a malformed one its
// expected dead-letter reason.
const labelDuplicate = "duplicate"

// generate builds the workload and, for the tests, the label of each
// message.
func generate(cfg Config) (Workload, []string) {
	cfg.DuplicateRate = min(rate(cfg.DuplicateRate), 1)
	cfg.ShuffleRate = rate(cfg.ShuffleRate)
	cfg.MalformedRate = rate(cfg.MalformedRate)
	cfg.RetryRate = rate(cfg.RetryRate)
	cfg.UnkeyedRate = rate(cfg.UnkeyedRate)
	cfg.Runs = max(cfg.Runs, 0)

	g := &gen{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed)),
		runIDs:   make(map[string]struct{}, cfg.Runs),
		eventIDs: make(map[string]struct{}, cfg.Runs*16),
		counters: make(map[string]int),
	}
	// A base time somewhere in 2024, to the nanosecond, from the seed.
	g.base = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).
		Add(time.Duration(g.rng.Int64N(365*24*3600)) * time.Second).
		Add(time.Duration(g.rng.Int64N(int64(time.Second))))

	w := Workload{Reasons: make(map[string]int)}
	t := g.base
	for i := range cfg.Runs {
		t = t.Add(time.Millisecond + g.expDur(6*time.Second))
		g.run(i, t)
	}
	w.Valid = len(g.items)

	// Exact duplicates of distinct valid messages, re-sent later.
	nDup := int(math.Round(cfg.DuplicateRate * float64(w.Valid)))
	span := max(g.lastEmit, 1)
	for _, j := range g.rng.Perm(w.Valid)[:nDup] {
		orig := g.items[j]
		var delay int64
		switch x := g.rng.Float64(); {
		case x < 0.7: // a producer retry
			delay = int64(time.Millisecond) + g.rng.Int64N(int64(5*time.Second))
		case x < 0.9: // redelivered after a producer restart
			delay = int64(time.Minute) + g.rng.Int64N(int64(30*time.Minute))
		default: // replayed much later, after an outage
			delay = int64(time.Millisecond) + g.rng.Int64N(span)
		}
		g.items = append(g.items, item{
			emit: orig.emit + delay,
			msg: model.Message{
				Key:     g.key(orig.runID),
				Value:   slices.Clone(orig.msg.Value),
				Headers: orig.msg.Headers,
			},
			label: labelDuplicate,
			runID: orig.runID,
		})
	}
	w.Duplicates = nDup

	// Malformed messages, each near the run it pretends to belong to.
	if cfg.MalformedRate > 0 && len(g.runs) > 0 {
		nBad := int(math.Round(cfg.MalformedRate * float64(w.Valid)))
		nTooLarge := 0
		if cfg.Runs >= 200 {
			nTooLarge = max(1, cfg.Runs/20000)
		}
		for _, reason := range g.reasonPlan(max(nBad-nTooLarge, 0)) {
			g.malformed(reason)
		}
		for range nTooLarge {
			g.malformed(model.ReasonTooLarge)
		}
	}

	for i := range g.items {
		g.items[i].seq = i
	}
	slices.SortFunc(g.items, func(a, b item) int {
		return cmp.Or(cmp.Compare(a.emit, b.emit), cmp.Compare(a.seq, b.seq))
	})
	w.Messages = make([]model.Message, len(g.items))
	labels := make([]string, len(g.items))
	for i, it := range g.items {
		w.Messages[i] = it.msg
		labels[i] = it.label
		if it.label != "" && it.label != labelDuplicate {
			w.Invalid++
			w.Reasons[it.label]++
		}
	}
	return w, labels
}

func rate(r float64) float64 {
	if !(r > 0) { // negative, zero or NaN
		return 0
	}
	return r
}

// item is one message with its production time.
type item struct {
	emit  int64 // nanoseconds after gen.base: the production order
	seq   int   // breaks ties in emit: the order of creation
	msg   model.Message
	label string
	runID string
}

type gen struct {
	cfg      Config
	rng      *rand.Rand
	base     time.Time
	runIDs   map[string]struct{}
	eventIDs map[string]struct{}
	counters map[string]int // Jenkins build numbers per job
	runs     []*run
	items    []item
	lastEmit int64
}

// ---------------------------------------------------------------------
// Sources, workflows and runs.

type workflow struct {
	id    string
	steps []string
}

type source struct {
	name      string
	weight    int
	workflows []workflow
	// layout formats timestamps the way this source does.
	layout string
	// zones the source's timestamps are written in.
	zones []*time.Location
	// attempt1 is the fraction of runs that write "attempt": 1 explicitly.
	attempt1 float64
	// schemaV is the fraction of runs that write "schema_version": 1.
	schemaV float64
	// uuidIDs: event_ids are random UUIDs, else derived from the run id.
	uuidIDs bool
}

var (
	ciSteps = []string{"checkout", "setup-toolchain", "restore-cache", "lint", "compile",
		"unit-tests", "integration-tests", "package", "upload-artifacts"}
	etlSteps = []string{"wait-for-upstream", "extract", "validate-schema", "transform", "dedupe",
		"load-warehouse", "refresh-views", "data-quality-checks", "notify"}
	deploySteps = []string{"checkout", "build-image", "scan-image", "push-image", "migrate-db",
		"deploy", "smoke-tests", "notify"}
	mlSteps = []string{"fetch-dataset", "preprocess", "feature-engineering", "train", "evaluate",
		"register-model", "publish-metrics"}
	securitySteps = []string{"checkout", "dependency-scan", "sast", "secret-scan", "license-check",
		"upload-report"}
)

var sources = []*source{
	{
		name: "github-actions", weight: 35,
		workflows: []workflow{{"build-and-test", ciSteps}, {"release", deploySteps},
			{"codeql-analysis", securitySteps}, {"deploy-preview", deploySteps}},
		layout: "2006-01-02T15:04:05Z07:00", zones: []*time.Location{time.UTC},
		attempt1: 1, uuidIDs: true,
	},
	{
		name: "airflow", weight: 20,
		workflows: []workflow{{"nightly-etl", etlSteps}, {"hourly-metrics-rollup", etlSteps},
			{"ml-feature-refresh", mlSteps}, {"billing-export", etlSteps}},
		layout: "2006-01-02T15:04:05.000000-07:00", zones: []*time.Location{time.UTC},
		attempt1: 0.5, schemaV: 0.2,
	},
	{
		name: "argo", weight: 15,
		workflows: []workflow{{"train-model", mlSteps}, {"batch-inference", mlSteps},
			{"data-backfill", etlSteps}},
		layout: time.RFC3339Nano, zones: []*time.Location{time.UTC},
		schemaV: 1, uuidIDs: true,
	},
	{
		name: "jenkins", weight: 15,
		workflows: []workflow{{"deploy-staging", deploySteps}, {"deploy-production", deploySteps},
			{"integration-suite", ciSteps}},
		layout: "2006-01-02T15:04:05.000-07:00",
		zones: []*time.Location{time.FixedZone("CET", 3600), time.FixedZone("EST", -5*3600),
			time.FixedZone("IST", 5*3600+1800), time.UTC},
		attempt1: 0.3,
	},
	{
		name: "gitlab-ci", weight: 15,
		workflows: []workflow{{"build-and-test", ciSteps}, {"docker-image", deploySteps},
			{"security-scan", securitySteps}},
		layout: "2006-01-02T15:04:05.000Z07:00", zones: []*time.Location{time.UTC},
		schemaV: 0.5,
	},
}

var (
	actors = []string{"alice", "bob", "carol", "dmitri", "josé.garcía", "li.wei", "dependabot[bot]",
		"renovate[bot]", "svc-scheduler", "mlops-bot"}
	branches = []string{"main", "main", "main", "develop", "release/2.4", "feature/retry-backoff",
		"fix/flaky-cache", "renovate/golang-1.x"}
	commitMessages = []string{"fix: handle nil pointer in retry loop", "chore(deps): bump golang.org/x/net",
		"feat: add partition rebalancing", "Revert \"feat: new cache layer\"", "docs: update README 📝",
		"perf: avoid allocation in hot path", "test: deflake TestConsumerGroup <flaky>", "Merge pull request #4821"}
	repos      = []string{"acme/payments-api", "acme/web-frontend", "acme/data-platform", "acme/infra"}
	namespaces = []string{"ml-pipelines", "data-eng", "batch"}
	runners    = []string{"ubuntu-22.04", "ubuntu-24.04", "self-hosted-x64", "arm64-large", "k8s-pool-a"}
	triggers   = []string{"push", "push", "pull_request", "schedule", "manual", "api"}
)

type run struct {
	id      string
	src     *source
	wf      workflow
	zone    *time.Location
	t0      time.Time
	steps   []string
	trigger string
	actor   string
	branch  string
	commit  string
	extras  object // source-specific top-level members
	attempt bool   // write "attempt": 1 explicitly
	schemaV bool   // write "schema_version": 1
	seq     int    // events created so far
}

// pending is a valid event before it becomes a message.
type pending struct {
	obj object
	ts  time.Time
	typ string
}

func (g *gen) pickSource() *source {
	total := 0
	for _, s := range sources {
		total += s.weight
	}
	n := g.rng.IntN(total)
	for _, s := range sources {
		if n < s.weight {
			return s
		}
		n -= s.weight
	}
	return sources[len(sources)-1]
}

func pick[T any](g *gen, xs []T) T { return xs[g.rng.IntN(len(xs))] }

func (g *gen) newRun(i int, t0 time.Time) *run {
	src := g.pickSource()
	r := &run{
		src:     src,
		wf:      pick(g, src.workflows),
		zone:    pick(g, src.zones),
		t0:      t0,
		trigger: pick(g, triggers),
		actor:   pick(g, actors),
		branch:  pick(g, branches),
		commit:  g.hex(40),
		attempt: g.rng.Float64() < src.attempt1,
		schemaV: g.rng.Float64() < src.schemaV,
	}
	// 2-8 steps, in the workflow's order.
	n := min(2+g.rng.IntN(7), len(r.wf.steps))
	idx := g.rng.Perm(len(r.wf.steps))[:n]
	slices.Sort(idx)
	for _, k := range idx {
		r.steps = append(r.steps, r.wf.steps[k])
	}

	var id string
	switch src.name {
	case "github-actions":
		id = strconv.FormatInt(7_300_000_000+int64(i)*1000+g.rng.Int64N(1000), 10)
		r.extras = object{{"repository", pick(g, repos)}, {"run_number", 1000 + i}}
	case "airflow":
		kind := "scheduled"
		if r.trigger == "manual" || r.trigger == "api" {
			kind = "manual"
		}
		id = r.wf.id + "/" + kind + "__" + t0.UTC().Format("2006-01-02T15:04:05.000000+00:00")
		r.extras = object{{"dag_run_type", kind}}
	case "argo":
		id = r.wf.id + "-" + g.alnum(5)
		r.extras = object{{"namespace", pick(g, namespaces)}}
	case "jenkins":
		n, ok := g.counters[r.wf.id]
		if !ok {
			n = 100 + g.rng.IntN(5000)
		}
		g.counters[r.wf.id] = n + 1
		id = r.wf.id + "#" + strconv.Itoa(n)
		r.extras = object{{"node", fmt.Sprintf("agent-%02d", g.rng.IntN(12))}}
	default: // gitlab-ci
		id = strconv.FormatInt(1_200_000_000+int64(i)*1000+g.rng.Int64N(1000), 10)
		r.extras = object{{"project_id", 4000 + g.rng.IntN(300)}}
	}
	// Guaranteed unique whatever the format.
	base := id
	for n := 2; ; n++ {
		if _, taken := g.runIDs[id]; !taken {
			break
		}
		id = base + "-" + strconv.Itoa(n)
	}
	g.runIDs[id] = struct{}{}
	r.id = id
	return r
}

// run generates the events of one run, all its attempts, and their
// messages.
func (g *gen) run(i int, t0 time.Time) {
	r := g.newRun(i, t0)
	g.runs = append(g.runs, r)

	retry := g.rng.Float64() < g.cfg.RetryRate
	evs, end, _ := g.attempt(r, 1, t0, retry)
	if retry {
		// Re-run a while after the failure, by hand or by a retry policy.
		t := end.Add(30*time.Second + g.expDur(40*time.Minute))
		var again []pending
		var failed bool
		again, end, failed = g.attempt(r, 2, t, false)
		evs = append(evs, again...)
		if failed && g.rng.Float64() < 0.3 {
			t = end.Add(time.Minute + g.expDur(20*time.Minute))
			again, _, _ = g.attempt(r, 3, t, false)
			evs = append(evs, again...)
		}
	}

	// Emission times: shortly after each event happened, in order.
	emits := make([]int64, len(evs))
	prev := int64(-1)
	for k, e := range evs {
		at := int64(e.ts.Sub(g.base)) + int64(10*time.Millisecond) + int64(g.expDur(300*time.Millisecond))
		at = max(at, prev+1)
		emits[k], prev = at, at
	}
	if len(evs) > 1 && g.rng.Float64() < g.cfg.ShuffleRate {
		// Out of order: the same emission times, handed out at random, and
		// sometimes one event held back for a long time.
		g.rng.Shuffle(len(emits), func(a, b int) { emits[a], emits[b] = emits[b], emits[a] })
		if g.rng.Float64() < 0.25 {
			emits[g.rng.IntN(len(emits))] += int64(time.Minute) + g.rng.Int64N(int64(30*time.Minute))
		}
	}
	for k, e := range evs {
		g.lastEmit = max(g.lastEmit, emits[k])
		g.items = append(g.items, item{
			emit: emits[k],
			msg: model.Message{
				Key:     g.key(r.id),
				Value:   encode(e.obj),
				Headers: g.headers(r, e.typ),
			},
			runID: r.id,
		})
	}
}

// attempt generates one attempt of a run starting at t. With mustEnd the
// attempt ends failed or cancelled (it is about to be re-run). It returns
// the events, the time of the last one, and whether it ended failed or
// cancelled.
func (g *gen) attempt(r *run, a int, t time.Time, mustEnd bool) ([]pending, time.Time, bool) {
	var evs []pending
	add := func(typ string, ts time.Time, step string, data object) {
		evs = append(evs, pending{obj: g.event(r, a, typ, ts, step, data), ts: ts, typ: typ})
	}

	queued := object{{"trigger", r.trigger}, {"branch", r.branch}, {"commit", r.commit}, {"actor", r.actor}}
	if a == 1 && g.rng.Float64() < 0.5 {
		queued = append(queued, member{"commit_message", pick(g, commitMessages)})
	}
	if a > 1 {
		queued = append(queued, member{"rerun_by", pick(g, actors)})
	}
	add(model.TypeRunQueued, t, "", queued)

	const (
		natural = iota
		queuedOnly
		running
		cancel
		fail
	)
	mode := natural
	switch x := g.rng.Float64(); {
	case mustEnd && x < 0.25:
		mode = cancel
	case mustEnd:
		mode = fail
	case x < 0.02:
		mode = queuedOnly
	case x < 0.07:
		mode = running
	case x < 0.12:
		mode = cancel
	}
	if mode == queuedOnly { // still waiting for a runner
		return evs, t, false
	}

	t = t.Add(500*time.Millisecond + g.expDur(15*time.Second))
	startedAt := t
	add(model.TypeRunStarted, t, "", object{
		{"runner", pick(g, runners)},
		{"runner_id", fmt.Sprintf("runner-%d", 1+g.rng.IntN(64))},
	})

	stopAt := -1 // cancel: the step the cancellation interrupts
	failAt := -1 // fail: the step forced to fail
	switch mode {
	case cancel:
		stopAt = g.rng.IntN(len(r.steps) + 1)
	case fail:
		failAt = g.rng.IntN(len(r.steps))
	}
	failedStep := ""
	for k, step := range r.steps {
		t = t.Add(50*time.Millisecond + g.expDur(2*time.Second))
		if k == stopAt {
			if g.rng.Float64() < 0.6 {
				add(model.TypeStepStarted, t, step, object{{"index", k + 1}})
				t = t.Add(g.expDur(20 * time.Second))
			}
			break
		}
		if failedStep != "" { // after a failure the rest is skipped
			if g.rng.Float64() < 0.4 {
				add(model.TypeStepStarted, t, step, object{{"index", k + 1}})
				t = t.Add(g.expDur(200 * time.Millisecond))
			}
			add(model.TypeStepSkipped, t, step, object{{"reason", "previous step failed"}})
			continue
		}
		if k != failAt && g.rng.Float64() < 0.04 { // a condition that is false
			if g.rng.Float64() < 0.5 {
				add(model.TypeStepStarted, t, step, object{{"index", k + 1}})
				t = t.Add(g.expDur(100 * time.Millisecond))
			}
			add(model.TypeStepSkipped, t, step, object{{"reason", "condition evaluated to false"}})
			continue
		}
		add(model.TypeStepStarted, t, step, object{{"index", k + 1}})
		d := 200*time.Millisecond + g.expDur(stepMean(step))
		t = t.Add(d)
		if k == failAt || (mode == natural && g.rng.Float64() < 0.035) {
			code := pick(g, []int{1, 1, 1, 2, 124, 137, 255})
			add(model.TypeStepFailed, t, step, object{
				{"exit_code", code}, {"duration_ms", d.Milliseconds()},
				{"error", fmt.Sprintf("%s: process exited with code %d", step, code)},
			})
			failedStep = step
			continue
		}
		data := object{{"exit_code", 0}, {"duration_ms", d.Milliseconds()}}
		if step == "restore-cache" {
			data = append(data, member{"cache_hit", g.rng.Float64() < 0.7})
		}
		add(model.TypeStepSucceeded, t, step, data)
		// Now and then an event type this projector does not know.
		switch x := g.rng.Float64(); {
		case x < 0.02:
			t = t.Add(g.expDur(time.Second))
			add("run.heartbeat", t, "", object{{"progress", math.Round(float64(k+1)/float64(len(r.steps))*100) / 100}})
		case x < 0.03:
			t = t.Add(g.expDur(time.Second))
			add("step.log", t, step, object{{"stream", "stdout"}, {"line", "ok  \tgithub.com/acme/pkg\t0.412s"}})
		}
	}

	if mode == running { // still running: cut somewhere after run.started
		evs = evs[:2+g.rng.IntN(len(evs)-1)]
		return evs, evs[len(evs)-1].ts, false
	}

	t = t.Add(100*time.Millisecond + g.expDur(2*time.Second))
	var typ string
	var data object
	switch {
	case mode == cancel:
		typ = model.TypeRunCancelled
		data = object{{"reason", pick(g, []string{"cancelled by user", "superseded by a newer run",
			"timeout: job exceeded 6h0m0s"})}, {"cancelled_by", pick(g, actors)}}
	case failedStep != "":
		typ = model.TypeRunFailed
		data = g.failure(failedStep)
	default:
		typ = model.TypeRunSucceeded
		data = object{{"duration_ms", t.Sub(startedAt).Milliseconds()}, {"artifacts", g.rng.IntN(5)}}
	}
	add(typ, t, "", data)

	switch x := g.rng.Float64(); {
	case !mustEnd && x < 0.015:
		// A second terminal event: the run was cancelled while it was
		// failing, or a late status report.
		t = t.Add(g.expDur(3 * time.Second))
		second := pick(g, []string{model.TypeRunCancelled, model.TypeRunFailed, model.TypeRunSucceeded})
		var d object
		if second == model.TypeRunFailed {
			d = g.failure(pick(g, r.steps))
		}
		add(second, t, "", d)
	case x < 0.035:
		t = t.Add(g.expDur(10 * time.Second))
		add("run.annotated", t, "", object{{"annotations", g.rng.IntN(4)}, {"summary_url", "https://ci.example.com/summary/" + g.hex(12)}})
	}
	ended := typ != model.TypeRunSucceeded
	return evs, t, ended
}

// failure is the data of a run.failed event: a string error most of the
// time, sometimes an error object or none at all.
func (g *gen) failure(step string) object {
	switch x := g.rng.Float64(); {
	case x < 0.75:
		msg := pick(g, []string{
			fmt.Sprintf("step %q failed: exit status 1", step),
			"Process completed with exit code 1.",
			"Task exited with return code 1",
			"OOMKilled: container exceeded its memory limit (2Gi)",
			"assertion failed: expected <nil>, got &errors.errorString{s:\"connection reset\"}",
			"timeout: step exceeded 30m0s",
			"Échec du déploiement: quota dépassé",
		})
		return object{{"error", msg}, {"failed_step", step}}
	case x < 0.87:
		return object{{"error", object{{"code", "E_STEP_FAILED"}, {"message", step + " failed"}, {"exit_code", 2}}}, {"failed_step", step}}
	case x < 0.9:
		return object{{"error", 137}}
	case x < 0.97:
		return object{{"failed_step", step}}
	default:
		return nil
	}
}

func stepMean(step string) time.Duration {
	switch step {
	case "checkout", "restore-cache", "notify", "wait-for-upstream", "setup-toolchain":
		return 4 * time.Second
	case "train", "integration-tests", "load-warehouse", "transform", "build-image":
		return 4 * time.Minute
	}
	return 40 * time.Second
}

// event builds the JSON object of one event.
func (g *gen) event(r *run, a int, typ string, ts time.Time, step string, data object) object {
	o := make(object, 0, 12)
	o = append(o,
		member{"event_id", g.eventID(r, a)},
		member{"event_type", typ},
		member{"source", r.src.name},
		member{"workflow_id", r.wf.id},
		member{"workflow_run_id", r.id},
		member{"timestamp", ts.In(r.zone).Format(r.src.layout)},
	)
	if a > 1 || r.attempt {
		o = append(o, member{"attempt", a})
	}
	if step != "" {
		o = append(o, member{"step_id", step})
	}
	if data != nil {
		o = append(o, member{"data", data})
	}
	o = append(o, r.extras...)
	if r.schemaV {
		o = append(o, member{"schema_version", 1})
	}
	return o
}

func (g *gen) eventID(r *run, a int) string {
	for {
		r.seq++
		var id string
		switch {
		case r.src.uuidIDs:
			id = g.uuid()
		case r.src.name == "airflow":
			id = fmt.Sprintf("%s:%d:%03d", r.id, a, r.seq)
		case r.src.name == "jenkins":
			id = fmt.Sprintf("%s-%d-%d", r.id, a, r.seq)
		default:
			id = fmt.Sprintf("gl-%s-%d-%d", r.id, a, r.seq)
		}
		if _, taken := g.eventIDs[id]; !taken {
			g.eventIDs[id] = struct{}{}
			return id
		}
	}
}

// key is the message key: the run id, or for unkeyed messages nil or a
// random key.
func (g *gen) key(runID string) []byte {
	if g.cfg.UnkeyedRate > 0 && g.rng.Float64() < g.cfg.UnkeyedRate {
		if g.rng.IntN(2) == 0 {
			return nil
		}
		return []byte(g.uuid())
	}
	return []byte(runID)
}

func (g *gen) headers(r *run, typ string) []model.Header {
	h := func(k, v string) model.Header { return model.Header{Key: []byte(k), Value: []byte(v)} }
	var hs []model.Header
	switch r.src.name {
	case "github-actions":
		hs = []model.Header{h("content-type", "application/json"), h("x-github-event", "workflow_run")}
	case "argo":
		hs = []model.Header{h("ce_specversion", "1.0"), h("ce_type", "io.argoproj.workflow."+typ),
			h("ce_source", "argo-events/workflow-controller")}
	case "gitlab-ci":
		hs = []model.Header{h("X-Gitlab-Event", "Pipeline Hook")}
	}
	if (r.src.name == "github-actions" || r.src.name == "argo") && g.rng.Float64() < 0.3 {
		hs = append(hs, h("traceparent", "00-"+g.hex(32)+"-"+g.hex(16)+"-01"))
	}
	return hs
}

// ---------------------------------------------------------------------
// Malformed messages.

var reasonWeights = []struct {
	reason string
	weight int
}{
	{model.ReasonInvalidJSON, 30},
	{model.ReasonInvalidField, 25},
	{model.ReasonMissingField, 20},
	{model.ReasonNotObject, 10},
	{model.ReasonUnsupportedSchemaVersion, 8},
	{model.ReasonUnstorable, 7},
}

// reasonPlan returns n reasons in random order, in proportion to their
// weights (largest remainder), each at least once when n allows.
func (g *gen) reasonPlan(n int) []string {
	counts := make([]int, len(reasonWeights))
	type rem struct{ i, frac int }
	var rems []rem
	given := 0
	for i, rw := range reasonWeights {
		counts[i] = n * rw.weight / 100
		given += counts[i]
		rems = append(rems, rem{i, n * rw.weight % 100})
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return cmp.Compare(b.frac, a.frac) })
	for k := 0; given < n; k++ {
		counts[rems[k%len(rems)].i]++
		given++
	}
	if n >= len(reasonWeights) {
		for i := range counts {
			for counts[i] == 0 {
				big := 0
				for j := range counts {
					if counts[j] > counts[big] {
						big = j
					}
				}
				counts[big]--
				counts[i]++
			}
		}
	}
	var plan []string
	for i, c := range counts {
		for range c {
			plan = append(plan, reasonWeights[i].reason)
		}
	}
	g.rng.Shuffle(len(plan), func(a, b int) { plan[a], plan[b] = plan[b], plan[a] })
	return plan
}

// template returns a plausible event of run r, with a fresh event_id, and
// the time it claims.
func (g *gen) template(r *run, typ string) (object, time.Time) {
	ts := r.t0.Add(time.Duration(g.rng.Int64N(int64(10 * time.Minute))))
	step := ""
	var data object
	switch {
	case model.IsStep(typ):
		step = pick(g, r.steps)
		data = object{{"index", 1 + g.rng.IntN(len(r.steps))}}
	case typ == model.TypeRunFailed:
		data = g.failure(pick(g, r.steps))
	case typ == model.TypeRunQueued:
		data = object{{"trigger", r.trigger}, {"branch", r.branch}, {"commit", r.commit}, {"actor", r.actor}}
	}
	return g.event(r, 1, typ, ts, step, data), ts
}

var templateTypes = []string{model.TypeRunQueued, model.TypeRunStarted, model.TypeStepStarted,
	model.TypeStepStarted, model.TypeStepSucceeded, model.TypeStepSucceeded,
	model.TypeStepFailed, model.TypeRunSucceeded, model.TypeRunFailed}

// malformed adds one message that must become a dead letter with reason.
func (g *gen) malformed(reason string) {
	r := pick(g, g.runs)
	o, ts := g.template(r, pick(g, templateTypes))
	var v []byte
	switch reason {
	case model.ReasonTooLarge:
		v = g.tooLarge(r, ts)
	case model.ReasonInvalidJSON:
		v = g.invalidJSON(o)
	case model.ReasonNotObject:
		v = g.notObject(o)
	case model.ReasonMissingField:
		v = g.missingField(r, o)
	case model.ReasonInvalidField:
		v = g.invalidField(r, o, ts)
	case model.ReasonUnsupportedSchemaVersion:
		o = o.set("schema_version", pick(g, []int{2, 2, 2, 3}))
		if g.rng.Float64() < 0.5 {
			o = o.set("labels", object{{"team", "platform"}, {"cost_center", "cc-42"}})
		}
		v = encode(o)
	case model.ReasonUnstorable:
		v = g.unstorable(o)
	default:
		panic("eventgen: unknown reason " + reason)
	}
	hs := g.headers(r, o.str("event_type"))
	if g.rng.Float64() < 0.2 { // a binary header, not valid UTF-8
		hs = append(hs, model.Header{Key: []byte("x-checksum"),
			Value: []byte{0xff, 0x00, byte(g.rng.Uint32()), 0xfe, byte(g.rng.Uint32())}})
	}
	g.items = append(g.items, item{
		emit:  int64(ts.Sub(g.base)) + int64(g.expDur(2*time.Second)),
		msg:   model.Message{Key: g.key(r.id), Value: v, Headers: hs},
		label: reason,
		runID: r.id,
	})
}

// tooLarge is a step.failed event with the whole build log in data: valid
// but just over model.MaxValueBytes.
func (g *gen) tooLarge(r *run, ts time.Time) []byte {
	step := pick(g, r.steps)
	target := model.MaxValueBytes + 1 + g.rng.IntN(2048)
	o := g.event(r, 1, model.TypeStepFailed, ts, step,
		object{{"exit_code", 1}, {"log", ""}})
	pad := target - len(encode(o))
	const line = "[INFO] compiling module acme/payments/internal/ledger ... ok | "
	var log strings.Builder
	for log.Len() < pad {
		log.WriteString(line)
	}
	o = o.set("data", object{{"exit_code", 1}, {"log", log.String()[:pad]}})
	v := encode(o)
	if len(v) != target {
		panic(fmt.Sprintf("eventgen: too_large value is %d bytes, want %d", len(v), target))
	}
	return v
}

func (g *gen) invalidJSON(o object) []byte {
	switch g.rng.IntN(11) {
	case 0, 1: // cut short: a producer crashed mid-write
		b := encode(o)
		return b[:1+g.rng.IntN(len(b)-1)]
	case 2: // Latin-1 text, not UTF-8
		b := encode(o.set("data", object{{"committer", "José Müller"}, {"message", "déploiement"}}))
		b = replaceAll(b, "é", "\xe9")
		return replaceAll(b, "ü", "\xfc")
	case 3: // two events in one message
		o2, _ := g.template(pick(g, g.runs), pick(g, templateTypes))
		return append(append(encode(o), '\n'), encode(o2)...)
	case 4: // Python's repr of a dict
		return replaceAll(encode(o), `"`, `'`)
	case 5: // trailing comma
		b := encode(o)
		return append(b[:len(b)-1], ",}"...)
	case 6: // Python's json.dumps of a float('nan')
		return encode(o.set("data", object{{"progress", raw("NaN")}}))
	case 7: // a duplicate key
		return encode(append(o, member{"event_type", model.TypeRunSucceeded}))
	case 8: // a raw newline inside a string
		return encode(o.set("data", object{{"log", raw("\"build failed:\n\tmain.go:12: undefined: x\"")}}))
	case 9: // a byte order mark
		return append([]byte{0xEF, 0xBB, 0xBF}, encode(o)...)
	default: // empty
		return []byte{}
	}
}

func (g *gen) notObject(o object) []byte {
	switch x := g.rng.Float64(); {
	case x < 0.35: // a batch of events in an array
		o2, _ := g.template(pick(g, g.runs), pick(g, templateTypes))
		return encode([]any{o, o2})
	case x < 0.7: // JSON encoded twice
		return encode(string(encode(o)))
	case x < 0.85:
		return []byte("null")
	case x < 0.95:
		return []byte(strconv.Itoa(g.rng.IntN(100000)))
	default:
		return []byte(`"ping"`)
	}
}

var requiredFields = []string{"event_id", "event_type", "source", "workflow_id", "workflow_run_id", "timestamp"}

var renames = map[string][]string{
	"event_id":        {"id", "eventId"},
	"event_type":      {"type", "eventType"},
	"source":          {"src", "origin"},
	"workflow_id":     {"workflow", "workflowId"},
	"workflow_run_id": {"run_id", "workflowRunId"},
	"timestamp":       {"ts", "time"},
}

func (g *gen) missingField(r *run, o object) []byte {
	field := pick(g, requiredFields)
	switch x := g.rng.Float64(); {
	case x < 0.5:
		return encode(o.del(field))
	case x < 0.65:
		return encode(o.set(field, nil))
	case x < 0.85: // a producer with other field names
		return encode(o.rename(field, pick(g, renames[field])))
	default: // a step event without step_id
		s, _ := g.template(r, pick(g, []string{model.TypeStepStarted, model.TypeStepSucceeded}))
		return encode(s.del("step_id"))
	}
}

func (g *gen) invalidField(r *run, o object, ts time.Time) []byte {
	switch g.rng.IntN(16) {
	case 0, 1: // no zone
		return encode(o.set("timestamp", ts.UTC().Format("2006-01-02T15:04:05.000000")))
	case 2: // Go's time.Time.String
		return encode(o.set("timestamp", ts.UTC().String()))
	case 3: // Unix epoch seconds or milliseconds
		return encode(o.set("timestamp", pick(g, []int64{ts.Unix(), ts.UnixMilli()})))
	case 4: // no such day
		return encode(o.set("timestamp", fmt.Sprintf("%04d-02-30T%02d:%02d:00Z", ts.Year(), ts.Hour(), ts.Minute())))
	case 5, 6:
		return encode(o.set("attempt", pick(g, []any{0, -1, 1001, "2", 1.5, true})))
	case 7: // a numeric id sent as a number
		if n, err := strconv.ParseInt(r.id, 10, 64); err == nil {
			return encode(o.set("workflow_run_id", n))
		}
		return encode(o.set("event_id", 1+g.rng.IntN(1_000_000)))
	case 8:
		return encode(o.set(pick(g, []string{"source", "event_id", "workflow_id"}), ""))
	case 9: // a matrix job name gone wild
		return encode(o.set("workflow_id", r.wf.id+"/"+strings.Repeat("matrix-os-ubuntu-22.04-go-1.26-race-", 6)))
	case 10:
		return encode(o.set("event_type", "run.failed."+strings.Repeat("with-a-very-long-suffix-", 5)))
	case 11:
		return encode(o.set("workflow_run_id", r.id+"-"+strings.Repeat("0123456789", 20)))
	case 12, 13: // a bad step_id on a step event
		s, _ := g.template(r, pick(g, []string{model.TypeStepStarted, model.TypeStepFailed}))
		return encode(s.set("step_id", pick(g, []any{3, "", strings.Repeat("step-", 41), object{{"name", "compile"}}})))
	default: // data that is not an object
		return encode(o.set("data", pick(g, []any{
			`{"error":"stringified by mistake"}`, []any{"compile", "test"}, 42,
		})))
	}
}

func (g *gen) unstorable(o object) []byte {
	switch g.rng.IntN(3) {
	case 0: // NUL bytes from a crashed process in the log
		return encode(o.set("data", object{{"log", "Segmentation fault (core dumped)\x00\x00"}}))
	case 1:
		return encode(o.set("data", object{{"stderr", "read /dev/mem: \x00 unexpected"}, {"exit_code", 139}}))
	default: // in a key
		return encode(o.set("data", object{{"env\x00PATH", "/usr/bin"}}))
	}
}

// ---------------------------------------------------------------------
// JSON with members in a chosen order, built from encoding/json leaves.

type member struct {
	k string
	v any
}

// object is a JSON object with its members in order; encode writes
// duplicates as they are.
type object []member

// raw is written as it is, valid JSON or not.
type raw string

// set returns a copy of o with k's value replaced, or added at the end.
func (o object) set(k string, v any) object {
	out := slices.Clone(o)
	for i := range out {
		if out[i].k == k {
			out[i].v = v
			return out
		}
	}
	return append(out, member{k, v})
}

// del returns a copy of o without k.
func (o object) del(k string) object {
	return slices.DeleteFunc(slices.Clone(o), func(m member) bool { return m.k == k })
}

// rename returns a copy of o with member k named to.
func (o object) rename(k, to string) object {
	out := slices.Clone(o)
	for i := range out {
		if out[i].k == k {
			out[i].k = to
		}
	}
	return out
}

// str returns k's value if it is a string.
func (o object) str(k string) string {
	for _, m := range o {
		if m.k == k {
			s, _ := m.v.(string)
			return s
		}
	}
	return ""
}

func encode(v any) []byte { return appendValue(make([]byte, 0, 512), v) }

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case object:
		b = append(b, '{')
		for i, m := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, m.k)
			b = append(b, ':')
			b = appendValue(b, m.v)
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, x)
		}
		return append(b, ']')
	case raw:
		return append(b, v...)
	}
	return appendJSON(b, v)
}

func appendJSON(b []byte, v any) []byte {
	j, err := json.Marshal(v)
	if err != nil {
		panic("eventgen: " + err.Error())
	}
	return append(b, j...)
}

func replaceAll(b []byte, old, new string) []byte {
	return []byte(strings.ReplaceAll(string(b), old, new))
}

// ---------------------------------------------------------------------
// Random helpers.

// expDur is an exponentially distributed duration with the given mean, to
// the nanosecond.
func (g *gen) expDur(mean time.Duration) time.Duration {
	return time.Duration(g.rng.ExpFloat64() * float64(mean))
}

func (g *gen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.rng.IntN(16)]
	}
	return string(b)
}

func (g *gen) alnum(n int) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = chars[g.rng.IntN(len(chars))]
	}
	return string(b)
}

// uuid is a random (version 4) UUID from the seeded generator.
func (g *gen) uuid() string {
	hi, lo := g.rng.Uint64(), g.rng.Uint64()
	hi = hi&^0xF000 | 0x4000     // version 4
	lo = lo&^(0xC<<60) | 0x8<<60 // variant 10
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
		hi>>32, (hi>>16)&0xFFFF, hi&0xFFFF, lo>>48, lo&0xFFFFFFFFFFFF)
}
