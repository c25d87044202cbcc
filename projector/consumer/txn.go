package consumer

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/IBM/sarama"
)

// Transactional producers (CONTRACT section 1): the worker reads committed
// data only (sarama's Consumer.IsolationLevel = ReadCommitted), so sarama
// delivers neither the messages of aborted transactions nor the control
// records (transaction markers). Those offsets still count as consumed:
// the stored next_offset must move past them, or a partition whose log
// ends in a marker or an aborted range would never reach its high
// watermark. sarama does not tell where its fetch position is, so an idle
// claim asks the partition leader itself (NextDeliverable).

// LastStableOffset returns the partition's last stable offset: the first
// offset of its oldest open transaction, or its high watermark when none
// is open. A read-committed consumer reads nothing at or past it until
// that transaction ends (sarama's Client.GetOffset asks read_uncommitted,
// which answers the high watermark).
func (c *Cluster) LastStableOffset(topic string, partition int32) (int64, error) {
	return c.ListOffset(topic, partition, sarama.OffsetNewest)
}

// ListOffset asks the partition leader for an offset as a read-committed
// consumer sees it: sarama.OffsetOldest, sarama.OffsetNewest (the last
// stable offset), or the first offset of a message stamped at or after a
// time in Unix milliseconds, -1 when none is below the last stable offset.
func (c *Cluster) ListOffset(topic string, partition int32, timestamp int64) (int64, error) {
	client := c.client
	off, err := listOffset(client, topic, partition, timestamp)
	if err != nil {
		// The leader may have moved: refresh the metadata once and retry.
		if rerr := client.RefreshMetadata(topic); rerr != nil {
			return -1, fmt.Errorf("list offset of %s/%d: %w", topic, partition, err)
		}
		off, err = listOffset(client, topic, partition, timestamp)
	}
	if err != nil {
		return -1, fmt.Errorf("list offset of %s/%d: %w", topic, partition, err)
	}
	return off, nil
}

func listOffset(client sarama.Client, topic string, partition int32, timestamp int64) (int64, error) {
	leader, err := client.Leader(topic, partition)
	if err != nil {
		return -1, err
	}
	req := sarama.NewOffsetRequest(client.Config().Version)
	if req.Version < 2 {
		return -1, errors.New("read_committed offsets need kafka-version 0.11.0 or later")
	}
	req.IsolationLevel = sarama.ReadCommitted
	req.AddBlock(topic, partition, timestamp, 1)
	resp, err := leader.GetAvailableOffsets(req)
	if err != nil {
		_ = leader.Close() // as sarama's own GetOffset: reconnect next time
		return -1, err
	}
	block := resp.GetBlock(topic, partition)
	if block == nil {
		return -1, sarama.ErrIncompleteResponse
	}
	if !errors.Is(block.Err, sarama.ErrNoError) {
		return -1, block.Err
	}
	return block.Offset, nil
}

// fetchVersion is the Fetch request version for a protocol version: 4 or
// later (isolation level, aborted transactions), and 10 from Kafka 2.1 on,
// which brokers need before they send zstd-compressed batches.
func fetchVersion(v sarama.KafkaVersion) (int16, error) {
	switch {
	case v.IsAtLeast(sarama.V2_1_0_0):
		return 10, nil
	case v.IsAtLeast(sarama.V1_1_0_0):
		return 7, nil
	case v.IsAtLeast(sarama.V0_11_0_0):
		return 5, nil
	}
	return 0, errors.New("read_committed fetches need kafka-version 0.11.0 or later")
}

// probeFetchBytes is how much of the partition one NextDeliverable reads.
// The broker always returns the first record batch whole, so a larger
// batch only means that one call moves past less.
const probeFetchBytes = 1 << 20

// NextDeliverable reads the partition from offset from as a read-committed
// consumer does (one Fetch at the partition leader, isolation level
// read_committed) and returns the offset of the first message at or after
// from that such a consumer delivers. Control batches (transaction
// markers) and the batches of aborted transactions (the response's
// AbortedTransactions) deliver nothing and are walked past. When no
// message is deliverable in what the broker returned, next is where the
// last walked batch ended, capped at the last stable offset; it is from
// when nothing was returned (from is at the last stable offset, or the
// log ends there). lso is the partition's last stable offset as the
// leader answered.
//
// Every offset in [from, next) is thus a marker or an aborted message, and
// the stored offset may move to next with no effects.
func (c *Cluster) NextDeliverable(topic string, partition int32, from int64) (next, lso int64, err error) {
	client := c.client
	version, err := fetchVersion(client.Config().Version)
	if err != nil {
		return from, -1, err
	}
	leader, epoch, err := client.LeaderAndEpoch(topic, partition)
	if err != nil {
		return from, -1, fmt.Errorf("leader of %s/%d: %w", topic, partition, err)
	}
	req := &sarama.FetchRequest{
		Version:     version,
		MaxWaitTime: 0, // answer at once: this is a look, not a poll
		MinBytes:    0,
		MaxBytes:    probeFetchBytes,
		Isolation:   sarama.ReadCommitted,
	}
	if version >= 7 {
		req.SessionID, req.SessionEpoch = 0, -1 // no fetch session
	}
	if version < 9 {
		epoch = -1
	}
	req.AddBlock(topic, partition, from, probeFetchBytes, epoch)
	resp, err := leader.Fetch(req)
	if err != nil {
		_ = leader.Close()
		return from, -1, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, from, err)
	}
	block := resp.GetBlock(topic, partition)
	if block == nil {
		return from, -1, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, from, sarama.ErrIncompleteResponse)
	}
	if !errors.Is(block.Err, sarama.ErrNoError) {
		return from, -1, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, from, block.Err)
	}
	return walkCommitted(block, from), block.LastStableOffset, nil
}

// walkCommitted walks a read-committed fetch response from offset from
// and returns the offset of the first message a read-committed consumer
// delivers, or, when there is none, the end of the last batch walked,
// capped at the last stable offset. It follows the same rules as sarama's
// consumer (and Kafka's): a producer's transactional batches are aborted
// from the first offset of an aborted transaction listed in the response
// until that producer's abort marker.
func walkCommitted(block *sarama.FetchResponseBlock, from int64) int64 {
	aborted := slices.SortedFunc(slices.Values(block.AbortedTransactions), func(x, y *sarama.AbortedTransaction) int {
		return cmp.Compare(x.FirstOffset, y.FirstOffset)
	})
	open := map[int64]bool{} // producers whose aborted transaction is under way
	next := from
	for _, recs := range block.RecordsSet {
		rb := recs.RecordBatch
		if rb == nil || rb.PartialTrailingRecord {
			// A legacy message set (no transactions) delivers its
			// messages; a batch cut short by the fetch size cannot be
			// walked past. Either way, stop here.
			return next
		}
		last := rb.LastOffset()
		if last < next {
			continue // before from: the broker returns whole batches
		}
		for len(aborted) > 0 && aborted[0].FirstOffset <= last {
			open[aborted[0].ProducerID] = true
			aborted = aborted[1:]
		}
		switch {
		case rb.Control:
			if isAbortMarker(rb) {
				delete(open, rb.ProducerID)
			}
		case rb.IsTransactional && open[rb.ProducerID]:
			// An aborted transaction's batch: nothing delivered.
		default:
			for _, r := range rb.Records {
				if off := rb.FirstOffset + r.OffsetDelta; off >= next {
					return off
				}
			}
			// Every record of the batch was before next (compaction may
			// leave a batch with fewer records than offsets).
		}
		next = last + 1
	}
	if block.LastStableOffset >= from && next > block.LastStableOffset {
		next = block.LastStableOffset
	}
	return max(next, from)
}

// isAbortMarker reports whether a control batch is an abort marker: its
// record's key is a version (int16) and a type (int16), 0 for abort and 1
// for commit.
func isAbortMarker(rb *sarama.RecordBatch) bool {
	if len(rb.Records) == 0 || len(rb.Records[0].Key) < 4 {
		return false
	}
	k := rb.Records[0].Key
	return k[2] == 0 && k[3] == 0
}
