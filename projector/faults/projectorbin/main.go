// Command projectorbin is the binary the fault-injection suite runs as its
// workers: the projector command line with two projections of a user's
// kind (projectiontest's pc and pr) added to the built-in ones, so that
// every scenario checks the user's tables too.
package main

import (
	"github.com/projector-run/projector/projector"
	"github.com/projector-run/projector/projector/projectiontest"
)

func main() {
	projector.Main(projectiontest.Counts{N: "pc"}, projectiontest.PerRun{N: "pr"})
}
