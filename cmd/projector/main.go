// Command projector turns a Kafka stream of workflow events into a
// run-state projection in PostgreSQL, exactly once.
package main

import "github.com/projector-run/projector/projector"

func main() { projector.Main() }
