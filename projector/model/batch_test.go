package model_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
)

// TestBatchIsFullAtSizeOrBytes: a batch is applied at BatchSize messages
// or at MaxBatchBytes of keys, values and headers, whichever comes first,
// so that a burst of large messages never sits in memory BatchSize at a
// time.
func TestBatchIsFullAtSizeOrBytes(t *testing.T) {
	t.Parallel()
	b := &model.Batch{}
	half := make([]byte, model.MaxBatchBytes/2)
	b.Add(model.Message{Offset: 0, Value: half})
	require.False(t, b.Full(1000))
	b.Add(model.Message{Offset: 1, Value: half[:len(half)-10], Key: []byte("key"), Headers: []model.Header{{Key: []byte("h"), Value: []byte("123456")}}})
	require.True(t, b.Full(1000), "full by bytes: keys and headers count")

	b.Reset()
	require.False(t, b.Full(2))
	b.Add(model.Message{Offset: 2, Value: []byte(`{}`)})
	b.Add(model.Message{Offset: 3, Value: []byte(`{}`)})
	require.True(t, b.Full(2), "full by count")
}
