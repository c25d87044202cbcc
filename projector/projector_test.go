package projector_test

import (
	"github.com/projector-run/projector/projector"
	"github.com/projector-run/projector/projector/projectiontest"
)

// The projections of a user's kind that the tests run are projections of
// the public API.
var (
	_ projector.Projection = projectiontest.Counts{}
	_ projector.Projection = projectiontest.PerRun{}
)
