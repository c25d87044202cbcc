package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v3"

	"github.com/projector-run/projector/projector/consumer"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

func (a *app) offsetsCommand() *cli.Command {
	def := consumer.DefaultConfig()
	return &cli.Command{
		Name:  "offsets",
		Usage: "show or reset the group's stored offsets (the broker is asked for each partition's range)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kafka-version", Value: def.KafkaVersion, Usage: "Kafka protocol version to speak", Sources: cli.EnvVars("KAFKA_VERSION")},
		},
		Commands: []*cli.Command{
			{
				Name:  "show",
				Usage: "per partition of the topics: stored next_offset, log start, high watermark, lag, last update",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Value: "table", Usage: "table, or json for machines", Sources: cli.EnvVars("OUTPUT_FORMAT")},
				},
				Action: a.offsetsShow,
			},
			{
				Name:      "reset",
				Usage:     "move stored offsets and remove the effects of every message at or after them, so that workers apply them again",
				UsageText: "projector offsets reset --to earliest|latest|OFFSET|TIME [--topic T] [--partition P] [--dry-run]",
				Description: "TIME is RFC 3339 (2026-05-01T12:00:00Z): each partition moves to its first message\n" +
					"stamped at or after it (to its high watermark when there is none). In one transaction\n" +
					"the offsets move, the events and dead letters of the messages at or after them are\n" +
					"removed, and the runs those events touched are recomputed from the events that remain.\n" +
					"Running workers notice within seconds and consume again from the new offsets.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "to", Usage: "earliest, latest, an offset, or an RFC 3339 time", Sources: cli.EnvVars("RESET_TO")},
					&cli.StringFlag{Name: "topic", Usage: "only this topic", DefaultText: "every topic of --topics", Sources: cli.EnvVars("RESET_TOPIC")},
					&cli.IntFlag{Name: "partition", Usage: "only this partition", DefaultText: "every partition", Sources: cli.EnvVars("RESET_PARTITION")},
					dryRunFlag("print what would be removed and recomputed, and change nothing"),
				},
				Action: a.offsetsReset,
			},
		},
	}
}

// broker answers the offset lookups of the offsets commands.
type broker struct {
	*consumer.Cluster
}

// connectBroker validates the Kafka flags (for topics, those given) and
// connects. A broker that does not answer is a failure (exit code 1).
func (a *app) connectBroker(cmd *cli.Command, topics []string) (*broker, error) {
	cfg := consumer.DefaultConfig()
	cfg.Brokers = splitList(cmd.String("brokers"))
	cfg.Topics = topics
	cfg.Group = cmd.String("group")
	cfg.KafkaVersion = cmd.String("kafka-version")
	if err := a.kafkaSecurity(cmd, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	c, err := consumer.DialCluster(cfg)
	if ce := (*consumer.ConfigError)(nil); errors.As(err, &ce) {
		return nil, usageError{err}
	}
	if err != nil {
		return nil, err
	}
	return &broker{c}, nil
}

// partitions lists a topic's partitions; a topic that does not exist is a
// usage error.
func (b *broker) partitions(topic string) ([]int32, error) {
	parts, err := b.Partitions(topic)
	if errors.Is(err, consumer.ErrUnknownTopic) {
		return nil, usagef("topic %q does not exist on the broker", topic)
	}
	return parts, err
}

// logRange returns a partition's log start offset, last stable offset
// (below the high watermark while a transaction is open: a read-committed
// consumer reads nothing from there until it ends) and high watermark.
func (b *broker) logRange(topic string, p int32) (start, lso, hwm int64, err error) {
	r, err := b.Range(topic, p)
	return r.Start, r.LastStable, r.HighWatermark, err
}

// partitionOffsets is one row of offsets show.
type partitionOffsets struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// NextOffset is nil when the group has no stored offset for it.
	NextOffset     *int64 `json:"next_offset"`
	LogStartOffset int64  `json:"log_start_offset"`
	HighWatermark  int64  `json:"high_watermark"`
	// LastStableOffset is below HighWatermark while a transaction is
	// open; Lag counts to it, what a read-committed consumer can read.
	LastStableOffset int64      `json:"last_stable_offset"`
	Lag              int64      `json:"lag"`
	UpdatedAt        *time.Time `json:"updated_at"`
	Owner            string     `json:"lease_owner,omitempty"`
	Note             string     `json:"note,omitempty"`
}

func (a *app) offsetsShow(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	output := cmd.String("output")
	if output != "table" && output != "json" {
		return usagef("--output: %q is not table or json", output)
	}
	topics := uniq(splitList(cmd.String("topics")))
	group := cmd.String("group")
	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := a.connectBroker(cmd, topics)
	if err != nil {
		return err
	}
	defer b.Close()

	rows, err := st.GroupOffsets(ctx, group)
	if err != nil {
		return err
	}
	stored := make(map[model.TopicPartition]store.OffsetRow, len(rows))
	for _, r := range rows {
		stored[model.TopicPartition{Topic: r.Topic, Partition: r.Partition}] = r
	}
	var out []partitionOffsets
	var total int64
	for _, t := range topics {
		parts, err := b.partitions(t)
		if err != nil {
			return err
		}
		for _, p := range parts {
			start, lso, hwm, err := b.logRange(t, p)
			if err != nil {
				return err
			}
			po := partitionOffsets{Topic: t, Partition: p, LogStartOffset: start, HighWatermark: hwm, LastStableOffset: lso}
			r, ok := stored[model.TopicPartition{Topic: t, Partition: p}]
			next := start
			switch {
			case !ok:
				po.Note = "no stored offset: a worker starts at the log start"
			case r.NextOffset < start:
				po.Note = fmt.Sprintf("stored offset is before the log start: %d messages were deleted unapplied", start-r.NextOffset)
			case r.NextOffset > hwm:
				po.Note = "stored offset is past the high watermark: was the topic recreated?"
				next = hwm
			default:
				next = r.NextOffset
			}
			if lso < hwm {
				open := fmt.Sprintf("open transaction from offset %d: lag counts to it; the %d offsets after it are read once it ends", lso, hwm-lso)
				po.Note = strings.TrimPrefix(po.Note+"; "+open, "; ")
			}
			if ok {
				po.NextOffset, po.UpdatedAt, po.Owner = &r.NextOffset, &r.UpdatedAt, r.LeaseOwner
			}
			po.Lag = max(lso-next, 0)
			total += po.Lag
			out = append(out, po)
		}
	}
	if output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	notes := slices.ContainsFunc(out, func(po partitionOffsets) bool { return po.Note != "" })
	fmt.Fprintf(a.stdout, "group %s\n", group)
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "TOPIC\tPARTITION\tNEXT OFFSET\tLOG START\tHIGH WATERMARK\tLAST STABLE\tLAG\tUPDATED AT")
	if notes {
		fmt.Fprint(tw, "\tNOTE")
	}
	fmt.Fprintln(tw)
	for _, po := range out {
		next, at := "-", "-"
		if po.NextOffset != nil {
			next, at = strconv.FormatInt(*po.NextOffset, 10), po.UpdatedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s", po.Topic, po.Partition, next, po.LogStartOffset, po.HighWatermark, po.LastStableOffset, po.Lag, at)
		if notes {
			fmt.Fprintf(tw, "\t%s", po.Note)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "total lag %s\n", plural(total, "message"))
	return nil
}

// resetTo is a parsed --to.
type resetTo struct {
	// kind is earliest, latest, offset or time.
	kind   string
	offset int64
	at     time.Time
}

func parseResetTo(s string) (resetTo, error) {
	switch s {
	case "":
		return resetTo{}, usagef("--to is required: earliest, latest, an offset, or an RFC 3339 time")
	case "earliest", "latest":
		return resetTo{kind: s}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return resetTo{}, usagef("--to: offset %d is negative", n)
		}
		return resetTo{kind: "offset", offset: n}, nil
	}
	if at, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return resetTo{kind: "time", at: at}, nil
	}
	return resetTo{}, usagef("--to: %q is not earliest, latest, an offset, or an RFC 3339 time like 2026-05-01T12:00:00Z", s)
}

// resolve returns the offset that to means for one partition, given its
// log range. An offset outside the log is out of range (ok false). Latest
// and times are as a read-committed consumer sees the log: latest is the
// last stable offset (a transaction still open may commit: its messages
// must not be skipped), and a time is the first message stamped at or
// after it below the last stable offset, the last stable offset when
// there is none. An offset that falls on a transaction marker or inside
// an aborted transaction is fine: workers skip those offsets.
func (b *broker) resolve(to resetTo, topic string, p int32, start, lso, hwm int64) (offset int64, ok bool, err error) {
	switch to.kind {
	case "earliest":
		return start, true, nil
	case "latest":
		return lso, true, nil
	case "offset":
		return to.offset, to.offset >= start && to.offset <= hwm, nil
	}
	// The first message stamped at or after the time; -1 when there is
	// none. Times before 1970 mean the log start (-1 and -2 are special).
	off, err := b.ListOffset(topic, p, max(to.at.UnixMilli(), 0))
	if err != nil {
		return 0, false, fmt.Errorf("look up the offset of %s/%d at %s: %w", topic, p, to.at.Format(time.RFC3339Nano), err)
	}
	if off < 0 || off > lso {
		off = lso
	}
	return max(off, start), true, nil
}

func (a *app) offsetsReset(ctx context.Context, cmd *cli.Command) error {
	if err := noArgs(cmd); err != nil {
		return err
	}
	to, err := parseResetTo(cmd.String("to"))
	if err != nil {
		return err
	}
	partition := cmd.Int("partition")
	if cmd.IsSet("partition") && (partition < 0 || partition > 1<<31-1) {
		return usagef("--partition: %d is not a partition number", partition)
	}
	topics := uniq(splitList(cmd.String("topics")))
	if t := cmd.String("topic"); t != "" {
		topics = []string{t}
	}
	group := cmd.String("group")
	dryRun := cmd.Bool("dry-run")

	st, err := a.openReady(ctx, cmd)
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := a.connectBroker(cmd, topics)
	if err != nil {
		return err
	}
	defer b.Close()

	var targets []store.OffsetTarget
	var outside []string
	for _, t := range topics {
		parts, err := b.partitions(t)
		if err != nil {
			return err
		}
		if cmd.IsSet("partition") {
			if !slices.Contains(parts, int32(partition)) {
				return usagef("--partition: topic %q has partitions 0 to %d, not %d", t, len(parts)-1, partition)
			}
			parts = []int32{int32(partition)}
		}
		for _, p := range parts {
			start, lso, hwm, err := b.logRange(t, p)
			if err != nil {
				return err
			}
			off, ok, err := b.resolve(to, t, p, start, lso, hwm)
			if err != nil {
				return err
			}
			if !ok {
				outside = append(outside, fmt.Sprintf("%s/%d has [%d, %d]", t, p, start, hwm))
				continue
			}
			targets = append(targets, store.OffsetTarget{Topic: t, Partition: p, Offset: off})
		}
	}
	if len(outside) > 0 {
		return usagef("--to: offset %d is outside the partition's log: %s", to.offset, strings.Join(outside, ", "))
	}

	start := time.Now()
	res, err := st.ResetOffsets(ctx, store.ResetOptions{Group: group, Targets: targets, DryRun: dryRun, Samples: 5})
	if err != nil {
		return err
	}
	if !dryRun {
		a.log.WithFields(logrus.Fields{"group": group, "partitions": len(targets), "to": cmd.String("to"),
			"elapsed": time.Since(start).Round(time.Millisecond).String()}).Info("offsets reset")
	}
	return a.printReset(group, cmd.String("to"), dryRun, res)
}

func (a *app) printReset(group, to string, dryRun bool, res store.ResetResult) error {
	w := a.stdout
	if dryRun {
		fmt.Fprintf(w, "dry run: what resetting group %s to %s would do; nothing was changed\n", group, to)
	} else {
		fmt.Fprintf(w, "reset group %s to %s\n", group, to)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tFROM\tTO\tEVENTS REMOVED\tDEAD LETTERS REMOVED")
	var events, dead int64
	for _, p := range res.Partitions {
		from := "-"
		if p.HadRow {
			from = strconv.FormatInt(p.From, 10)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\n", p.Topic, p.Partition, from, p.To, p.Events, p.DeadLetters)
		events += p.Events
		dead += p.DeadLetters
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	r := res.Runs
	verb := "removed"
	if dryRun {
		verb = "to remove"
	}
	fmt.Fprintf(w, "%s and %s %s; %s touched, recomputed from the events that remain: "+
		"%d updated, %d deleted (no event left), %d inserted, %d unchanged\n",
		plural(events, "event"), plural(dead, "dead letter"), verb, plural(r.Recomputed+r.Deleted, "run"),
		r.Updated, r.Deleted, r.Inserted, r.Unchanged)
	if dryRun {
		for _, d := range r.Samples {
			fmt.Fprintf(w, "  %s\n", clip(d.String(), 160))
		}
		return nil
	}
	fmt.Fprintln(w, "running workers of the group notice within seconds and consume again from the new offsets")
	return nil
}

// uniq drops repeated strings, keeping the first of each.
func uniq(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
