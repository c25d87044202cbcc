// Package faults holds the fault-injection suite of projector: it builds
// the projector binary, runs it as separate worker processes against real
// PostgreSQL and an in-process Kafka-protocol broker (kfake, which lives in
// the test process so that it survives the workers), injects faults, and
// compares the final tables with the projection computed independently
// from every message produced.
//
// The scenarios (README, "Guarantees"): a SIGKILL storm of three workers
// in one group; a zombie worker frozen past its session and thawed after
// its partitions moved; PostgreSQL connections killed, statements timed
// out, the server restarted and crashed; the broker stopped and restarted
// and requests answered with errors; hostile input; retention deleting
// unapplied messages and a topic recreated under the workers.
//
// Every scenario ends with the same checks: no event lost, none applied
// twice (each run row equal to model.Project of its distinct events),
// every invalid message exactly one dead letter with its exact key, value
// and headers, every next_offset at its partition's high watermark, and
// no offset moved by a worker that did not hold that partition's lease
// (an audit trigger records who moved each offset).
//
// The tests carry the build tag "faults" and take a few minutes, so
// `make test` leaves them out; `make test-faults` runs them, and CI runs
// both. This file is the package's only non-test file.
package faults
