package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/internal/dbsqlc"
)

// Claim takes the lease of a partition for a new consumer session. The
// partition's row is created at initialOffset when there is none. Taking
// the lease bumps its epoch, which fences every earlier owner.
func (s *Store) Claim(ctx context.Context, group, topic string, partition int32, initialOffset int64, owner string) (model.Lease, error) {
	row, err := s.q.ClaimOffset(ctx, s.pool, dbsqlc.ClaimOffsetParams{
		GroupID: group, Topic: topic, Partition: partition, InitialOffset: initialOffset, Owner: owner,
	})
	if err != nil {
		return model.Lease{}, fmt.Errorf("claim %s/%d: %w", topic, partition, classify(err))
	}
	return model.Lease{Group: group, Topic: topic, Partition: partition, Epoch: row.LeaseEpoch, NextOffset: row.NextOffset}, nil
}

// Reposition moves a claimed partition's stored offset to where the broker
// can serve, and records the incident, in one transaction, only while the
// lease is still l's. It returns the lease at the new offset. When the
// offset moves back (the partition's log started over: the topic was
// recreated), the dead letters of the old log from there on move to
// dead_letters_superseded in the same transaction: the new log's messages
// take their positions, and dead_letters keeps one per position.
func (s *Store) Reposition(ctx context.Context, l model.Lease, to int64, inc model.Incident) (model.Lease, error) {
	err := s.withTx(ctx, func(tx pgx.Tx) error {
		cur, err := s.q.LockOffset(ctx, tx, dbsqlc.LockOffsetParams{GroupID: l.Group, Topic: l.Topic, Partition: l.Partition})
		if err != nil {
			return fmt.Errorf("lock offset: %w", err)
		}
		if err := fence(cur.NextOffset, cur.LeaseEpoch, l); err != nil {
			return err
		}
		if err := s.q.InsertIncident(ctx, tx, dbsqlc.InsertIncidentParams{
			GroupID: l.Group, Topic: l.Topic, Partition: l.Partition, Kind: inc.Kind,
			ExpectedOffset: inc.ExpectedOffset, ActualOffset: inc.ActualOffset, Detail: inc.Detail,
		}); err != nil {
			return fmt.Errorf("record incident: %w", err)
		}
		if to < l.NextOffset {
			if _, err := s.q.SupersedeDeadLetters(ctx, tx, dbsqlc.SupersedeDeadLettersParams{
				Topic: l.Topic, Partition: l.Partition, FromOffset: to,
			}); err != nil {
				return fmt.Errorf("supersede the dead letters of the old log: %w", err)
			}
		}
		return s.q.AdvanceOffset(ctx, tx, dbsqlc.AdvanceOffsetParams{
			GroupID: l.Group, Topic: l.Topic, Partition: l.Partition, NextOffset: to,
		})
	})
	if err != nil {
		return l, fmt.Errorf("reposition %s/%d to %d: %w", l.Topic, l.Partition, to, classify(err))
	}
	l.NextOffset = to
	return l, nil
}

// StoredOffsets returns the stored next_offset of every partition of the
// group, keyed by topic and partition.
func (s *Store) StoredOffsets(ctx context.Context, group string) (map[model.TopicPartition]int64, error) {
	rows, err := s.q.ListOffsets(ctx, s.pool, group)
	if err != nil {
		return nil, fmt.Errorf("list offsets of group %s: %w", group, classify(err))
	}
	out := make(map[model.TopicPartition]int64, len(rows))
	for _, r := range rows {
		out[model.TopicPartition{Topic: r.Topic, Partition: r.Partition}] = r.NextOffset
	}
	return out, nil
}

// CheckLease returns an error wrapping model.ErrFenced when the
// partition's stored offset or lease epoch is no longer what l expects.
func (s *Store) CheckLease(ctx context.Context, l model.Lease) error {
	cur, err := s.q.GetOffset(ctx, s.pool, dbsqlc.GetOffsetParams{GroupID: l.Group, Topic: l.Topic, Partition: l.Partition})
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: the stored offset row of %s/%d is gone", model.ErrFenced, l.Topic, l.Partition)
	}
	if err != nil {
		return fmt.Errorf("check lease of %s/%d: %w", l.Topic, l.Partition, classify(err))
	}
	return fence(cur.NextOffset, cur.LeaseEpoch, l)
}

// fence checks a stored offset row against the lease that expects it.
func fence(next, epoch int64, l model.Lease) error {
	if epoch != l.Epoch || next != l.NextOffset {
		return fmt.Errorf("%w: stored next_offset %d epoch %d, expected next_offset %d epoch %d",
			model.ErrFenced, next, epoch, l.NextOffset, l.Epoch)
	}
	return nil
}
