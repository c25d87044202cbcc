package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

// lag reads one partition of the consumer_lag view.
type lag struct {
	Next, HWM, Lag, Seconds *int64
	HWMAt, LastApplied      *time.Time
}

func readLag(t *testing.T, st *store.Store, partition int32) lag {
	t.Helper()
	var l lag
	require.NoError(t, st.Pool().QueryRow(context.Background(),
		`SELECT next_offset, high_watermark, lag, seconds_since_last_applied, high_watermark_at, last_applied_at
		 FROM consumer_lag WHERE group_id = $1 AND topic = $2 AND partition = $3`, group, topic, partition).
		Scan(&l.Next, &l.HWM, &l.Lag, &l.Seconds, &l.HWMAt, &l.LastApplied))
	return l
}

func TestRecordHighWatermarkAndConsumerLag(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	lease := claim(t, st, 0)
	l := readLag(t, st, 0)
	require.Nil(t, l.HWM, "no high watermark stored yet")
	require.Nil(t, l.Lag)
	require.Nil(t, l.LastApplied)

	require.NoError(t, st.RecordHighWatermark(ctx, lease, 10, -1, time.Time{}))
	l = readLag(t, st, 0)
	require.Equal(t, int64(10), *l.HWM)
	require.Equal(t, int64(10), *l.Lag)
	require.WithinDuration(t, time.Now(), *l.HWMAt, time.Minute)

	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	_, err := st.Apply(ctx, batchOf(lease,
		eventJSON("e1", "run.queued", "r1", t0, 1, ""),
		eventJSON("e2", "run.started", "r1", t0, 1, ""),
		[]byte(`not json`),
	))
	require.NoError(t, err)
	l = readLag(t, st, 0)
	require.Equal(t, int64(3), *l.Next)
	require.Equal(t, int64(7), *l.Lag, "the stored high watermark against the moved offset")
	require.Nil(t, l.LastApplied, "stored with the next high watermark")

	// The batch committed 90 seconds ago by the worker's clock: stored as
	// that long before the server's now.
	applied := time.Now().Add(-90 * time.Second)
	require.NoError(t, st.RecordHighWatermark(ctx, lease, 10, -1, applied))
	l = readLag(t, st, 0)
	require.WithinDuration(t, applied, *l.LastApplied, 5*time.Second)
	require.InDelta(t, 90, *l.Seconds, 5)
	// No batch since the claim started: the stored time stays.
	require.NoError(t, st.RecordHighWatermark(ctx, lease, 10, -1, time.Time{}))
	require.Equal(t, *l.LastApplied, *readLag(t, st, 0).LastApplied)

	// A high watermark older than the stored offset (it is stored every
	// few seconds, the offset with every batch) is no negative lag: the
	// partition's high watermark is at least the stored offset.
	lease.NextOffset = 3
	require.NoError(t, st.RecordHighWatermark(ctx, lease, 2, -1, time.Time{}))
	l = readLag(t, st, 0)
	require.Zero(t, *l.Lag)
	require.Equal(t, int64(3), *l.HWM)

	// A worker that lost the lease writes nothing.
	_, err = st.Claim(ctx, group, topic, 0, 0, "other")
	require.NoError(t, err)
	require.NoError(t, st.RecordHighWatermark(ctx, lease, 1000, -1, time.Now()))
	l = readLag(t, st, 0)
	require.Equal(t, int64(3), *l.HWM)
	require.InDelta(t, 90, *l.Seconds, 5)
}

// knownRuns are runs written straight into workflow_runs, with the times
// of 2026-03-01 given as hh:mm (and "-" for none), for the dashboard views.
var knownRuns = []struct {
	id, workflow, status, first, started, finished, err string
}{
	{"r1", "build", "succeeded", "10:05", "10:05", "10:07", ""},
	{"r2", "build", "succeeded", "10:20", "10:20", "10:21", ""},
	{"r3", "build", "failed", "10:40", "10:40", "10:45", "exit status 1"},
	{"r4", "build", "failed", "11:10", "11:10", "11:12", "exit status 2"},
	{"r5", "build", "cancelled", "11:30", "11:30", "11:31", ""},
	{"r6", "deploy", "failed", "11:50", "-", "11:55", "timeout"},
	{"r7", "deploy", "succeeded", "09:50", "09:50", "10:10", ""},
	{"r8", "deploy", "succeeded", "08:00", "08:00", "09:00", ""},
	{"r9", "build", "running", "11:40", "11:41", "-", ""},
	{"r10", "build", "queued", "11:45", "-", "-", ""},
	{"r11", "deploy", "running", "11:58", "-", "-", ""},
	{"r12", "build", "failed", "11:20", "11:20", "11:50", ""}, // no data.error
}

func at(hhmm string) *time.Time {
	if hhmm == "-" {
		return nil
	}
	t, err := time.Parse("2006-01-02 15:04", "2026-03-01 "+hhmm)
	if err != nil {
		panic(err)
	}
	return &t
}

func insertRun(t *testing.T, st *store.Store, id, workflow, status string, first, started, finished *time.Time, errText string) {
	t.Helper()
	last := *first
	for _, ts := range []*time.Time{started, finished} {
		if ts != nil && ts.After(last) {
			last = *ts
		}
	}
	var e *string
	if errText != "" {
		e = &errText
	}
	_, err := st.Pool().Exec(context.Background(), `
		INSERT INTO workflow_runs (workflow_run_id, workflow_id, source, attempt, status, queued_at, started_at,
			finished_at, error, steps_succeeded, steps_failed, steps_skipped, event_count, first_event_at,
			last_event_at, latest_event_id, deciding_event_id)
		VALUES ($1, $2, 'ci', 1, $3, $4, $5, $6, $7, 0, 0, 0, 1, $4, $8, $1, CASE WHEN $6::timestamptz IS NOT NULL THEN $1 END)`,
		id, workflow, status, first, started, finished, e, last)
	require.NoError(t, err)
}

// knownSteps are steps written straight into workflow_steps, times as in
// knownRuns.
var knownSteps = []struct {
	run                    string
	attempt                int
	step, workflow, status string
	started, finished, err string
}{
	{"r1", 1, "compile", "build", "succeeded", "10:05", "10:06", ""},
	{"r2", 1, "compile", "build", "succeeded", "10:20", "10:22", ""},
	{"r3", 1, "compile", "build", "failed", "10:40", "10:43", "exit 1"},
	{"r3", 2, "compile", "build", "succeeded", "10:50", "10:52", ""}, // a retry fixed it: flaky
	{"r1", 1, "test", "build", "succeeded", "10:06", "10:07", ""},
	{"r2", 1, "test", "build", "failed", "10:21", "10:25", "assert"},
	{"r4", 1, "test", "build", "skipped", "-", "11:12", ""},
	{"r9", 1, "test", "build", "running", "11:41", "-", ""},
	{"r6", 1, "push", "deploy", "failed", "-", "11:55", "timeout"}, // no step.started
}

func insertStep(t *testing.T, st *store.Store, run string, attempt int, step, workflow, status string, started, finished *time.Time, errText string) {
	t.Helper()
	first, last := started, finished
	if first == nil {
		first = finished
	}
	if last == nil {
		last = started
	}
	var e *string
	if errText != "" {
		e = &errText
	}
	_, err := st.Pool().Exec(context.Background(), `
		INSERT INTO workflow_steps (workflow_run_id, attempt, step_id, workflow_id, source, status, started_at,
			finished_at, error, event_count, first_event_at, last_event_at, latest_event_id, deciding_event_id)
		VALUES ($1, $2, $3, $4, 'ci', $5, $6, $7, $8, 2, $9, $10, $3, CASE WHEN $7::timestamptz IS NOT NULL THEN $3 END)`,
		run, attempt, step, workflow, status, started, finished, e, first, last)
	require.NoError(t, err)
}

func loadKnownData(t *testing.T, st *store.Store) {
	t.Helper()
	for _, r := range knownRuns {
		insertRun(t, st, r.id, r.workflow, r.status, at(r.first), at(r.started), at(r.finished), r.err)
	}
	for _, s := range knownSteps {
		insertStep(t, st, s.run, s.attempt, s.step, s.workflow, s.status, at(s.started), at(s.finished), s.err)
	}
	// Relative to now, for the views of the last 24 hours.
	now := time.Now()
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	insertRun(t, st, "n1", "nightly", "succeeded", ago(2*time.Hour), ago(2*time.Hour), ago(time.Hour), "")
	insertRun(t, st, "n2", "nightly", "failed", ago(26*time.Hour), ago(26*time.Hour), ago(25*time.Hour), "too old to count")
	insertRun(t, st, "n3", "nightly", "failed", ago(40*time.Minute), ago(40*time.Minute), ago(30*time.Minute), "oom")
	insertStep(t, st, "n1", 1, "backup", "nightly", "failed", ago(2*time.Hour), ago(100*time.Minute), "disk full")
	insertStep(t, st, "n1", 2, "backup", "nightly", "succeeded", ago(90*time.Minute), ago(time.Hour), "")
	insertStep(t, st, "n2", 1, "backup", "nightly", "failed", ago(26*time.Hour), ago(25*time.Hour), "too old to count")
	for i, d := range []struct{ reason, at string }{
		{"invalid_json", "10:01"}, {"invalid_json", "10:59"}, {"missing_field", "10:30"}, {"invalid_json", "11:00"},
	} {
		_, err := st.Pool().Exec(context.Background(), `
			INSERT INTO dead_letters (topic, partition, "offset", value, reason, error, received_at)
			VALUES ('workflow-events', 0, $1, 'x', $2, 'e', $3)`, i, d.reason, at(d.at))
		require.NoError(t, err)
	}
}

// rowsOf runs a query and renders each row as its columns' text joined by
// "|", NULL as "-".
func rowsOf(t *testing.T, st *store.Store, sql string, args ...any) []string {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(), sql, args...)
	require.NoError(t, err, sql)
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		cols := make([]string, len(vals))
		for i, v := range vals {
			switch v := v.(type) {
			case nil:
				cols[i] = "-"
			case time.Time:
				cols[i] = v.UTC().Format("15:04")
			default:
				cols[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(cols, "|"))
	}
	require.NoError(t, rows.Err())
	return out
}

func TestDashboardViewsOnKnownData(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	loadKnownData(t, st)
	window := []any{at("10:00"), at("12:00")}

	t.Run("runs_per_hour", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{
			"08:00|succeeded|1",
			"09:00|succeeded|1",
			"10:00|failed|1", "10:00|succeeded|2",
			"11:00|cancelled|1", "11:00|failed|3", "11:00|queued|1", "11:00|running|2",
		}, rowsOf(t, st, `SELECT hour, status, runs FROM runs_per_hour
			WHERE hour BETWEEN '2026-03-01T00:00:00Z' AND '2026-03-01T23:59:59Z' ORDER BY hour, status`))
	})
	t.Run("workflow_stats_between", func(t *testing.T) {
		t.Parallel()
		// build: r1-r5 and r12 finished in the window, 2 of 6 succeeded;
		// durations 1, 1, 2, 2, 5 and 30 minutes: p50 2 min, p95 5 + 0.75 ×
		// 25 min. deploy: r6 (no run.started, so no duration) and r7.
		require.Equal(t, []string{
			"build|6|2|3|1|0.3333|120000|1425000|11:50",
			"deploy|2|1|1|0|0.5|1200000|1200000|11:55",
		}, rowsOf(t, st, `SELECT workflow_id, finished, succeeded, failed, cancelled, success_rate::float8,
			p50_duration_ms, p95_duration_ms, last_finished_at
			FROM workflow_stats_between($1, $2) ORDER BY workflow_id`, window...))
	})
	t.Run("workflow_stats", func(t *testing.T) {
		t.Parallel()
		// n1 (1 hour) and n3 (10 minutes) finished within 24 hours, n2 before.
		require.Equal(t, []string{"nightly|2|1|1|0|0.5|2100000|3450000"},
			rowsOf(t, st, `SELECT workflow_id, finished, succeeded, failed, cancelled, success_rate::float8,
				p50_duration_ms, p95_duration_ms FROM workflow_stats`))
	})
	t.Run("running_runs", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{"r9|build|11:41|0|11:41", "r11|deploy|11:58|0|11:58"},
			rowsOf(t, st, `SELECT workflow_run_id, workflow_id, running_since, steps_succeeded, last_event_at
				FROM running_runs ORDER BY running_since`))
		var drift float64
		require.NoError(t, st.Pool().QueryRow(context.Background(), `
			SELECT max(abs(running_seconds - extract(epoch FROM now() - running_since))
			         + abs(seconds_since_last_event - extract(epoch FROM now() - last_event_at)))
			FROM running_runs`).Scan(&drift))
		require.Less(t, drift, 2.0, "running_seconds and seconds_since_last_event count from now")
	})
	t.Run("failing_workflows_between", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{
			// r12 failed last, without an error: the latest error is r4's.
			"build|3|6|0.5|2|11:50|exit status 2|r4",
			"deploy|1|2|0.5|1|11:55|timeout|r6",
		}, rowsOf(t, st, `SELECT workflow_id, failed, finished, failure_rate::float8, distinct_errors,
			last_failed_at, latest_error, latest_error_run_id FROM failing_workflows_between($1, $2)`, window...))
	})
	t.Run("failing_workflows", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{"nightly|1|2|oom|n3"},
			rowsOf(t, st, `SELECT workflow_id, failed, finished, latest_error, latest_error_run_id FROM failing_workflows`))
	})
	t.Run("step_durations_between", func(t *testing.T) {
		t.Parallel()
		// build/compile: 1, 2, 3 (failed) and 2 minutes: p95 2 + 0.85 × 1
		// min. build/test: 1 and 4 (failed) minutes, the skipped and the
		// running step left out: p95 1 + 0.95 × 3 min, the slowest of
		// build. deploy/push: no step.started, no duration.
		require.Equal(t, []string{
			"build|test|2|1|150000|231000|240000|1|10:25",
			"build|compile|4|1|120000|171000|180000|2|10:52",
			"deploy|push|1|1|-|-|-|1|11:55",
		}, rowsOf(t, st, `SELECT workflow_id, step_id, finished, failed, p50_duration_ms, p95_duration_ms,
			max_duration_ms, rank_in_workflow, last_finished_at
			FROM step_durations_between($1, $2) ORDER BY workflow_id, rank_in_workflow`, window...))
	})
	t.Run("step_durations", func(t *testing.T) {
		t.Parallel()
		// n1's two attempts (20 and 30 minutes); n2's is too old.
		require.Equal(t, []string{"nightly|backup|2|1|1500000|1770000|1"},
			rowsOf(t, st, `SELECT workflow_id, step_id, finished, failed, p50_duration_ms, p95_duration_ms,
				rank_in_workflow FROM step_durations`))
	})
	t.Run("flaky_steps_between", func(t *testing.T) {
		t.Parallel()
		// compile failed in r3's first attempt and succeeded in its
		// second: one flaky run, listed first. The skipped test counts as
		// finished.
		require.Equal(t, []string{
			"build|compile|1|4|0.25|1|10:43|exit 1|r3",
			"build|test|1|3|0.3333|0|10:25|assert|r2",
			"deploy|push|1|1|1|0|11:55|timeout|r6",
		}, rowsOf(t, st, `SELECT workflow_id, step_id, failed, finished, failure_rate::float8, flaky_runs,
			last_failed_at, latest_error, latest_error_run_id FROM flaky_steps_between($1, $2)`, window...))
	})
	t.Run("flaky_steps", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{"nightly|backup|1|2|1|disk full|n1"},
			rowsOf(t, st, `SELECT workflow_id, step_id, failed, finished, flaky_runs, latest_error, latest_error_run_id
				FROM flaky_steps`))
	})
	t.Run("dead_letters_per_hour", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{"10:00|invalid_json|2", "10:00|missing_field|1", "11:00|invalid_json|1"},
			rowsOf(t, st, `SELECT hour, reason, dead_letters FROM dead_letters_per_hour
				WHERE hour >= '2026-03-01T00:00:00Z' AND hour < '2026-03-02T00:00:00Z' ORDER BY hour, reason`))
	})
}

// dashboardQueries are the views as dashboards read them, with the
// indexes each must use on a large table.
var dashboardQueries = []struct {
	name, sql string
	indexes   []string
}{
	{"runs_per_hour, last 24 hours",
		`SELECT * FROM runs_per_hour WHERE hour >= now() - interval '24 hours' ORDER BY hour, status`,
		[]string{"workflow_runs_hour_idx"}},
	{"workflow_stats (24 hours)",
		`SELECT * FROM workflow_stats ORDER BY finished DESC`,
		[]string{"workflow_runs_status_idx"}},
	{"workflow_stats_between, 7 days",
		`SELECT * FROM workflow_stats_between(now() - interval '7 days') ORDER BY finished DESC`,
		[]string{"workflow_runs_status_idx"}},
	{"running_runs",
		`SELECT * FROM running_runs ORDER BY running_since`,
		[]string{"workflow_runs_status_idx"}},
	{"failing_workflows (24 hours)",
		`SELECT * FROM failing_workflows LIMIT 10`,
		[]string{"workflow_runs_status_idx"}},
	{"step_durations (24 hours)",
		`SELECT * FROM step_durations ORDER BY p95_duration_ms DESC NULLS LAST LIMIT 20`,
		[]string{"workflow_steps_finished_idx"}},
	{"step_durations_between, 7 days",
		`SELECT * FROM step_durations_between(now() - interval '7 days') ORDER BY p95_duration_ms DESC NULLS LAST LIMIT 20`,
		[]string{"workflow_steps_finished_idx"}},
	{"flaky_steps (24 hours)",
		`SELECT * FROM flaky_steps LIMIT 20`,
		[]string{"workflow_steps_finished_idx"}},
	{"dead_letters_per_hour, last 24 hours",
		`SELECT * FROM dead_letters_per_hour WHERE hour >= now() - interval '24 hours' ORDER BY hour, reason`,
		[]string{"dead_letters_hour_idx"}},
}

// millionRuns fills the tables like a busy installation: 1,000,000 runs of
// 200 workflows over the last 60 days (about 700 an hour: 85% succeed, 10%
// fail, 3% are cancelled; of the last two hours' runs, 30% still run and 3%
// are queued), two steps of every fourth run (500,000 steps: 90% succeed, 8%
// fail, 2% are skipped, and in the last two hours 30% still run), and
// 100,000 dead letters over the same days.
const millionRuns = `
INSERT INTO workflow_runs (workflow_run_id, workflow_id, source, attempt, status, queued_at, started_at, finished_at,
    error, steps_succeeded, steps_failed, steps_skipped, event_count, first_event_at, last_event_at, latest_event_id, deciding_event_id)
SELECT 'run-' || i, 'wf-' || (i % 200), 'ci', 1, st, t0, t0 + interval '5 seconds',
       CASE WHEN st IN ('running', 'queued') THEN NULL ELSE t0 + interval '5 seconds' + d END,
       CASE WHEN st = 'failed' THEN 'exit status ' || (h % 7) END,
       3, CASE WHEN st = 'failed' THEN 1 ELSE 0 END, 0, 6, t0,
       CASE WHEN st IN ('running', 'queued') THEN t0 + interval '5 seconds' ELSE t0 + interval '5 seconds' + d END,
       'e-' || i, CASE WHEN st IN ('running', 'queued') THEN NULL ELSE 'e-' || i END
FROM generate_series(1, 1000000) AS i,
LATERAL (SELECT abs(hashint4(i)) AS h, now() - (i::float8 / 1000000) * interval '60 days' AS t0) AS x,
LATERAL (SELECT make_interval(secs => 30 + (x.h % 1800)) AS d,
                CASE WHEN x.t0 > now() - interval '2 hours' AND x.h % 100 < 30 THEN 'running'
                     WHEN x.t0 > now() - interval '2 hours' AND x.h % 100 < 33 THEN 'queued'
                     WHEN x.h % 100 < 10 THEN 'failed'
                     WHEN x.h % 100 < 13 THEN 'cancelled'
                     ELSE 'succeeded' END AS st) AS y;
INSERT INTO workflow_steps (workflow_run_id, attempt, step_id, workflow_id, source, status, started_at, finished_at,
    error, event_count, first_event_at, last_event_at, latest_event_id, deciding_event_id)
SELECT 'run-' || i, 1, 'step-' || k, 'wf-' || (i % 200), 'ci', st, t0 + k * interval '1 second',
       CASE WHEN st = 'running' THEN NULL ELSE t0 + k * interval '1 second' + d END,
       CASE WHEN st = 'failed' THEN 'exit status ' || (h % 5) END,
       2, t0 + k * interval '1 second',
       CASE WHEN st = 'running' THEN t0 + k * interval '1 second' ELSE t0 + k * interval '1 second' + d END,
       's-' || i || '-' || k, CASE WHEN st = 'running' THEN NULL ELSE 's-' || i || '-' || k END
FROM generate_series(1, 1000000, 4) AS i, generate_series(1, 2) AS k,
LATERAL (SELECT abs(hashint4(i * 2 + k)) AS h, now() - (i::float8 / 1000000) * interval '60 days' AS t0) AS x,
LATERAL (SELECT make_interval(secs => 1 + (x.h % 600)) AS d,
                CASE WHEN x.t0 > now() - interval '2 hours' AND x.h % 100 < 30 THEN 'running'
                     WHEN x.h % 100 < 8 THEN 'failed'
                     WHEN x.h % 100 < 10 THEN 'skipped'
                     ELSE 'succeeded' END AS st) AS y;
INSERT INTO dead_letters (topic, partition, "offset", value, reason, error, received_at)
SELECT 'workflow-events', i % 8, i, 'x', (ARRAY['invalid_json', 'missing_field', 'invalid_field', 'too_large'])[1 + i % 4], 'e',
       now() - (i::float8 / 100000) * interval '60 days'
FROM generate_series(1, 100000) AS i;
ANALYZE workflow_runs, workflow_steps, dead_letters;
`

// planNode is the part of EXPLAIN (FORMAT JSON) the test looks at.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	IndexName    string     `json:"Index Name"`
	Plans        []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

// TestDashboardViewsUseIndexesOnAMillionRuns checks that every view reads
// a million-run table through its indexes, never a sequential scan of the
// big tables, and logs how long each takes (go test -v).
func TestDashboardViewsUseIndexesOnAMillionRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	start := time.Now()
	_, err := st.Pool().Exec(ctx, millionRuns)
	require.NoError(t, err)
	t.Logf("loaded 1,000,000 runs, 500,000 steps and 100,000 dead letters in %s", time.Since(start).Round(time.Millisecond))

	for _, q := range dashboardQueries {
		var out []struct {
			Plan          planNode `json:"Plan"`
			ExecutionTime float64  `json:"Execution Time"`
		}
		var rows int
		for range 3 { // the first runs warm the cache; the last is reported
			var raw []byte
			require.NoError(t, st.Pool().QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+q.sql).Scan(&raw), q.name)
			require.NoError(t, json.Unmarshal(raw, &out))
			require.NoError(t, st.Pool().QueryRow(ctx, "SELECT count(*) FROM ("+q.sql+") AS q").Scan(&rows))
		}
		var used []string
		out[0].Plan.walk(func(n planNode) {
			if n.IndexName != "" {
				used = append(used, n.IndexName)
			}
			require.NotEqual(t, "Seq Scan", n.NodeType, "%s: sequential scan of %s", q.name, n.RelationName)
		})
		for _, idx := range q.indexes {
			require.Contains(t, used, idx, q.name)
		}
		slices.Sort(used)
		t.Logf("%-38s %8.1f ms  %5d rows  indexes %s", q.name, out[0].ExecutionTime, rows, strings.Join(slices.Compact(used), ", "))
	}
}

// grafanaMacro matches the Grafana macros the dashboard may use.
var grafanaMacro = regexp.MustCompile(`\$__timeFilter\(([a-z_]+)\)|\$__timeFrom\(\)|\$__timeTo\(\)|\$\{?group\}?`)

// TestGrafanaDashboardQueriesRun parses the checked-in dashboard and runs
// every panel's and variable's SQL, its macros expanded as Grafana does,
// against the migrated schema with the known data.
func TestGrafanaDashboardQueriesRun(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../.grafana/dashboards/projector.json")
	require.NoError(t, err)
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				RawSQL string `json:"rawSql"`
				Format string `json:"format"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.UID)
	require.NotEmpty(t, dash.Panels)
	datasources, err := os.ReadFile("../.grafana/provisioning/datasources/projector.yml")
	require.NoError(t, err)

	st := storetest.New(t)
	loadKnownData(t, st)
	lease := claim(t, st, 0)
	require.NoError(t, st.RecordHighWatermark(context.Background(), lease, 5, -1, time.Now()))

	expand := func(sql string) string {
		return grafanaMacro.ReplaceAllStringFunc(sql, func(m string) string {
			switch sub := grafanaMacro.FindStringSubmatch(m); {
			case sub[1] != "":
				return sub[1] + " BETWEEN '2026-03-01T00:00:00Z' AND '2026-03-01T23:59:59Z'"
			case m == "$__timeFrom()":
				return "'2026-03-01T00:00:00Z'"
			case m == "$__timeTo()":
				return "'2026-03-01T23:59:59Z'"
			default:
				return group
			}
		})
	}
	for _, v := range dash.Templating.List {
		require.NotEmpty(t, rowsOf(t, st, v.Query), "variable %s", v.Name)
	}
	for _, p := range dash.Panels {
		require.Contains(t, string(datasources), "uid: "+p.Datasource.UID, "panel %q uses the provisioned data source", p.Title)
		require.Len(t, p.Targets, 1, p.Title)
		sql := expand(p.Targets[0].RawSQL)
		require.NotContains(t, sql, "$", "panel %q uses a macro or variable the test does not expand", p.Title)
		rows, err := st.Pool().Query(context.Background(), sql)
		require.NoError(t, err, p.Title)
		cols := rows.FieldDescriptions()
		n := 0
		for rows.Next() {
			n++
		}
		require.NoError(t, rows.Err(), p.Title)
		require.Positive(t, n, "panel %q shows nothing on the known data", p.Title)
		if p.Targets[0].Format == "time_series" {
			var names []string
			for _, c := range cols {
				names = append(names, c.Name)
			}
			require.Equal(t, []string{"time", "metric", "value"}, names, p.Title)
		}
	}
}
