// Command projector-bench measures projector end to end against the
// ceiling of any sink that must store each event: it produces N events
// into an in-process Kafka-protocol broker, runs the projector binary as a
// separate process until it has caught up (against a fresh database), and
// times COPY of the same events into a bare table on the same database,
// once before the worker runs and once after. It prints the rates, the
// ratio to the faster COPY, the batch transaction times, the worker's peak
// RSS and where the CPU went; --repeat N does it N times and prints the
// min/median/max ratio. With --rate it measures steady state instead: events
// produced at a fixed rate, and the time from produce to the run being
// visible in workflow_runs. `make bench` runs it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projector-run/projector/projector/eventgen"
	"github.com/projector-run/projector/projector/kafkatest"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

const topic = "workflow-events"

type options struct {
	projector   string
	databaseURL string
	events      int
	partitions  int
	rate        int
	repeat      int
	duration    time.Duration
	extraArgs   string
	setupSQL    string
	workerLog   string
	history     int
	warm        int
	prune       float64
	ids         string
	floorConns  int
	// projectionsDir: projections in SQL the worker loads.
	projectionsDir string
}

func main() {
	var o options
	fs := flag.NewFlagSet("projector-bench", flag.ContinueOnError)
	def := os.Getenv("DATABASE_URL")
	if def == "" {
		def = store.LocalURL
	}
	fs.StringVar(&o.projector, "projector", "bin/projector", "the projector binary to measure")
	fs.StringVar(&o.databaseURL, "database-url", def, "PostgreSQL server; the bench (re)creates a database named projector_bench on it [DATABASE_URL]")
	fs.IntVar(&o.events, "events", 300_000, "events to produce (10 per run, keyed by run)")
	fs.IntVar(&o.partitions, "partitions", 8, "partitions of the topic")
	fs.IntVar(&o.repeat, "repeat", 1, "backlog mode: measure this many times, each from scratch, and print min/median/max of the ratio")
	fs.IntVar(&o.rate, "rate", 0, "steady-state mode: produce this many events per second instead of a backlog")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "steady-state mode: how long to produce")
	fs.StringVar(&o.extraArgs, "args", "", "extra arguments for `projector run`, space-separated (e.g. \"--batch-size 2000\")")
	fs.StringVar(&o.setupSQL, "setup-sql", "", "SQL to run after the migrations, for experiments (e.g. dropping an index)")
	fs.StringVar(&o.workerLog, "worker-log", "", "also write the worker's log lines to this file")
	fs.IntVar(&o.history, "history", 0, "backlog mode: also measure against a database that already stores this many events (and their runs and steps), filled server-side, and print the rate against the empty database's")
	fs.IntVar(&o.warm, "warm", 0, "backlog mode: apply this many other events, untimed, between the CHECKPOINT and the timed run, so that it starts in the middle of a checkpoint cycle, past the full-page images of the index pages both touch, as a long backfill runs (0: right after the CHECKPOINT, the cycle's worst start)")
	fs.Float64Var(&o.prune, "prune", 0, "backlog mode, with --history: before the timed run, prune (`projector prune --before`) this fraction of the history, its oldest events, and print the B-trees' sizes before the prune, after it and after the timed run")
	fs.StringVar(&o.ids, "ids", "seq", "the ids of runs and events: seq (sequential) or uuid (random, as real producers send), for the produced events and the history")
	fs.IntVar(&o.floorConns, "floor", 2, "backlog mode, without --warm or --projections-dir: also time the contract's floor, the events, runs and steps stored by COPY alone on this many connections at once, before the worker runs (with --history, on the empty database; 0: do not)")
	fs.StringVar(&o.projectionsDir, "projections-dir", "", "projections in SQL for the worker to load (--projections-dir of projector), e.g. projector/sqlprojections/examples")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if o.events < 10 || o.partitions < 1 || o.rate < 0 || o.repeat < 1 || o.history < 0 || o.warm < 0 || o.floorConns < 0 || (o.ids != "seq" && o.ids != "uuid") ||
		!(o.prune >= 0 && o.prune < 1) || (o.prune > 0 && o.history == 0) || (o.rate > 0 && o.history+o.warm > 0) {
		fmt.Fprintln(os.Stderr, "projector-bench: --events must be at least 10, --partitions and --repeat positive, --rate, --history, --warm and --floor not negative, --ids seq or uuid, --prune in [0, 1) and only with --history, --history, --warm and --prune not with --rate")
		os.Exit(2)
	}
	var err error
	if o.rate > 0 {
		err = steady(context.Background(), o)
	} else {
		err = backlog(context.Background(), o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "projector-bench: %v\n", err)
		os.Exit(1)
	}
}

// setup creates the database and the broker and produces msgs.
func setup(ctx context.Context, o options, msgs []model.Message) (dbURL string, brokers string, closeFn func(), err error) {
	if dbURL, err = store.RecreateDatabase(ctx, o.databaseURL, "projector_bench"); err != nil {
		return "", "", nil, err
	}
	if out, err := exec.Command(o.projector, append(o.rootArgs("--database-url", dbURL), "migrate", "up")...).CombinedOutput(); err != nil {
		return "", "", nil, fmt.Errorf("migrate: %v: %s", err, out)
	}
	if o.setupSQL != "" {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return "", "", nil, err
		}
		_, err = conn.Exec(ctx, o.setupSQL)
		_ = conn.Close(ctx)
		if err != nil {
			return "", "", nil, fmt.Errorf("--setup-sql: %w", err)
		}
	}
	cluster, err := kafkatest.Start(topic, int32(o.partitions))
	if err != nil {
		return "", "", nil, err
	}
	brokers = strings.Join(cluster.ListenAddrs(), ",")
	if err := produce(ctx, brokers, msgs); err != nil {
		cluster.Close()
		return "", "", nil, err
	}
	return dbURL, brokers, cluster.Close, nil
}

// produce sends msgs to the bench's topic, 10,000 a request.
func produce(ctx context.Context, brokers string, msgs []model.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	p, err := kafkatest.NewProducer(strings.Split(brokers, ","), topic)
	if err != nil {
		return err
	}
	defer p.Close()
	for i := 0; i < len(msgs); i += 10_000 {
		if err := p.Produce(ctx, msgs[i:min(i+10_000, len(msgs))]); err != nil {
			return err
		}
	}
	return nil
}

// rootArgs prepends the flags every command of the projector takes.
func (o options) rootArgs(args ...string) []string {
	if o.projectionsDir != "" {
		return append([]string{"--projections-dir", o.projectionsDir}, args...)
	}
	return args
}

// worker starts `projector run` with JSON logs.
func worker(o options, dbURL, brokers string, args ...string) (*exec.Cmd, io.ReadCloser, error) {
	argv := append(o.rootArgs("--database-url", dbURL, "--brokers", brokers, "--log-format", "json", "run"), args...)
	argv = append(argv, strings.Fields(o.extraArgs)...)
	cmd := exec.Command(o.projector, argv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	return cmd, stderr, cmd.Start()
}

// backlogResult is one measured backlog run.
type backlogResult struct {
	rate, copyRate float64 // events/s
	ratio          float64
	// floorRatio is the contract's floor (floor.go) against COPY, 0 when
	// not measured.
	floorRatio float64
	peakRSSMiB float64
	// history is how many events were stored before the timed run's
	// (a pruned history's are fewer than --history).
	history int
}

// backlog runs the backlog measurement o.repeat times, each against a
// fresh database and broker, and sums them up.
func backlog(ctx context.Context, o options) error {
	msgs := eventgen.UniformIDs(o.events, "b", o.ids == "uuid")
	fmt.Printf("workload: %d events, 10 per run, keyed by run, %d partitions, %s ids\n", len(msgs), o.partitions, o.ids)
	var warm []model.Message
	if o.warm > 0 {
		warm = eventgen.UniformIDs(o.warm, "w", o.ids == "uuid")
		fmt.Printf("warm-up:   %d other events applied, untimed, after each CHECKPOINT before the timed run\n", len(warm))
	}
	if err := printSettings(ctx, o.databaseURL); err != nil {
		return err
	}
	var results []backlogResult
	for i := range o.repeat {
		if o.repeat > 1 {
			fmt.Printf("\n-- run %d of %d\n", i+1, o.repeat)
		}
		r, err := backlogOnce(ctx, o, msgs, warm, 0)
		if err != nil {
			return err
		}
		results = append(results, r)
		if o.history > 0 {
			fmt.Printf("\n-- the same against %d stored events\n", o.history)
			h, err := backlogOnce(ctx, o, msgs, warm, o.history)
			if err != nil {
				return err
			}
			fmt.Printf("history:   %.0f events/s with %d events stored, %.0f on the empty database: %.2f x\n",
				h.rate, h.history, r.rate, h.rate/r.rate)
		}
	}
	if len(results) > 1 {
		ratios := make([]float64, len(results))
		floors := make([]float64, len(results))
		rss := make([]float64, len(results))
		for i, r := range results {
			ratios[i], floors[i], rss[i] = r.ratio, r.floorRatio, r.peakRSSMiB
		}
		slices.Sort(ratios)
		slices.Sort(floors)
		fmt.Printf("\nratio over %d runs: min %.2f, median %.2f, max %.2f x COPY; peak RSS at most %.1f MB\n",
			len(ratios), ratios[0], ratios[len(ratios)/2], ratios[len(ratios)-1], slices.Max(rss))
		if floors[0] > 0 {
			fmt.Printf("the contract's floor (keys alone): min %.2f, median %.2f, max %.2f x COPY\n",
				floors[0], floors[len(floors)/2], floors[len(floors)-1])
		}
	}
	return nil
}

// backlogOnce produces msgs into a fresh broker, times COPY of them into a
// bare table, runs the worker until it has caught up against a fresh
// database, and times COPY again. The ceiling is the faster of the two
// COPYs, so that a machine that gets busier or quieter meanwhile does not
// flatter the ratio. Each timed phase starts after a CHECKPOINT, so that
// none pays for writing out another's dirty pages; with warm events, the
// worker applies those first, untimed, and the timed events are produced
// only then.
func backlogOnce(ctx context.Context, o options, msgs, warm []model.Message, history int) (backlogResult, error) {
	var res backlogResult
	first := msgs
	if len(warm) > 0 {
		first = warm
	}
	dbURL, brokers, closeBroker, err := setup(ctx, o, first)
	if err != nil {
		return res, err
	}
	defer closeBroker()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, err
	}
	defer conn.Close(ctx)
	if history > 0 {
		if err := fillHistory(ctx, conn, history, o.ids == "uuid"); err != nil {
			return res, fmt.Errorf("fill history: %w", err)
		}
		if o.prune > 0 {
			pruned, err := pruneHistory(ctx, o, conn, dbURL, history)
			if err != nil {
				return res, fmt.Errorf("prune history: %w", err)
			}
			history -= pruned
		}
	}
	copyBefore, err := copyBaseline(ctx, conn, msgs)
	if err != nil {
		return res, err
	}
	// The floor, timed before the worker (whose million events slow the
	// server down for a while after).
	var floor, floorCPU [2]float64
	if o.floorConns > 0 && history == 0 && len(warm) == 0 && o.projectionsDir == "" {
		shares, err := floorShares(msgs, o.floorConns)
		if err != nil {
			return res, err
		}
		keys, keysCPU, err := contractFloor(ctx, dbURL, shares, false)
		if err != nil {
			return res, err
		}
		schema, schemaCPU, err := contractFloor(ctx, dbURL, shares, true)
		if err != nil {
			return res, err
		}
		floor = [2]float64{keys, schema}
		floorCPU = [2]float64{keysCPU, schemaCPU}
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return res, err
	}
	if len(warm) > 0 {
		if err := warmUp(ctx, o, dbURL, brokers, msgs); err != nil {
			return res, fmt.Errorf("warm-up: %w", err)
		}
	}

	cpu0 := readCPU()
	start := time.Now()
	cmd, stderr, err := worker(o, dbURL, brokers, "--until-caught-up")
	if err != nil {
		return res, err
	}
	// ru_maxrss would carry the bench's own peak over the exec, so read
	// the worker's high-water mark (VmHWM) from /proc while it runs.
	var peakKiB atomic.Int64
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
			if err != nil {
				return
			}
			for _, l := range strings.Split(string(st), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
					if kib, err := strconv.ParseInt(f[1], 10, 64); err == nil && kib > peakKiB.Load() {
						peakKiB.Store(kib)
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var stopped map[string]any
	var claimed, caught time.Duration
	var logFile io.Writer = io.Discard
	if o.workerLog != "" {
		f, err := os.Create(o.workerLog)
		if err != nil {
			return res, err
		}
		defer f.Close()
		logFile = f
	}
	sc := bufio.NewScanner(io.TeeReader(stderr, logFile))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch msg, _ := line["msg"].(string); {
		case msg == "stopped":
			stopped = line
		case msg == "claimed partition" && claimed == 0:
			claimed = time.Since(start)
		case strings.HasPrefix(msg, "caught up"):
			caught = time.Since(start)
		}
		if line["level"] == "error" || line["level"] == "fatal" {
			fmt.Fprintln(os.Stderr, sc.Text())
		}
	}
	if err := cmd.Wait(); err != nil {
		return res, fmt.Errorf("projector run: %w", err)
	}
	elapsed := time.Since(start)
	cpu1 := readCPU()
	<-pollDone
	res.peakRSSMiB = float64(peakKiB.Load()) / 1024
	res.history = history

	var stored int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM workflow_events`).Scan(&stored); err != nil {
		return res, err
	}
	if stored != len(msgs)+len(warm)+history {
		return res, fmt.Errorf("projector stored %d events of %d", stored-history-len(warm), len(msgs))
	}
	if o.prune > 0 && history > 0 {
		if err := printIndexSizes(ctx, conn, "after the timed run"); err != nil {
			return res, err
		}
	}
	copyAfter, err := copyBaseline(ctx, conn, msgs)
	if err != nil {
		return res, err
	}
	res.rate = float64(len(msgs)) / elapsed.Seconds()
	res.copyRate = max(copyBefore, copyAfter)
	res.ratio = res.rate / res.copyRate
	fmt.Printf("projector: %d events in %s: %.0f events/s (process start to caught up, exit included)\n", len(msgs), elapsed.Round(time.Millisecond), res.rate)
	fmt.Printf("phases:    first partition claimed after %s, caught up after %s, exited after %s\n",
		claimed.Round(time.Millisecond), caught.Round(time.Millisecond), elapsed.Round(time.Millisecond))
	fmt.Printf("COPY:      %.0f events/s before the worker ran, %.0f after, into a bare table shaped like workflow_events\n", copyBefore, copyAfter)
	fmt.Printf("ratio:     %.2f x COPY (the faster one)\n", res.ratio)
	if floor[0] > 0 {
		res.floorRatio = floor[0] / res.copyRate
		fmt.Printf("floor:     the events, runs and steps stored by COPY alone on %d connections (no broker, no merge): %.0f events/s (%.2f x COPY) with the contract's primary keys alone, %.0f (%.2f x COPY) with every index of the schema; PostgreSQL %.1f and %.1f µs/event; the projector ran at %.2f and %.2f of them\n",
			o.floorConns, floor[0], floor[0]/res.copyRate, floor[1], floor[1]/res.copyRate, floorCPU[0], floorCPU[1], res.rate/floor[0], res.rate/floor[1])
	}
	if stopped != nil {
		fmt.Printf("batches:   %v, transaction p50 %v ms, p99 %v ms\n", stopped["batches"], stopped["batch_p50_ms"], stopped["batch_p99_ms"])
	}
	fmt.Printf("peak RSS:  %.1f MB (the worker process's VmHWM)\n", res.peakRSSMiB)
	if cpu0.ok && cpu1.ok {
		secs := elapsed.Seconds()
		w := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		broker := cpu1.self - cpu0.self
		busy := cpu1.busy - cpu0.busy
		fmt.Printf("CPU:       worker %.2f cores, broker %.2f, the rest (PostgreSQL) %.2f, idle %.2f (I/O wait %.2f) of %d; worker %.1f µs/event, the rest %.1f µs/event\n",
			w.Seconds()/secs, broker.Seconds()/secs, (busy-w-broker).Seconds()/secs, (cpu1.idle-cpu0.idle).Seconds()/secs,
			(cpu1.iowait-cpu0.iowait).Seconds()/secs, runtime.NumCPU(),
			w.Seconds()*1e6/float64(len(msgs)), (busy-w-broker).Seconds()*1e6/float64(len(msgs)))
	}
	return res, nil
}

// warmUp runs the worker until it has caught up with the events in the
// broker (the warm-up's), then produces msgs for the timed run.
func warmUp(ctx context.Context, o options, dbURL, brokers string, msgs []model.Message) error {
	cmd, stderr, err := worker(o, dbURL, brokers, "--until-caught-up")
	if err != nil {
		return err
	}
	// Its log, to say why should it fail.
	var log bytes.Buffer
	if _, err := io.Copy(&log, stderr); err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("projector run: %w: %s", err, lastLines(log.String(), 5))
	}
	return produce(ctx, brokers, msgs)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// cpuSample is the machine's busy and idle CPU time (from /proc/stat) and
// this process's own (the in-process broker's, while the worker runs).
type cpuSample struct {
	busy, idle, iowait, self time.Duration
	ok                       bool
}

func readCPU() cpuSample {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuSample{}
	}
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
	if len(f) < 9 || f[0] != "cpu" {
		return cpuSample{}
	}
	var ticks [8]int64
	for i := range ticks {
		ticks[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	idle := time.Duration(ticks[3]+ticks[4]) * tick
	// Steal (ticks[7]) is time the hypervisor gave another guest: no one's
	// here.
	busy := time.Duration(ticks[0]+ticks[1]+ticks[2]+ticks[5]+ticks[6]) * tick
	return cpuSample{busy: busy, idle: idle, iowait: time.Duration(ticks[4]) * tick, self: self, ok: true}
}

// copyBaseline times COPY of the same events, decoded, into a bare table
// shaped like workflow_events (no keys, no indexes).
func copyBaseline(ctx context.Context, conn *pgx.Conn, msgs []model.Message) (float64, error) {
	if _, err := conn.Exec(ctx, `DROP TABLE IF EXISTS copy_baseline; CREATE TABLE copy_baseline (LIKE workflow_events INCLUDING DEFAULTS); CHECKPOINT`); err != nil {
		return 0, err
	}
	defer func() { _, _ = conn.Exec(ctx, `DROP TABLE copy_baseline`) }()
	rows := make([][]any, len(msgs))
	for i, m := range msgs {
		e, err := model.Decode(m.Value)
		if err != nil {
			return 0, err
		}
		rows[i] = eventRow(e, int32(i%8), int64(i))
	}
	start := time.Now()
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"copy_baseline"}, eventColumns, pgx.CopyFromRows(rows))
	if err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

var eventColumns = []string{"event_id", "workflow_run_id", "workflow_id", "event_type", "source", "occurred_at", "attempt", "step_id", "topic", "partition", "offset", "payload"}

// eventRow is e as a row of eventColumns.
func eventRow(e model.Event, partition int32, offset int64) []any {
	var step any
	if e.StepID != "" {
		step = e.StepID
	}
	return []any{e.EventID, e.WorkflowRunID, e.WorkflowID, e.EventType, e.Source, e.Timestamp, e.Attempt, step, topic, partition, offset, string(e.Payload)}
}

// steady produces at a fixed rate while the worker runs and measures the
// time from produce to the run being visible in workflow_runs: each event
// is the run.queued of a new run, and a poller reads new runs every 5 ms.
func steady(ctx context.Context, o options) error {
	dbURL, brokers, closeBroker, err := setup(ctx, o, nil)
	if err != nil {
		return err
	}
	defer closeBroker()
	cmd, stderr, err := worker(o, dbURL, brokers)
	if err != nil {
		return err
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()

	cluster := strings.Split(brokers, ",")
	p, err := kafkatest.NewProducer(cluster, topic)
	if err != nil {
		return err
	}
	defer p.Close()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)

	total := int(o.duration.Seconds() * float64(o.rate))
	sent := make([]time.Time, total)
	seen := make([]time.Duration, 0, total)
	const tick = 10 * time.Millisecond
	perTick := max(1, o.rate/int(time.Second/tick))
	fmt.Printf("steady state: %d events/s for %s (%d events), one new run each\n", o.rate, o.duration, total)
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for i := 0; i < total; {
			<-t.C
			n := min(perTick, total-i)
			batch := make([]model.Message, n)
			now := time.Now()
			for j := range n {
				id := fmt.Sprintf("s-%09d", i+j)
				batch[j] = model.Message{Key: []byte(id), Value: fmt.Appendf(nil,
					`{"event_id":%q,"event_type":"run.queued","source":"bench","workflow_id":"steady","workflow_run_id":%q,"timestamp":%q}`,
					id, id, now.UTC().Format(time.RFC3339Nano))}
				sent[i+j] = now
			}
			if err := p.Produce(ctx, batch); err != nil {
				done <- err
				return
			}
			i += n
		}
		done <- nil
	}()
	// Runs become visible out of order across partitions: read every run
	// from the lowest one not seen yet.
	seenAt := make([]bool, total)
	low := 0
	deadline := time.Now().Add(o.duration + time.Minute)
	for low < total && time.Now().Before(deadline) {
		rows, err := conn.Query(ctx, `SELECT workflow_run_id FROM workflow_runs WHERE workflow_run_id >= $1`, fmt.Sprintf("s-%09d", low))
		if err != nil {
			return err
		}
		now := time.Now()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			i, _ := strconv.Atoi(strings.TrimPrefix(id, "s-"))
			if !seenAt[i] {
				seenAt[i] = true
				seen = append(seen, now.Sub(sent[i]))
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for low < total && seenAt[low] {
			low++
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-done; err != nil {
		return err
	}
	if len(seen) < total {
		return fmt.Errorf("only %d of %d events became visible", len(seen), total)
	}
	slices.Sort(seen)
	q := func(f float64) time.Duration { return seen[int(f*float64(len(seen)-1))].Round(time.Millisecond) }
	fmt.Printf("produce to visible in workflow_runs: p50 %s, p99 %s, max %s (poll interval 5 ms; %s total)\n",
		q(0.5), q(0.99), seen[len(seen)-1].Round(time.Millisecond), time.Since(start).Round(time.Second))
	return nil
}
