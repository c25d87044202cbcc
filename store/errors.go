package store

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector-run/projector/projector/model"
)

// This file is the one place that reads PostgreSQL's error codes: every
// other part of the program asks these functions, or meets the sentinel
// errors of package model that Apply wraps around them.

// ErrNotMigrated means the database schema is older than the binary.
var ErrNotMigrated = errors.New("database not migrated")

func pgError(err error) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr
	}
	return nil
}

// IsDataError reports whether PostgreSQL refused the data itself (a data
// exception, an integrity violation, a program limit such as nesting
// depth): retrying the same rows fails the same way, so the rows are to
// blame, not the connection.
func IsDataError(err error) bool {
	pgErr := pgError(err)
	if pgErr == nil {
		return false
	}
	return pgerrcode.IsDataException(pgErr.Code) ||
		pgerrcode.IsIntegrityConstraintViolation(pgErr.Code) ||
		pgerrcode.IsProgramLimitExceeded(pgErr.Code)
}

// IsSchemaError reports whether the error says the schema is not what the
// binary expects (a missing table, column or function): retrying cannot
// help until someone restores it.
func IsSchemaError(err error) bool {
	pgErr := pgError(err)
	if pgErr == nil {
		return false
	}
	switch pgErr.Code {
	case pgerrcode.UndefinedTable, pgerrcode.UndefinedColumn, pgerrcode.UndefinedFunction,
		pgerrcode.UndefinedObject, pgerrcode.InvalidSchemaName:
		return true
	}
	return false
}

// isConflict reports whether PostgreSQL chose the transaction as the
// victim of a conflict with a concurrent one (a deadlock, a serialization
// failure): the same transaction may well pass when run again.
func isConflict(err error) bool {
	pgErr := pgError(err)
	return pgErr != nil && (pgErr.Code == pgerrcode.DeadlockDetected || pgErr.Code == pgerrcode.SerializationFailure)
}

// isStoredDuplicate reports whether err is a COPY into workflow_events
// that met an event_id already stored.
func isStoredDuplicate(err error) bool {
	return isUniqueViolationOn(err, "workflow_events")
}

// isUniqueViolationOn reports whether err is a row that met a stored one
// with the same key in table.
func isUniqueViolationOn(err error, table string) bool {
	pgErr := pgError(err)
	return pgErr != nil && pgErr.Code == pgerrcode.UniqueViolation && pgErr.TableName == table
}

// isLockTimeout reports whether a statement gave up waiting for a lock
// (lock_timeout).
func isLockTimeout(err error) bool {
	pgErr := pgError(err)
	return pgErr != nil && pgErr.Code == pgerrcode.LockNotAvailable
}

// refusal is PostgreSQL's own message for an error, without the context
// the program wrapped around it, for the error text of a dead letter.
func refusal(err error) string {
	if pgErr := pgError(err); pgErr != nil {
		return pgErr.Message
	}
	return err.Error()
}

// classify wraps err with the sentinel of package model that tells
// the worker what to do with it: ErrRejected (the rows are to blame: split
// the batch), a SchemaError (the schema is broken: retry, loudly) or
// ErrRefused (a password, privilege or certificate: retry, loudly). A
// ProjectionError stays as it is, whatever PostgreSQL said inside it: a
// projection's failure is never the data's fault. Other errors are
// returned as they are, and retried as transient.
func classify(err error) error {
	var pe *model.ProjectionError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return err // the projection's fault, whatever PostgreSQL said: retried
	case IsDataError(err):
		return fmt.Errorf("%w: %w", model.ErrRejected, err)
	case IsSchemaError(err):
		return &model.SchemaError{Relation: missingRelation(err), Err: err}
	case IsConfigError(err):
		return fmt.Errorf("%w: %w", model.ErrRefused, err)
	}
	return err
}

// relationName finds the name PostgreSQL quotes in an undefined-object
// message: `relation "workflow_runs" does not exist`, `column "x" of
// relation "y" does not exist`, `function f(text) does not exist`.
var relationName = regexp.MustCompile(`(?:relation|column|function|type|schema) "?([^"\s]+(?:\([^)]*\))?)"? does not exist`)

// missingRelation names what an undefined-object error says is missing.
func missingRelation(err error) string {
	pgErr := pgError(err)
	if pgErr == nil {
		return ""
	}
	if pgErr.TableName != "" {
		return pgErr.TableName
	}
	if m := relationName.FindStringSubmatch(pgErr.Message); m != nil {
		return m[1]
	}
	return pgErr.Message
}

// IsConfigError reports whether PostgreSQL refused the connection, or a
// statement, for a reason that only a change of configuration mends: a
// password it refuses, a role or database that does not exist, a missing
// privilege, a pg_hba.conf rule, a server certificate that does not verify
// (sslmode=verify-ca or verify-full). Retrying does not help: at start it
// is exit code 2. A server that is down, starting or out of connections is
// not such an error: it heals.
func IsConfigError(err error) bool {
	if err == nil {
		return false
	}
	if pgErr := pgError(err); pgErr != nil {
		return pgErr.Code == pgerrcode.InvalidPassword || // 28P01: password authentication failed
			pgerrcode.IsInvalidAuthorizationSpecification(pgErr.Code) || // 28000: no such role, no pg_hba.conf entry
			pgErr.Code == pgerrcode.InvalidCatalogName || // 3D000: no such database
			pgErr.Code == pgerrcode.InsufficientPrivilege // 42501: no CONNECT, or a missing GRANT
	}
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	return errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &host) ||
		errors.As(err, &verify) || errors.As(err, &alert)
}

// IsNotMigrated reports whether err says the schema is behind the binary.
func IsNotMigrated(err error) bool { return errors.Is(err, ErrNotMigrated) }
