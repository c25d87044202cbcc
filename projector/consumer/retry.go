package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/projector/retrypolicy"

	"github.com/cenkalti/backoff/v5"
	"github.com/sirupsen/logrus"
)

func (w *Worker) backoff() *backoff.ExponentialBackOff {
	return retrypolicy.NewBackOff(w.cfg.RetryMin, w.cfg.RetryMax)
}

// retry runs op until it succeeds, returns a permanent error, or ctx ends;
// failures are logged and retried with capped exponential backoff. A
// broken schema (SchemaError) or a failing projection (ProjectionError) is
// logged at error level, naming the missing relation or the projection,
// and makes the worker unready until the next sign of progress.
func retry[T any](ctx context.Context, w *Worker, log logrus.FieldLogger, what string, op func() (T, error)) (T, error) {
	return backoff.Retry(ctx, op,
		backoff.WithBackOff(w.backoff()),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			w.retried(log, what, err, next)
		}))
}

// retried counts, reports and logs one failed attempt of what, retried in
// next.
func (w *Worker) retried(log logrus.FieldLogger, what string, err error, next time.Duration) {
	w.stats.Retries.Add(1)
	w.mon.retried(what, err)
	l := log.WithError(err).WithField("retry_in", next.Round(time.Millisecond).String())
	if pe := (*model.ProjectionError)(nil); errors.As(err, &pe) {
		l.WithField("projection", pe.Projection).Error(what + " failed: projection " + pe.Projection + " returned an error; retrying until it succeeds (no event is skipped)")
		return
	}
	if se := (*model.SchemaError)(nil); errors.As(err, &se) {
		l.WithField("relation", se.Relation).Error(what + " failed: the database schema is broken; retrying until it is restored")
		return
	}
	if refused(err) {
		l.Error(what + " failed: the brokers or the database refuse the configuration (credentials, certificates, privileges); retrying until it is fixed")
		return
	}
	l.Warn(what + " failed; retrying")
}

// refused reports whether err says the brokers (IsConfigError) or
// PostgreSQL (model.ErrRefused) refuse the configuration.
func refused(err error) bool {
	return IsConfigError(err) || errors.Is(err, model.ErrRefused)
}

// stuck reports whether err is a failure that retrying alone will not
// mend: a broken schema, a failing projection, a configuration the brokers
// or the database refuse (Worker.Stuck).
func stuck(err error) bool {
	var se *model.SchemaError
	var pe *model.ProjectionError
	return errors.As(err, &se) || errors.As(err, &pe) || refused(err)
}
