package dbsqlc

// Hand-written: the queries of the apply transaction queued into one
// pgx.Batch, so that a batch of events costs two round trips instead of
// one per statement. Each function passes the same arguments in the same
// order as the sqlc-generated method of the same name; the store tests run
// every one of them against PostgreSQL.

import (
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// QueueLockOffset queues LockOffset; the row is scanned into out.
func QueueLockOffset(b *pgx.Batch, arg LockOffsetParams, out *LockOffsetRow) {
	b.Queue(lockOffset, arg.GroupID, arg.Topic, arg.Partition).QueryRow(func(row pgx.Row) error {
		return row.Scan(&out.NextOffset, &out.LeaseEpoch)
	})
}

// QueueInsertEvents queues InsertEvents; the new event_ids are appended to
// out.
func QueueInsertEvents(b *pgx.Batch, arg InsertEventsParams, out *[]string) {
	b.Queue(insertEvents,
		arg.Topic, arg.Partition, arg.EventIds, arg.WorkflowRunIds, arg.WorkflowIds,
		arg.EventTypes, arg.Sources, arg.OccurredAts, arg.Attempts, arg.StepIds,
		arg.Offsets, arg.Payloads,
	).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			*out = append(*out, id)
		}
		return rows.Err()
	})
}

// QueueHorizon queues Horizon; the horizon is scanned into out.
func QueueHorizon(b *pgx.Batch, out *pgtype.Timestamptz) {
	b.Queue(horizon).QueryRow(func(row pgx.Row) error { return row.Scan(out) })
}

// QueueStoredEventIDs queues StoredEventIDs; the stored event_ids are
// added to out.
func QueueStoredEventIDs(b *pgx.Batch, eventIds []string, out map[string]bool) {
	b.Queue(storedEventIDs, eventIds).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			out[id] = true
		}
		return rows.Err()
	})
}

// QueueMergeRuns queues MergeRuns.
func QueueMergeRuns(b *pgx.Batch, arg MergeRunsParams) {
	b.Queue(mergeRuns,
		arg.WorkflowRunIds, arg.WorkflowIds, arg.Sources, arg.Attempts, arg.Statuses,
		arg.QueuedAts, arg.StartedAts, arg.FinishedAts, arg.Errors, arg.HasErrors,
		arg.StepsSucceeded, arg.StepsFailed, arg.StepsSkipped, arg.EventCounts,
		arg.FirstEventAts, arg.LastEventAts, arg.LatestEventIds, arg.DecidingEventIds,
	)
}

// QueueMergeSteps queues MergeSteps.
func QueueMergeSteps(b *pgx.Batch, arg MergeStepsParams) {
	queueSteps(b, mergeSteps, arg)
}

// queueSteps queues sql, MergeSteps or insertSteps, with arg.
func queueSteps(b *pgx.Batch, sql string, arg MergeStepsParams) {
	b.Queue(sql,
		arg.WorkflowRunIds, arg.Attempts, arg.StepIds, arg.WorkflowIds, arg.Sources,
		arg.Statuses, arg.StartedAts, arg.FinishedAts, arg.Errors, arg.HasErrors,
		arg.EventCounts, arg.FirstEventAts, arg.LastEventAts, arg.LatestEventIds,
		arg.DecidingEventIds,
	)
}

// insertSteps is MergeSteps without its ON CONFLICT clause: a plain
// insert of the same rows in the same order, which fails with a
// unique_violation on a stored step instead of merging it. For steps
// that no stored row has yet, as in a backlog, where a step's events
// mostly come in one batch, it skips the per-row work of ON CONFLICT (a
// speculative insertion, its lock and a second index probe), which made
// the steps' merge about twice as dear.
var insertSteps = func() string {
	i := strings.Index(mergeSteps, "\nON CONFLICT ")
	if i < 0 {
		panic("dbsqlc: MergeSteps has no ON CONFLICT clause")
	}
	return mergeSteps[:i]
}()

// QueueInsertSteps queues insertSteps with MergeSteps' arguments.
func QueueInsertSteps(b *pgx.Batch, arg MergeStepsParams) {
	queueSteps(b, insertSteps, arg)
}

// QueueInsertDeadLetters queues InsertDeadLetters; the number of rows
// stored is written to out.
func QueueInsertDeadLetters(b *pgx.Batch, arg InsertDeadLettersParams, out *int64) {
	b.Queue(insertDeadLetters,
		arg.Topic, arg.Partition, arg.Offsets, arg.Keys, arg.Vals, arg.Headers,
		arg.Reasons, arg.Errors,
	).Exec(func(ct pgconn.CommandTag) error {
		*out = ct.RowsAffected()
		return nil
	})
}

// QueueAdvanceOffset queues AdvanceOffset.
func QueueAdvanceOffset(b *pgx.Batch, arg AdvanceOffsetParams) {
	b.Queue(advanceOffset, arg.NextOffset, arg.Events, arg.GroupID, arg.Topic, arg.Partition)
}

// QueueUnknownProjections queues UnknownProjections; the names are
// appended to out.
func QueueUnknownProjections(b *pgx.Batch, loaded []string, out *[]string) {
	b.Queue(unknownProjections, loaded).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				return err
			}
			*out = append(*out, name)
		}
		return rows.Err()
	})
}
