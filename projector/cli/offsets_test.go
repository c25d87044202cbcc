package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

const testTopic = "workflow-events"

// world is a broker with the topic, a migrated database, and the flags
// that point the CLI at both.
type world struct {
	t       *testing.T
	cluster *kfake.Cluster
	url     string
	st      *store.Store
	// projections are the user's, loaded by every command the world runs
	// (and by st).
	projections []store.Projection
}

func newWorld(t *testing.T, partitions int32, opts ...kfake.Opt) *world {
	t.Helper()
	return newWorldWith(t, partitions, nil, opts...)
}

// newWorldWith is newWorld whose commands load the user's projections, as
// a binary of the user's does.
func newWorldWith(t *testing.T, partitions int32, projections []store.Projection, opts ...kfake.Opt) *world {
	t.Helper()
	w := &world{t: t, cluster: kafkatest.New(t, testTopic, partitions, opts...), url: storetest.URL(t), projections: projections}
	w.st = storetest.OpenWith(t, w.url, projections...)
	return w
}

// cli runs the command line against the world's broker and database.
func (w *world) cli(args ...string) (int, string, string) {
	w.t.Helper()
	return runCLIWith(w.t, w.projections, append([]string{"--database-url", w.url, "--brokers", w.cluster.ListenAddrs()[0], "--group", "g"}, args...)...)
}

// consume runs the worker until it has caught up, and returns the number
// of new events it applied, from its last log line.
func (w *world) consume() int {
	w.t.Helper()
	code, _, stderr := w.cli("--log-format", "json", "run", "--until-caught-up", "--batch-wait", "1ms")
	require.Equal(w.t, 0, code, stderr)
	m := regexp.MustCompile(`"events":(\d+),[^\n]*"msg":"stopped"`).FindStringSubmatch(stderr)
	require.NotNil(w.t, m, stderr)
	n, err := strconv.Atoi(m[1])
	require.NoError(w.t, err)
	return n
}

func (w *world) count(q string, args ...any) int64 {
	w.t.Helper()
	var n int64
	require.NoError(w.t, w.st.Pool().QueryRow(context.Background(), q, args...).Scan(&n))
	return n
}

// keyedWorkload keys every message by its run, so that duplicates of an
// event share its partition: which copy is applied first, and so its
// stored position, then does not depend on how the worker interleaves
// partitions, and whole snapshots compare equal.
func keyedWorkload(seed uint64, runs int) eventgen.Workload {
	return eventgen.Generate(eventgen.Config{Seed: seed, Runs: runs, DuplicateRate: 0.05, ShuffleRate: 0.2,
		MalformedRate: 0.03, RetryRate: 0.1})
}

func TestOffsetsShowTableAndJSON(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3, kfake.SeedTopics(2, "other-events"))
	wl := keyedWorkload(41, 60)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	w.consume()
	more := keyedWorkload(42, 5).Messages
	kafkatest.Produce(t, w.cluster, testTopic, more)
	hwm := kafkatest.HighWatermarks(w.cluster, testTopic)

	code, out, stderr := w.cli("--topics", testTopic+",other-events", "offsets", "show")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "TOPIC            PARTITION  NEXT OFFSET  LOG START  HIGH WATERMARK  LAST STABLE  LAG")
	require.Contains(t, out, fmt.Sprintf("total lag %d messages", len(more)))
	require.Regexp(t, `other-events\s+1\s+-\s+0\s+0\s+0\s+0\s+-\s+no stored offset`, out)

	code, out, stderr = w.cli("--topics", testTopic+",other-events", "offsets", "show", "--output", "json")
	require.Equal(t, 0, code, stderr)
	var rows []partitionOffsets
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.Len(t, rows, 5)
	var lag int64
	for _, r := range rows[:3] {
		require.Equal(t, testTopic, r.Topic)
		require.NotNil(t, r.NextOffset)
		require.NotNil(t, r.UpdatedAt)
		require.WithinDuration(t, time.Now(), *r.UpdatedAt, time.Minute)
		require.Equal(t, hwm[r.Partition], r.HighWatermark)
		require.Equal(t, r.HighWatermark, r.LastStableOffset, "no transaction open")
		require.Equal(t, r.HighWatermark-*r.NextOffset, r.Lag)
		lag += r.Lag
	}
	require.Equal(t, int64(len(more)), lag)
	require.Equal(t, partitionOffsets{Topic: "other-events", Partition: 0, Note: "no stored offset: a worker starts at the log start"}, rows[3])
}

// TestOffsetsResetWholeTopicThenConsumeAgain resets every partition to
// the earliest offset: every effect is removed, and consuming again
// applies each event exactly once more and ends with the same tables.
func TestOffsetsResetWholeTopicThenConsumeAgain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 4)
	wl := keyedWorkload(43, 200)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	require.Equal(t, wl.Valid, w.consume())
	before := storetest.Snapshot(t, w.st)

	code, out, stderr := w.cli("offsets", "reset", "--to", "earliest", "--dry-run")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "dry run")
	require.Contains(t, out, fmt.Sprintf("%d events and %d dead letters to remove; %d runs touched", wl.Valid, wl.Invalid, 200))
	require.Equal(t, before, storetest.Snapshot(t, w.st), "a dry run changes nothing")

	code, out, stderr = w.cli("offsets", "reset", "--to", "earliest")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, fmt.Sprintf("%d events and %d dead letters removed; 200 runs touched, recomputed from the events that remain: 0 updated, 200 deleted", wl.Valid, wl.Invalid))
	require.Zero(t, w.count(`SELECT count(*) FROM workflow_events`))
	require.Zero(t, w.count(`SELECT count(*) FROM workflow_runs`))
	require.Zero(t, w.count(`SELECT count(*) FROM dead_letters`))
	require.Zero(t, w.count(`SELECT sum(next_offset) FROM consumer_offsets`))

	require.Equal(t, wl.Valid, w.consume(), "each event applied exactly once more")
	require.Equal(t, before, storetest.Snapshot(t, w.st))
}

func TestOffsetsResetOnePartitionToAnOffsetThenConsumeAgain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3)
	// Unkeyed messages too: runs span partitions. Only partition 1 is
	// read again, so positions stay deterministic.
	wl := eventgen.Generate(eventgen.Config{Seed: 44, Runs: 200, DuplicateRate: 0.05, ShuffleRate: 0.2,
		MalformedRate: 0.03, RetryRate: 0.1, UnkeyedRate: 0.3})
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)
	w.consume()
	before := storetest.Snapshot(t, w.st)
	mid := kafkatest.HighWatermarks(w.cluster, testTopic)[1] / 2
	removed := w.count(`SELECT count(*) FROM workflow_events WHERE partition = 1 AND "offset" >= $1`, mid)
	removedDead := w.count(`SELECT count(*) FROM dead_letters WHERE partition = 1 AND "offset" >= $1`, mid)
	require.Positive(t, removed)

	code, out, stderr := w.cli("offsets", "reset", "--topic", testTopic, "--partition", "1", "--to", strconv.FormatInt(mid, 10))
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, fmt.Sprintf(`%s\s+1\s+\d+\s+%d\s+%d\s+%d\n`, testTopic, mid, removed, removedDead), out)
	require.NotContains(t, out, testTopic+"  0", "only partition 1")
	require.Zero(t, w.count(`SELECT count(*) FROM workflow_events WHERE partition = 1 AND "offset" >= $1`, mid))
	require.Equal(t, mid, w.count(`SELECT next_offset FROM consumer_offsets WHERE partition = 1`))

	require.Equal(t, int(removed), w.consume(), "each removed event applied exactly once more")
	require.Equal(t, before, storetest.Snapshot(t, w.st))
}

func TestOffsetsResetToATimeThenConsumeAgain(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3)
	wl := keyedWorkload(45, 200)
	half := len(wl.Messages) / 2
	// The first half is stamped two hours ago, the second half now; the
	// reset goes to the hour between.
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	kafkatest.ProduceAt(t, w.cluster, testTopic, wl.Messages[:half], at.Add(-time.Hour))
	hwmBefore := kafkatest.HighWatermarks(w.cluster, testTopic)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages[half:])
	w.consume()
	before := storetest.Snapshot(t, w.st)

	code, out, stderr := w.cli("offsets", "reset", "--to", at.Format(time.RFC3339Nano))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "reset group g to "+at.Format(time.RFC3339Nano))
	stored, err := w.st.StoredOffsets(context.Background(), "g")
	require.NoError(t, err)
	for p, hwm := range hwmBefore {
		require.Equal(t, hwm, stored[model.TopicPartition{Topic: testTopic, Partition: p}],
			"partition %d moves to its first message produced after the time", p)
	}

	w.consume()
	require.Equal(t, before, storetest.Snapshot(t, w.st))

	// A time after every message: the high watermark, nothing removed.
	code, out, stderr = w.cli("offsets", "reset", "--to", time.Now().Add(time.Hour).Format(time.RFC3339))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "0 events and 0 dead letters removed; 0 runs touched")
	require.Equal(t, before, storetest.Snapshot(t, w.st))
}

// TestOffsetsResetWhileAWorkerRuns resets under a running worker: its
// fence fails, it rejoins and consumes again from the new offsets, and
// the tables end as they were.
func TestOffsetsResetWhileAWorkerRuns(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 3)
	wl := keyedWorkload(46, 300)
	kafkatest.Produce(t, w.cluster, testTopic, wl.Messages)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"projector", "--database-url", w.url, "--brokers", w.cluster.ListenAddrs()[0], "--group", "g",
			"--log-level", "debug", "run", "--batch-size", "50", "--batch-wait", "1ms"}, &lockedBuffer{}, stderr)
	}()
	// caughtUp runs in waitUntil, on the test's goroutine: a failed
	// query fails the test at once.
	caughtUp := func() bool {
		stored, err := w.st.StoredOffsets(context.Background(), "g")
		require.NoError(t, err)
		for p, hwm := range kafkatest.HighWatermarks(w.cluster, testTopic) {
			if stored[model.TopicPartition{Topic: testTopic, Partition: p}] != hwm {
				return false
			}
		}
		return w.count(`SELECT count(*) FROM workflow_events`) == int64(wl.Valid)
	}
	waitUntil(t, time.Minute, caughtUp)
	before := storetest.Snapshot(t, w.st)

	code, out, errOut := w.cli("offsets", "reset", "--to", "earliest")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, fmt.Sprintf("%d events and %d dead letters removed", wl.Valid, wl.Invalid))
	waitUntil(t, time.Minute, caughtUp, "the worker consumes everything again")
	require.Contains(t, stderr.String(), "fenced: ending the claim and rejoining the group")
	require.Equal(t, before, storetest.Snapshot(t, w.st))

	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not stop")
	}
	require.Regexp(t, fmt.Sprintf(`msg=stopped[^\n]*events=%d`, 2*wl.Valid), stderr.String(), "every event applied exactly twice: once before the reset, once after")
}

func TestOffsetsErrorsExitWithOneLine(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	kafkatest.Produce(t, w.cluster, testTopic, keyedWorkload(47, 10).Messages)
	hwm := kafkatest.HighWatermarks(w.cluster, testTopic)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"offset out of range", []string{"offsets", "reset", "--to", strconv.FormatInt(hwm[0]+hwm[1]+1, 10)}, 2,
			fmt.Sprintf("is outside the partition's log: %s/0 has [0, %d], %s/1 has [0, %d]", testTopic, hwm[0], testTopic, hwm[1])},
		{"unknown topic", []string{"offsets", "reset", "--to", "earliest", "--topic", "nope"}, 2, `topic "nope" does not exist on the broker`},
		{"unknown topic in show", []string{"--topics", "nope", "offsets", "show"}, 2, `topic "nope" does not exist on the broker`},
		{"unknown partition", []string{"offsets", "reset", "--to", "earliest", "--partition", "7"}, 2, "has partitions 0 to 1, not 7"},
		{"negative partition", []string{"offsets", "reset", "--to", "earliest", "--partition", "-1"}, 2, "--partition"},
		{"bad to", []string{"offsets", "reset", "--to", "yesterday"}, 2, `--to: "yesterday" is not earliest, latest`},
		{"missing to", []string{"offsets", "reset"}, 2, "--to is required"},
		{"negative offset", []string{"offsets", "reset", "--to", "-3"}, 2, "negative"},
		{"bad output", []string{"offsets", "show", "--output", "yaml"}, 2, "--output"},
		{"bad topic name", []string{"offsets", "reset", "--to", "earliest", "--topic", "a b"}, 2, "not a valid Kafka topic name"},
		{"broker unreachable", []string{"--brokers", "127.0.0.1:1", "offsets", "show"}, 1, "connect to kafka at 127.0.0.1:1"},
		{"no database", []string{"--database-url", "postgres://postgres@127.0.0.1:1/none", "offsets", "show"}, 1, "connect to database postgres://postgres@127.0.0.1:1/none"},
		{"database not migrated", []string{"--database-url", storetest.EmptyURL(t), "offsets", "reset", "--to", "earliest"}, 2, "projector migrate up"},
	}
	// Cleanups run once the parallel cases are done.
	t.Cleanup(func() {
		if n := w.count(`SELECT count(*) FROM consumer_offsets`); n != 0 {
			t.Errorf("a failed reset stored %d offsets", n)
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := w.cli(tc.args...)
			requireOneLineError(t, tc.code, tc.want, code, stderr)
		})
	}
}

// requireOneLineError checks a failed command: its exit code, and one line
// on stderr, prefixed "projector: ", that says want.
func requireOneLineError(t *testing.T, wantCode int, want string, code int, stderr string) {
	t.Helper()
	require.Equal(t, wantCode, code, stderr)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	require.Len(t, lines, 1, stderr)
	require.True(t, strings.HasPrefix(lines[0], "projector: "), stderr)
	require.Contains(t, lines[0], want)
}
