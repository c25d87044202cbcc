package projector

import (
	"context"
	"os"

	"github.com/projector-run/projector/projector/cli"
	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store"
)

// Event is a stored workflow event as a projection receives it: EventID,
// EventType, Source, WorkflowID, WorkflowRunID, Timestamp (UTC,
// microseconds), Attempt, StepID, Payload (the whole event as JSON), and
// where it was read: Topic, Partition, Offset.
type Event = model.Event

// Projection derives tables of its own from the stored events: Name, Setup,
// Apply and Forget, each called in a transaction of the projector's.
type Projection = store.Projection

// DB is what a projection may do in the transaction: pgx.Tx without
// Commit, Rollback or Begin.
type DB = store.DB

// Main runs the projector command line, every command, with these
// projections added to the built-in ones, and exits the process with the
// command's exit code.
func Main(projections ...Projection) {
	os.Exit(cli.Run(context.Background(), os.Args, os.Stdout, os.Stderr, projections...))
}
