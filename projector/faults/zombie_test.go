//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestZombieIsFenced freezes a busy worker (SIGSTOP, aimed at an open
// batch transaction) past its session timeout, so the broker expels it
// and the other worker takes its partitions; then it thaws it (SIGCONT)
// with the broker slow to answer its heartbeats, so that it acts on its
// stale claims, with messages still buffered, before it learns that it
// lost them. It must write nothing for them: its transactions fail the
// fence, and the audit shows no offset moved by a session that did not
// hold the lease.
func TestZombieIsFenced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 4})
	msgs := workload(2, 4000)
	e.produce(msgs[:len(msgs)/2])
	zombie := e.startWorker("zombie")
	other := e.startWorker("other")
	waitProduced := e.produceOver(msgs[len(msgs)/2:], 25*time.Second)

	owned := func(w *worker) []int32 {
		_, owners, err := e.storedOffsets()
		require.NoError(t, err)
		var ps []int32
		for p, o := range owners {
			if strings.HasSuffix(o, ":"+strconv.Itoa(w.cmd.Process.Pid)) {
				ps = append(ps, p)
			}
		}
		return ps
	}
	waitFor(t, time.Minute, "both workers to hold partitions", func() bool {
		return len(owned(zombie)) > 0 && len(owned(other)) > 0 && len(owned(zombie))+len(owned(other)) == 4
	})

	// Freeze the zombie inside a batch transaction if it has one.
	admin := adminPool(t)
	db := e.database()
	var open int
	for aim := time.Now().Add(2 * time.Second); open == 0 && time.Now().Before(aim); {
		require.NoError(t, admin.Pool().QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND xact_start IS NOT NULL`,
			db, zombie.name).Scan(&open))
	}
	zombie.signal(syscall.SIGSTOP)
	frozen := time.Now()
	lost := owned(zombie)
	t.Logf("zombie frozen with %d transactions open, holding partitions %v", open, lost)

	// The broker expels it after its session timeout; the other worker
	// must then be able to claim its partitions while it is still frozen.
	waitFor(t, time.Minute, "the other worker to claim the frozen worker's partitions", func() bool {
		return len(owned(other)) == 4
	})
	moved := time.Since(frozen)
	next, _, err := e.storedOffsets()
	require.NoError(t, err)
	waitFor(t, time.Minute, "the new owner to apply batches on the partitions it took", func() bool {
		now, _, err := e.storedOffsets()
		require.NoError(t, err)
		for _, p := range lost {
			if now[p] == next[p] {
				return false
			}
		}
		return true
	})

	// Thaw it, with the broker holding every heartbeat for 3 seconds: the
	// zombie works on with its buffered messages before it can learn.
	c := e.broker.cluster()
	until := time.Now().Add(3 * time.Second)
	c.ControlKey(int16(kmsg.Heartbeat), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if d := time.Until(until); d > 0 {
			c.SleepControl(func() { time.Sleep(d) })
		} else {
			c.DropControl()
		}
		return nil, nil, false
	})
	zombie.signal(syscall.SIGCONT)
	thawed := time.Since(frozen)

	waitProduced()
	e.waitCaughtUp(2 * time.Minute)
	e.stopAll()
	zombieFenced := 0
	for _, l := range zombie.lines() {
		if isFenced(l) {
			zombieFenced++
		}
	}
	e.verify("zombie", verifyOptions{}, fmt.Sprintf("frozen %s with %d transactions open; partitions %v moved after %s; fence_rejections=%d (zombie: %d)",
		thawed.Round(100*time.Millisecond), open, lost, moved.Round(100*time.Millisecond), e.countLogs(isFenced), zombieFenced))
	require.Positive(t, zombieFenced, "the zombie's writes for the partitions it lost are fenced, and logged")
}
