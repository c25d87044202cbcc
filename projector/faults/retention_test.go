//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
)

// isIncidentLog matches the worker's error line about a stored offset
// outside the partition's log.
func isIncidentLog(l logLine) bool {
	return l.Level == "error" && strings.Contains(l.Msg, "is outside the partition's log")
}

// TestRetentionDeletesUnappliedMessages freezes a running worker for a
// moment while a new backlog is produced, and deletes records (as
// retention does) past where it stands in every partition before thawing
// it. Each lost range must be reported loudly, exactly: one
// consumer_incidents row and one error log line per partition, from where
// the worker stood to the new log start; the worker goes on from the log
// start, and everything else is applied exactly once.
func TestRetentionDeletesUnappliedMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 4})
	// One workload in parts: workloads of different seeds may reuse an
	// event_id with other bytes.
	msgs := workload(8, 4500)
	e.produce(msgs[:len(msgs)*4/9])
	w := e.startWorker("w")
	e.waitCaughtUp(time.Minute)
	w.signal(syscall.SIGSTOP)
	e.produce(msgs[len(msgs)*4/9 : len(msgs)*8/9])
	next, _, err := e.storedOffsets()
	require.NoError(t, err)
	deleted := map[int32]int64{}
	for p, pi := range e.broker.partitionInfos() {
		// Far past what the worker may have fetched of the new backlog
		// before it froze (at most 256 messages and one 256 KiB fetch
		// per partition).
		to := next[p] + 3000
		require.Less(t, to, pi.HighWatermark, "the backlog is large enough")
		require.NoError(t, e.broker.cluster().DeleteRecords(topic, p, to))
		deleted[p] = to
	}
	w.signal(syscall.SIGCONT)
	e.produce(msgs[len(msgs)*8/9:])
	e.waitCaughtUp(2 * time.Minute)
	e.stopAll()

	incidents := e.incidents()
	require.Len(t, incidents, 4, "one incident per partition: %+v", incidents)
	var lost []lostRange
	var gap int64
	for _, in := range incidents {
		require.Equal(t, model.IncidentOffsetOutOfRange, in.Kind)
		require.Equal(t, deleted[in.Partition], in.Actual, "the stored offset moved to the new log start")
		require.GreaterOrEqual(t, in.Expected, next[in.Partition], "from where the worker stood")
		require.Less(t, in.Expected, in.Actual)
		require.Contains(t, in.Detail, "deleted before they were applied")
		lost = append(lost, lostRange{Partition: in.Partition, From: in.Expected, To: in.Actual})
		gap += in.Actual - in.Expected
	}
	require.Equal(t, 4, e.countLogs(isIncidentLog), "one error line per incident")
	e.verify("retention", verifyOptions{lost: lost}, fmt.Sprintf("records deleted past the worker in 4 partitions; incidents=%d reporting %d messages lost; fence_rejections=%d",
		len(incidents), gap, e.countLogs(isFenced)))
}

// TestTopicRecreatedUnderWorker deletes the topic and creates it again
// under a running worker, then produces fewer messages than it had
// consumed: every stored offset is past the new high watermark. Each
// partition must be reported (incident and error line) and consumed again
// from the new log's start; the events of both incarnations are applied
// exactly once (an event_id already stored is skipped), and every invalid
// message of either is one dead letter.
func TestTopicRecreatedUnderWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 4})
	msgs := workload(10, 1800)
	e.produce(msgs[:len(msgs)*5/6])
	e.startWorker("w")
	e.waitCaughtUp(time.Minute)
	old, _, err := e.storedOffsets()
	require.NoError(t, err)

	c := e.broker.cluster()
	require.NoError(t, c.DeleteTopic(topic))
	require.NoError(t, c.CreateTopic(topic, 4, nil))
	e.prod.newGeneration()
	e.produce(msgs[len(msgs)*5/6:])
	for p, pi := range e.broker.partitionInfos() {
		require.Less(t, pi.HighWatermark, old[p], "the new incarnation is shorter")
	}
	e.waitCaughtUp(2 * time.Minute)
	e.stopAll()

	incidents := e.incidents()
	require.Len(t, incidents, 4, "one incident per partition: %+v", incidents)
	for _, in := range incidents {
		require.Equal(t, model.IncidentOffsetOutOfRange, in.Kind)
		require.Equal(t, old[in.Partition], in.Expected)
		require.Zero(t, in.Actual)
		require.Contains(t, in.Detail, "recreated")
	}
	require.Equal(t, 4, e.countLogs(isIncidentLog), "one error line per incident")
	var superseded int
	require.NoError(t, e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM dead_letters_superseded`).Scan(&superseded))
	require.Positive(t, superseded)
	e.verify("recreated", verifyOptions{backwardMoves: true}, fmt.Sprintf("topic recreated under the worker; incidents=%d; old log's dead letters superseded=%d; fence_rejections=%d",
		len(incidents), superseded, e.countLogs(isFenced)))
}
