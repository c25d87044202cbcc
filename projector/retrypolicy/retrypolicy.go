// Package retrypolicy holds the program's one retry policy, shared by the
// consumer, the store and the commands.
package retrypolicy

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// NewBackOff is the program's one retry policy: exponential backoff from
// min to at most max between attempts, randomized by half either way so
// that workers that failed together do not retry together. Everything that
// retries (the worker, the store's conflict retries, the commands waiting
// for PostgreSQL) takes its backoff from here.
func NewBackOff(min, max time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = min
	b.MaxInterval = max
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	return b
}
