//go:build faults

package faults_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestBrokerOutagesAndErrors works two workers through broker trouble
// while events are produced: the broker stopped (listeners closed, open
// connections cut) and started again from its data directory on the same
// port, twice; fetches answered with partition errors; heartbeats
// answered REBALANCE_IN_PROGRESS and joins COORDINATOR_LOAD_IN_PROGRESS,
// so the group rebalances and cannot form for a while; offset lookups
// answered with errors and fetch connections cut. The workers retry and
// end with everything applied exactly once.
func TestBrokerOutagesAndErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 4, restartableBroker: true})
	msgs := workload(5, 3000)
	e.produce(msgs[:len(msgs)/4])
	workers := []*worker{e.startWorker("w1"), e.startWorker("w2")}
	waitProduced := e.produceOver(msgs[len(msgs)/4:], 25*time.Second)

	storedSum := func() int64 {
		next, _, err := e.storedOffsets()
		require.NoError(t, err)
		var sum int64
		for _, n := range next {
			sum += n
		}
		return sum
	}
	progress := func(what string) {
		from := storedSum()
		waitFor(t, time.Minute, "progress "+what, func() bool { return storedSum() > from+300 })
	}
	// for answers one kind of request with resp for d (nil resp: the
	// connection is cut), and counts the requests it answered.
	var injected atomic.Int64
	for_ := func(c *kfake.Cluster, key kmsg.Key, d time.Duration, resp func(kmsg.Request) kmsg.Response) {
		until := time.Now().Add(d)
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			if time.Now().After(until) {
				c.DropControl()
				return nil, nil, false
			}
			c.KeepControl()
			injected.Add(1)
			if r := resp(req); r != nil {
				return r, nil, true
			}
			return nil, errors.New("connection cut by the test"), true
		})
	}

	progress("at first")
	outages := 0
	outage := func(d time.Duration) {
		e.broker.stop()
		time.Sleep(d)
		e.broker.restart()
		outages++
	}
	outage(3 * time.Second)
	progress("after the first outage")

	c := e.broker.cluster()
	fetchFaults := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.NotLeaderForPartition, Count: -1})
	time.Sleep(2 * time.Second)
	fetchFaults.Remove()
	fetchFaults2 := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.UnknownServerError, Count: -1})
	time.Sleep(2 * time.Second)
	fetchFaults2.Remove()
	progress("after fetch errors")

	for_(c, kmsg.Heartbeat, 4*time.Second, func(req kmsg.Request) kmsg.Response {
		r := req.ResponseKind().(*kmsg.HeartbeatResponse)
		r.ErrorCode = kerr.RebalanceInProgress.Code
		return r
	})
	for_(c, kmsg.JoinGroup, 4*time.Second, func(req kmsg.Request) kmsg.Response {
		r := req.ResponseKind().(*kmsg.JoinGroupResponse)
		r.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return r
	})
	// The sessions that form next look up offsets in Setup: refused too.
	listFaults := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Err: kerr.UnknownServerError, Count: -1})
	time.Sleep(7 * time.Second)
	listFaults.Remove()
	progress("after group and offset lookup errors")

	for_(c, kmsg.Fetch, 2*time.Second, func(kmsg.Request) kmsg.Response { return nil })
	time.Sleep(2 * time.Second)
	progress("after cut fetch connections")

	outage(2 * time.Second)
	waitProduced()
	e.waitCaughtUp(2 * time.Minute)
	for _, w := range workers {
		require.True(t, w.running(), "worker %s exited: %v", w.name, w.exit)
	}
	e.stopAll()
	e.verify("broker", verifyOptions{}, fmt.Sprintf("outages=%d; error answers: fetch %d+%d, offset lookups %d, group and cut connections %d; consumer errors logged=%d retries=%d fence_rejections=%d",
		outages, fetchFaults.Hits(), fetchFaults2.Hits(), listFaults.Hits(), injected.Load(),
		e.countLogs(func(l logLine) bool { return l.Msg == "consumer error" }), e.countLogs(isRetry), e.countLogs(isFenced)))
}
