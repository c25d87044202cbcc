package projector

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	var h Histogram
	require.Zero(t, h.Quantile(0.5))
	for i := 1; i <= 1000; i++ {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	require.Equal(t, int64(1000), h.Count())
	require.Equal(t, time.Second, h.Max())
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.Quantile(tc.q)
		require.InEpsilon(t, float64(tc.want), float64(got), 0.06, "q%.2f: %s", tc.q, got)
		require.GreaterOrEqual(t, got, tc.want, "the bucket's upper bound")
	}
	h.Observe(time.Nanosecond)
	h.Observe(time.Hour)
	require.Equal(t, time.Hour, h.Quantile(1))
}
