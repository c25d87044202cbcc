package model

// The decoder tests' builders of JSON events, for the tests that ask
// PostgreSQL (decode_pg_test.go).
var (
	DecEvent  = decEvent
	DecNest   = decNest
	DecDigits = decDigits
	DecPadTo  = decPadTo
)
