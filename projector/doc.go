// Package projector is the public Go API of the projector: a Kafka
// consumer group that stores workflow events in PostgreSQL and keeps
// projections of them, exactly once.
//
// A user adds projections of their own (tables derived from the stored
// events) by writing a Projection and building a binary whose main is
// nothing but
//
//	func main() { projector.Main(myProjection{}) }
//
// That binary is the whole projector command line (run, migrate, offsets,
// dlq, rebuild, projections ...) with the user's projections applied after
// the built-in ones, in the transaction that stores their events.
//
// What a projection may rely on (each event once, until Forget; refusal to
// run without every projection the database has; rebuild from history) is
// the contract's, section 7; the README's "Guarantees" and "Reprocessing"
// sections say how it holds. The machinery is in other packages: the
// event model in projector/model, the consumer in projector/consumer, the
// store in store, the commands in projector/cli.
package projector
