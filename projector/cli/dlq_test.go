package cli

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/storetest"
)

// TestDLQListShowReplay consumes a workload with malformed messages, adds
// the dead letter an older version would have left for a message that is
// valid today, and goes through list, show and replay.
func TestDLQListShowReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 2)
	wl := keyedWorkload(61, 100)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	w.consume()
	end := kafkatest.HighWatermarks(w.cluster, testTopic)[0]
	valid := `{"event_id":"late-1","event_type":"run.queued","source":"ci","workflow_id":"wf","workflow_run_id":"late-run","timestamp":"2026-01-01T00:00:00Z","schema_version":1}`
	_, err := w.st.Pool().Exec(ctx, `INSERT INTO dead_letters (topic, partition, "offset", key, value, headers, reason, error)
		VALUES ($1, 0, $2, 'late-run', $3, '[{"key": "content-type", "value": "application/json"}]', 'unsupported_schema_version', 'an older rule'),
		       ($1, 0, $4, NULL, '\xff00fe', '[]', 'invalid_json', 'not UTF-8')`, testTopic, end, valid, end+1)
	require.NoError(t, err)
	pos := fmt.Sprintf("%s/0/%d", testTopic, end)
	db := []string{"--database-url", w.url}

	code, out, stderr := runCLI(t, append(db, "dlq", "list")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "POSITION")
	require.Contains(t, out, fmt.Sprintf("%d of %d dead letters", min(50, wl.Invalid+2), wl.Invalid+2))

	code, out, stderr = runCLI(t, append(db, "dlq", "list", "--reason", "unsupported_schema_version", "--limit", "2")...)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^\S+\s+unsupported_schema_version\s+\d+\s+\S+\s+schema_version: unsupported schema version`, out)
	require.Contains(t, out, fmt.Sprintf("2 of %d dead letters of reason unsupported_schema_version", wl.Reasons[model.ReasonUnsupportedSchemaVersion]+1))
	code, out, stderr = runCLI(t, append(db, "dlq", "list", "--reason", "unsupported_schema_version")...)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, regexp.QuoteMeta(pos)+`\s+unsupported_schema_version\s+`+fmt.Sprint(len(valid))+`\s+\S+\s+an older rule`, out)
	require.Contains(t, out, fmt.Sprintf("%[1]d of %[1]d dead letters", wl.Reasons[model.ReasonUnsupportedSchemaVersion]+1))

	code, out, stderr = runCLI(t, append(db, "dlq", "show", pos)...)
	require.Equal(t, 0, code, stderr)
	for _, want := range []string{
		"position     " + pos, "reason       unsupported_schema_version", "error        an older rule",
		"today        valid: `projector dlq replay " + pos + "` applies it",
		`headers      [{"key": "content-type", "value": "application/json"}]`,
		`key          "late-run" (8 bytes, text)`, fmt.Sprintf("value        %d bytes, text:\n%s", len(valid), valid),
	} {
		require.Contains(t, out, want)
	}
	code, out, stderr = runCLI(t, append(db, "dlq", "show", fmt.Sprintf("%s/0/%d", testTopic, end+1))...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "key          (none)")
	require.Contains(t, out, "value        3 bytes, not text, hex:\n00000000  ff 00 fe")
	require.Contains(t, out, "today        still invalid: ")

	before := storetest.Snapshot(t, w.st)
	code, out, stderr = runCLI(t, append(db, "dlq", "replay", "--dry-run")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, fmt.Sprintf("dry run: of %d dead letters, 1 would be applied, 0 are duplicates", wl.Invalid+2))
	require.Equal(t, before, storetest.Snapshot(t, w.st), "a dry run changes nothing")

	code, out, stderr = runCLI(t, append(db, "dlq", "replay")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, fmt.Sprintf("replayed %d dead letters: 1 applied, 0 duplicates of stored events removed, %d still invalid", wl.Invalid+2, wl.Invalid+1))
	require.Contains(t, out, pos+"  applied: event late-1 (was unsupported_schema_version)")
	require.Equal(t, int64(1), w.count(`SELECT count(*) FROM workflow_runs WHERE workflow_run_id = 'late-run' AND event_count = 1`))
	require.Equal(t, int64(1), w.count(`SELECT count(*) FROM workflow_events WHERE event_id = 'late-1' AND partition = 0 AND "offset" = $1`, end))
	require.Equal(t, int64(wl.Invalid+1), w.count(`SELECT count(*) FROM dead_letters`))

	after := storetest.Snapshot(t, w.st)
	code, out, stderr = runCLI(t, append(db, "dlq", "replay")...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "0 applied, 0 duplicates")
	require.Equal(t, after, storetest.Snapshot(t, w.st), "replaying again applies nothing more")

	code, _, stderr = runCLI(t, append(db, "dlq", "replay", pos)...)
	requireOneLineError(t, 2, "dead letter "+pos+": not found", code, stderr)
	code, _, stderr = runCLI(t, append(db, "dlq", "show", pos)...)
	requireOneLineError(t, 2, "dead letter "+pos+": not found", code, stderr)
}

func TestDLQErrors(t *testing.T) {
	t.Parallel()
	url := storetest.URL(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"show without position", []string{"--database-url", url, "dlq", "show"}, 2, "expected one TOPIC/PARTITION/OFFSET argument, got 0"},
		{"show of a malformed position", []string{"--database-url", url, "dlq", "show", "events-3-4"}, 2, `"events-3-4" is not TOPIC/PARTITION/OFFSET`},
		{"replay of a malformed position", []string{"--database-url", url, "dlq", "replay", "t/x/1"}, 2, "is not TOPIC/PARTITION/OFFSET"},
		{"replay of a position not there", []string{"--database-url", url, "dlq", "replay", "t/0/1"}, 2, "dead letter t/0/1: not found"},
		{"unknown reason", []string{"--database-url", url, "dlq", "list", "--reason", "bad"}, 2, `--reason: "bad" is not one of too_large, invalid_json`},
		{"positions and reason", []string{"--database-url", url, "dlq", "replay", "--reason", "too_large", "t/0/1"}, 2, "either positions or a reason"},
		{"bad limit", []string{"--database-url", url, "dlq", "list", "--limit", "0"}, 2, "--limit"},
		{"no database", []string{"--database-url", "postgres://postgres@127.0.0.1:1/none", "dlq", "list"}, 1, "connect to database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runCLI(t, tc.args...)
			requireOneLineError(t, tc.code, tc.want, code, stderr)
		})
	}
}

func TestHelpNamesTheReprocessingCommandsAndVariables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"offsets", "rebuild", "dlq"}},
		{[]string{"offsets", "show", "--help"}, []string{"--output", "OUTPUT_FORMAT", "--kafka-version", "KAFKA_VERSION"}},
		{[]string{"offsets", "reset", "--help"}, []string{"--to", "RESET_TO", "--topic", "RESET_TOPIC", "--partition", "RESET_PARTITION", "--dry-run", "DRY_RUN"}},
		{[]string{"rebuild", "--help"}, []string{"--dry-run", "DRY_RUN"}},
		{[]string{"dlq", "list", "--help"}, []string{"--reason", "DLQ_REASON", "--limit", "DLQ_LIMIT"}},
		{[]string{"dlq", "replay", "--help"}, []string{"--reason", "--dry-run", "TOPIC/PARTITION/OFFSET"}},
	} {
		code, out, _ := runCLI(t, tc.args...)
		require.Equal(t, 0, code)
		for _, s := range tc.want {
			require.Contains(t, out, s, tc.args)
		}
	}
}
