package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/sqlprojections"
	"github.com/projector-run/projector/store/storetest"
)

// Projections in SQL (contract 7.2) at the command line: --projections-dir
// loads the files, every command checks them at start, and the examples'
// tables follow the events through catch-up, resets and rebuilds as a Go
// projection's do.

// writeSQLDir writes files (name to content) into a new directory.
func writeSQLDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644))
	}
	return dir
}

// goodCounter is a valid projection in SQL: a count per event type.
const goodCounter = `-- +projector Setup
CREATE TABLE IF NOT EXISTS type_counts (event_type text PRIMARY KEY, n bigint NOT NULL);
-- +projector Apply
INSERT INTO type_counts AS t SELECT event_type, count(*) FROM new_events GROUP BY 1 ORDER BY 1
ON CONFLICT (event_type) DO UPDATE SET n = t.n + excluded.n;
-- +projector Forget
UPDATE type_counts AS t SET n = t.n - f.n
FROM (SELECT event_type, count(*) AS n FROM workflow_events JOIN forgotten_runs USING (workflow_run_id) GROUP BY 1) AS f
WHERE t.event_type = f.event_type;
`

// TestSQLProjectionFilesRefusedWithExitTwo: each way a file or the
// directory can be wrong stops every command that loads it with exit code
// 2 and one line naming the file, the section and PostgreSQL's message,
// with the file's line where PostgreSQL gives a position. Nothing of a
// refused check stays in the database.
func TestSQLProjectionFilesRefusedWithExitTwo(t *testing.T) {
	t.Parallel()
	url := storetest.URL(t)
	st := storetest.Open(t, url)
	afterGood := strconv.Itoa(strings.Count(goodCounter, "\n") + 1) // the line after goodCounter
	notADir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notADir, nil, 0o644))
	for _, tc := range []struct {
		name  string
		dir   string            // when set, instead of files
		files map[string]string // besides a good one
		want  string            // regexp of the line after "projector: "
	}{
		{name: "no such directory", dir: "/nonexistent/projections",
			want: `^--projections-dir: read projections directory: stat /nonexistent/projections: no such file or directory$`},
		{name: "not a directory", dir: notADir,
			want: `^--projections-dir: read projections directory \S+/file: .*not a directory$`},
		{name: "name not a projection's", files: map[string]string{"Runs-By.sql": goodCounter},
			want: `^--projections-dir: \S+/Runs-By\.sql: not a projection's file name: NAME\.sql, NAME \[a-z\]\[a-z0-9_\]\*, at most 63 bytes$`},
		{name: "name too long", files: map[string]string{strings.Repeat("a", 64) + ".sql": goodCounter},
			want: `^--projections-dir: \S+/a{64}\.sql: not a projection's file name`},
		{name: "name taken by a built-in projection", files: map[string]string{"workflow_runs.sql": goodCounter},
			want: `bad projection "workflow_runs": the name is taken`},
		{name: "missing section", files: map[string]string{"p.sql": "-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSELECT 1;\n"},
			want: `^--projections-dir: \S+/p\.sql: misses section Forget \(a line "-- \+projector Forget"\)$`},
		{name: "unknown section", files: map[string]string{"p.sql": goodCounter + "-- +projector Teardown\nDROP TABLE type_counts;\n"},
			want: `^--projections-dir: \S+/p\.sql:` + afterGood + `: unknown section marker "-- \+projector Teardown"`},
		{name: "section twice", files: map[string]string{"p.sql": goodCounter + "-- +projector Apply\nSELECT 1;\n"},
			want: `^--projections-dir: \S+/p\.sql:` + afterGood + `: section Apply given twice$`},
		{name: "SQL before the first section", files: map[string]string{"p.sql": "-- counts\nSELECT 1;\n" + goodCounter},
			want: `^--projections-dir: \S+/p\.sql:2: SQL before the first section marker`},
		{name: "empty section", files: map[string]string{"q.sql": "-- +projector Setup\nSELECT 1;\n-- +projector Apply\n-- nothing\n-- +projector Forget\nSELECT 1;\n"},
			want: `^--projections-dir: \S+/q\.sql:4: section Apply: has no SQL statement$`},
		{name: "unclosed string", files: map[string]string{"p.sql": "-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSELECT 1;\nSELECT 'oops;\n-- +projector Forget\nSELECT 1;\n"},
			want: `^--projections-dir: \S+/p\.sql:5: section Apply: a '-quoted string is not closed$`},
		{name: "transaction control", files: map[string]string{"p.sql": "-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSELECT 1;\n\nCOMMIT;\n-- +projector Forget\nSELECT 1;\n"},
			want: `^--projections-dir: \S+/p\.sql:6: section Apply: COMMIT: a projection runs inside the transaction that stores the events; it cannot end or control it$`},
		{name: "syntax error in Setup", files: map[string]string{"p.sql": "-- +projector Setup\nCREATE TABLE IF NOT EXISTS p_t (\n  n bigint NOT NULL,\n);\n-- +projector Apply\nSELECT 1;\n-- +projector Forget\nSELECT 1;\n"},
			want: `(^|: )\S+/p\.sql:4: section Setup: syntax error at or near "\)" \(SQLSTATE 42601\)$`},
		{name: "Setup fails", files: map[string]string{"p.sql": "-- +projector Setup\nCREATE TABLE p_t (n bigint);\nCREATE TABLE p_t (n bigint);\n-- +projector Apply\nSELECT 1;\n-- +projector Forget\nSELECT 1;\n"},
			want: `(^|: )\S+/p\.sql:3: section Setup: relation "p_t" already exists \(SQLSTATE 42P07\)$`},
		{name: "relation that does not exist in Apply", files: map[string]string{"p.sql": "-- +projector Setup\nCREATE TABLE IF NOT EXISTS p_t (n bigint);\n-- +projector Apply\nINSERT INTO p_t\n  SELECT count(*)\n  FROM new_event;\n-- +projector Forget\nDELETE FROM p_t;\n"},
			want: `(^|: )\S+/p\.sql:6: section Apply: relation "new_event" does not exist \(SQLSTATE 42P01\)$`},
		{name: "column that does not exist in Forget", files: map[string]string{"p.sql": goodCounter + "DELETE FROM type_counts WHERE run_id IN (SELECT workflow_run_id FROM forgotten_runs);\n"},
			want: `(^|: )\S+/p\.sql:` + afterGood + `: section Forget: column "run_id" does not exist \(SQLSTATE 42703\)$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := tc.dir
			if dir == "" {
				files := map[string]string{"a_good.sql": goodCounter}
				for k, v := range tc.files {
					files[k] = v
				}
				dir = writeSQLDir(t, files)
			}
			for _, args := range [][]string{
				{"projections", "check"},
				{"migrate", "up"},
				{"run", "--until-caught-up"},
				{"rebuild"},
				{"offsets", "show"},
			} {
				code, _, stderr := runCLI(t, append([]string{"--database-url", url, "--brokers", "127.0.0.1:1", "--projections-dir", dir}, args...)...)
				require.Equal(t, 2, code, "%v: %s", args, stderr)
				// The error's one line is the last (run logs that it starts).
				lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
				line := lines[len(lines)-1]
				require.True(t, strings.HasPrefix(line, "projector: "), "%v: %s", args, line)
				require.Regexp(t, tc.want, strings.TrimPrefix(line, "projector: "), "%v", args)
			}
		})
	}
	var n int
	require.NoError(t, st.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM pg_tables WHERE tablename IN ('p_t', 'type_counts')`).Scan(&n))
	require.Zero(t, n, "a check leaves nothing behind")

	// A good directory checks with exit code 0 and says so.
	code, out, stderr := runCLI(t, "--database-url", url, "--projections-dir", sqlprojections.Dir(), "projections", "check")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "3 files, each parsed")
	code, _, stderr = runCLI(t, "--database-url", url, "projections", "check")
	require.Equal(t, 2, code)
	require.Equal(t, "projector: projections check needs --projections-dir (or PROJECTIONS_DIR): the directory of the projections in SQL\n", stderr)
}

// sqlWorld is a world whose commands load the examples.
func (w *world) sql(args ...string) (int, string, string) {
	return w.cli(append([]string{"--projections-dir", sqlprojections.Dir()}, args...)...)
}

// consumeSQL is consume with the examples loaded.
func (w *world) consumeSQL() int {
	w.t.Helper()
	code, _, stderr := w.sql("--log-format", "json", "run", "--until-caught-up", "--batch-wait", "1ms")
	require.Equal(w.t, 0, code, stderr)
	m := regexp.MustCompile(`"events":(\d+),[^\n]*"msg":"stopped"`).FindStringSubmatch(stderr)
	require.NotNil(w.t, m, stderr)
	n, err := strconv.Atoi(m[1])
	require.NoError(w.t, err)
	return n
}

// requireExamples checks the examples' tables against what events make.
func (w *world) requireExamples(events []model.Event, when string) {
	w.t.Helper()
	got, err := sqlprojections.Tables(context.Background(), w.st.Pool())
	require.NoError(w.t, err)
	want := sqlprojections.Want(events)
	require.Equal(w.t, want, got, "%s: the examples' tables", when)
}

// TestSQLExamplesFollowEvents consumes a workload with duplicates, events
// of a run out of order and on several partitions, then resets offsets
// (the whole topic, one partition to an offset, to a time), consuming
// again after each, and rebuilds: each time the three examples' tables
// equal what the distinct stored events make, computed in Go. A database
// that already holds events builds them from those first.
func TestSQLExamplesFollowEvents(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3)
	wl := eventgen.Generate(eventgen.Config{Seed: 91, Runs: 200, DuplicateRate: 0.05, ShuffleRate: 0.3,
		MalformedRate: 0.03, RetryRate: 0.1, UnkeyedRate: 0.3})
	half := len(wl.Messages) / 2
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	kafkatest.ProduceAt(t, w.cluster, testTopic, wl.Messages[:half], at.Add(-time.Hour))
	all := distinctEvents(wl.Messages)

	// The first half is stored without the examples: they are built from
	// it at the next start.
	first := w.consume()
	require.Positive(t, first)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages[half:])
	require.Equal(t, wl.Valid-first, w.consumeSQL())
	require.Greater(t, len(sqlprojections.Want(all)), 30, "the workload fills the examples' tables")
	w.requireExamples(all, "after a build and catching up")
	code, out, stderr := w.sql("projections", "list", "--output", "json")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `"name": "runs_per_source_day",\s+"kind": "sql",\s+"file": "\S+/examples/runs_per_source_day.sql",\s+"state": "ready"`, out)

	resetThenConsume := func(args ...string) {
		t.Helper()
		when := "offsets reset " + strings.Join(args, " ")
		stored := w.count(`SELECT count(*) FROM workflow_events`)
		code, _, stderr := w.sql(append([]string{"offsets", "reset"}, args...)...)
		require.Equal(t, 0, code, stderr)
		remaining := w.storedEvents()
		require.Less(t, int64(len(remaining)), stored, "%s removes events", when)
		w.requireExamples(remaining, "after "+when)
		require.Equal(t, int(stored)-len(remaining), w.consumeSQL(), "%s: each removed event applied once more", when)
		w.requireExamples(all, "after "+when+" and consuming again")
	}
	resetThenConsume("--to", "earliest")
	mid := kafkatest.HighWatermarks(w.cluster, testTopic)[1] / 2
	resetThenConsume("--topic", testTopic, "--partition", "1", "--to", strconv.FormatInt(mid, 10))
	resetThenConsume("--to", at.Format(time.RFC3339Nano))

	// Damaged tables come back with a rebuild.
	_, err := w.st.Pool().Exec(context.Background(), `UPDATE runs_per_source_day SET runs = runs + 7;
		DELETE FROM latest_run_per_workflow WHERE workflow_id < 'm'; UPDATE events_per_type_hour SET runs = 0`)
	require.NoError(t, err)
	code, _, stderr = w.sql("rebuild", "--projection", "latest_run_per_workflow")
	require.Equal(t, 0, code, stderr)
	code, _, stderr = w.sql("rebuild", "--projection", "events_per_type_hour")
	require.Equal(t, 0, code, stderr)
	// A counter's Forget subtracts what the stored events added: it can
	// only undo what they did, so a table damaged by hand is emptied
	// first (see the README).
	_, err = w.st.Pool().Exec(context.Background(), `DELETE FROM runs_per_source_day`)
	require.NoError(t, err)
	code, _, stderr = w.sql("rebuild", "--projection", "runs_per_source_day")
	require.Equal(t, 0, code, stderr)
	w.requireExamples(all, "after rebuilds")

	// Without the directory, the worker and the commands that change
	// events refuse to run: the examples' tables would go wrong.
	for _, args := range [][]string{{"run", "--until-caught-up"}, {"rebuild"}, {"offsets", "reset", "--to", "earliest"}} {
		code, _, stderr := w.cli(args...)
		require.Equal(t, 2, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "the database has projections events_per_type_hour, latest_run_per_workflow, runs_per_source_day, "+
			"not loaded in this process (a different binary, or a missing --projections-dir?)", args)
	}
	w.requireExamples(all, "after the refusals")

	// A dead letter that is valid today is applied to them once by a
	// replay, like any new event.
	end := kafkatest.HighWatermarks(w.cluster, testTopic)[0]
	late := `{"event_id":"late-1","event_type":"run.queued","source":"late-source","workflow_id":"late-wf","workflow_run_id":"late-run","timestamp":"2026-01-01T00:00:00Z"}`
	_, err = w.st.Pool().Exec(context.Background(), `INSERT INTO dead_letters (topic, partition, "offset", key, value, headers, reason, error)
		VALUES ($1, 0, $2, 'late-run', $3, '[]', 'unsupported_schema_version', 'an older rule')`, testTopic, end, late)
	require.NoError(t, err)
	for range 2 {
		code, _, stderr = w.sql("dlq", "replay")
		require.Equal(t, 0, code, stderr)
	}
	ev, err := model.Decode([]byte(late))
	require.NoError(t, err)
	w.requireExamples(append(all, ev), "after a dead letter replayed twice")
}

// failingSQL is a projection in SQL whose table refuses every row (a
// CHECK), until the file is mended (mendedSQL drops the constraint in its
// Setup).
const failingSQL = `-- +projector Setup
CREATE TABLE IF NOT EXISTS refusing (event_type text PRIMARY KEY, n bigint NOT NULL,
    CONSTRAINT refuse_all CHECK (n < 0));
-- +projector Apply
INSERT INTO refusing AS t SELECT event_type, count(*) FROM new_events GROUP BY 1 ORDER BY 1
ON CONFLICT (event_type) DO UPDATE SET n = t.n + excluded.n;
-- +projector Forget
DELETE FROM refusing;
`

var mendedSQL = strings.Replace(failingSQL, "-- +projector Apply\n", "ALTER TABLE refusing DROP CONSTRAINT IF EXISTS refuse_all;\n-- +projector Apply\n", 1)

// TestSQLProjectionFailingApplyStallsAndHeals: a projection in SQL whose
// Apply fails at run time (a CHECK of its table) stalls its partitions:
// nothing is stored, no event becomes a dead letter, no offset moves, and
// /readyz names the projection, with the file and line of the statement.
// Once the file is mended and the worker restarted, every event is
// applied exactly once.
func TestSQLProjectionFailingApplyStallsAndHeals(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cluster := kafkatest.New(t, testTopic, 2)
	wl := keyedWorkload(34, 60)
	kafkatest.Produce(t, cluster, testTopic, wl.Messages)
	url := storetest.URL(t)
	st := storetest.Open(t, url)
	dir := writeSQLDir(t, map[string]string{"refusing.sql": failingSQL, "type_counts.sql": goodCounter})
	args := []string{"projector", "--database-url", url, "--brokers", cluster.ListenAddrs()[0], "--projections-dir", dir}

	stderr := &lockedBuffer{}
	exit := make(chan int, 1)
	go func() { exit <- Run(ctx, append(args, "run", "--http-addr", "127.0.0.1:0"), io.Discard, stderr) }()
	var base string
	waitUntil(t, time.Minute, func() bool {
		m := servingAddr.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	}, "the server never said where it listens:\n%s", stderr)
	stalled := func() {
		t.Helper()
		require.Zero(t, count(t, st, `SELECT count(*) FROM workflow_events`), "nothing stored while refusing fails")
		require.Zero(t, count(t, st, `SELECT count(*) FROM dead_letters`), "no dead letter while refusing fails")
		require.Zero(t, count(t, st, `SELECT count(*) FROM consumer_offsets WHERE next_offset <> 0`), "no offset moves")
	}
	failing := regexp.MustCompile(`(?m)^worker: apply batch workflow-events/\d \[0, \d+\): projection refusing: apply: \S+/refusing\.sql: section Apply \(lines 5-6\): new row for relation "refusing" violates check constraint "refuse_all"`)
	var code int
	var body string
	waitUntil(t, time.Minute, func() bool {
		stalled()
		code, body = get(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && failing.MatchString(body) &&
			samples(scrape(t, base), "projector_projection_errors_total", "projection")["refusing"] >= 2
	}, "/readyz never named the failing projection: %d %s", code, body)
	stalled()
	require.Zero(t, count(t, st, `SELECT count(*) FROM type_counts`), "the other projection applies nothing either")
	cancel()
	require.Equal(t, 0, <-exit, stderr.String())
	require.Regexp(t, `level=error msg="apply batch failed: projection refusing returned an error[^\n]* projection=refusing`, stderr.String())
	stalled()

	// Mended and restarted, the worker applies everything once.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "refusing.sql"), []byte(mendedSQL), 0o644))
	var out strings.Builder
	runCtx, stop := context.WithTimeout(context.Background(), 2*time.Minute)
	defer stop()
	errOut := &lockedBuffer{}
	require.Equal(t, 0, Run(runCtx, append(args, "run", "--until-caught-up"), &out, errOut), errOut.String())
	events := distinctEvents(wl.Messages)
	require.Equal(t, int64(len(events)), count(t, st, `SELECT count(*) FROM workflow_events`))
	require.Equal(t, int64(len(events)), count(t, st, `SELECT sum(n) FROM refusing`), "each event applied once to the mended projection")
	require.Equal(t, int64(len(events)), count(t, st, `SELECT sum(n) FROM type_counts`), "and once to the other")
}

// TestSQLProjectionsNeedTemporaryTables: a role that may not create
// temporary tables cannot run projections in SQL: every command says so,
// exit code 2, instead of retrying as if PostgreSQL were away.
func TestSQLProjectionsNeedTemporaryTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := storetest.URL(t)
	st := storetest.Open(t, dbURL)
	role := fmt.Sprintf("sqlproj_%d", time.Now().UnixNano())
	var db string
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT current_database()`).Scan(&db))
	// Roles are the server's: made by its superuser, in the test's
	// database.
	su, err := url.Parse(storetest.ServerURL(t))
	require.NoError(t, err)
	su.Path = "/" + db
	admin, err := pgx.Connect(ctx, su.String())
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO %[1]s;
		REVOKE TEMPORARY ON DATABASE %s FROM PUBLIC`, role, pgx.Identifier{db}.Sanitize()))
	require.NoError(t, err)
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), su.String())
		if err == nil {
			_, _ = conn.Exec(context.Background(), fmt.Sprintf(`DROP OWNED BY %s; DROP ROLE %[1]s`, role))
			_ = conn.Close(context.Background())
		}
	})
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.User(role)
	for _, args := range [][]string{{"projections", "check"}, {"run", "--until-caught-up"}} {
		code, _, stderr := runCLI(t, append([]string{"--database-url", u.String(), "--brokers", "127.0.0.1:1",
			"--projections-dir", sqlprojections.Dir()}, args...)...)
		require.Equal(t, 2, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "PostgreSQL refuses the temporary tables new_events and forgotten_runs that projections in SQL need (GRANT TEMPORARY ON DATABASE to the worker's role)", args)
		require.Contains(t, stderr, "permission denied to create temporary tables")
	}
}
