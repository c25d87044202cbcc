package projector

import (
	"math"
	"sync"
	"time"
)

// Histogram records durations in logarithmic buckets (about 5% wide) from
// 10µs to about 10 minutes, for quantiles without keeping every sample.
// Safe for concurrent use.
type Histogram struct {
	mu     sync.Mutex
	counts [histBuckets]int64
	n      int64
	max    time.Duration
}

const (
	histBuckets = 400
	histMin     = 10 * time.Microsecond
	histGrowth  = 1.05
)

func histBucket(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	b := int(math.Log(float64(d)/float64(histMin))/math.Log(histGrowth)) + 1
	return min(b, histBuckets-1)
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	h.mu.Lock()
	h.counts[histBucket(d)]++
	h.n++
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// Count is the number of durations recorded.
func (h *Histogram) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Max is the longest duration recorded.
func (h *Histogram) Max() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

// Quantile returns the upper bound of the bucket holding quantile q (0 to
// 1) of the recorded durations, capped at Max; 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for b, c := range h.counts {
		seen += c
		if seen >= max(rank, 1) {
			if b == histBuckets-1 {
				return h.max // the overflow bucket has no upper bound
			}
			upper := time.Duration(float64(histMin) * math.Pow(histGrowth, float64(b)))
			return min(upper, h.max)
		}
	}
	return h.max
}
