//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSIGKILLStorm runs three workers in one group and, for 30 seconds
// while events are still being produced, SIGKILLs a random one every 0.5
// to 2 seconds (aiming, for up to 300ms, at an open batch transaction)
// and starts it again at once. Kills land anywhere: inside a batch
// transaction, between its round trips, during a rebalance, during Setup.
// Each worker is a static group member, as a StatefulSet would run it: a
// restart takes its partitions back without stalling the other two.
// Nothing may be lost or applied twice: the workers load the examples
// of projections in SQL too, whose counters would count an event applied
// twice twice.
func TestSIGKILLStorm(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 6, sqlExamples: true})
	msgs := workload(1, 5000)
	e.produce(msgs[:len(msgs)/5])
	const storm = 30 * time.Second
	waitProduced := e.produceOver(msgs[len(msgs)/5:], storm)
	kills, inSession, inTx := e.storm(storm, func(slot string) []string { return []string{"--group-instance-id", slot} })
	require.Positive(t, inTx, "kills landed inside batch transactions")
	waitProduced()
	e.waitCaughtUp(2 * time.Minute)
	e.stopAll()
	e.verify("storm", verifyOptions{}, fmt.Sprintf("kills=%d (after claiming partitions: %d, with a transaction open: %d) fence_rejections=%d",
		kills, inSession, inTx, e.countLogs(isFenced)))
}

// TestSIGKILLStormDynamicMembersRecover runs a shorter storm of dynamic
// group members: every restart rebalances the group and every killed
// member holds the next rebalance until its session times out, so the
// group barely forms during the storm. Once the kills stop it must form
// again and catch up. With sarama's default rebalance timeout (60s, above
// its 30s read timeout) it never did: every JoinGroup timed out and each
// retry restarted the join phase.
func TestSIGKILLStormDynamicMembersRecover(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{partitions: 6, sqlExamples: true})
	msgs := workload(12, 1300)
	e.produce(msgs[:len(msgs)*10/13])
	kills, inSession, inTx := e.storm(12*time.Second, func(string) []string { return nil })
	e.produce(msgs[len(msgs)*10/13:])
	start := time.Now()
	e.waitCaughtUp(2 * time.Minute)
	recovered := time.Since(start)
	e.stopAll()
	e.verify("storm-dyn", verifyOptions{}, fmt.Sprintf("kills=%d (after claiming partitions: %d, with a transaction open: %d); caught up %s after the last kill; fence_rejections=%d",
		kills, inSession, inTx, recovered.Round(time.Second), e.countLogs(isFenced)))
}

// storm runs three workers and, for d, SIGKILLs a random one every 0.5 to
// 2 seconds, aiming for up to 300ms at an open batch transaction, and
// starts it again at once with args(slot). It returns the kills, those of
// a worker that had claimed partitions, and those that hit an open
// transaction.
func (e *env) storm(d time.Duration, args func(slot string) []string) (kills, inSession, inTx int) {
	t := e.t
	slots := []string{"w1", "w2", "w3"}
	current := map[string]*worker{}
	for _, s := range slots {
		current[s] = e.startWorker(s, args(s)...)
	}
	admin := adminPool(t)
	db := e.database()
	seed := uint64(time.Now().UnixNano())
	t.Logf("storm seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond))))
		slot := slots[rng.IntN(len(slots))]
		w := current[slot]
		require.True(t, w.running(), "worker %s exited by itself: %v", w.name, w.exit)
		var open int
		for aim := time.Now().Add(300 * time.Millisecond); open == 0 && time.Now().Before(aim); {
			require.NoError(t, admin.Pool().QueryRow(context.Background(),
				`SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND xact_start IS NOT NULL`,
				db, w.name).Scan(&open))
		}
		w.kill()
		kills++
		if open > 0 {
			inTx++
		}
		if slices.ContainsFunc(w.lines(), func(l logLine) bool { return l.Msg == "claimed partition" }) {
			inSession++
		}
		current[slot] = e.startWorker(slot, args(slot)...)
	}
	return kills, inSession, inTx
}
