package store

import (
	"errors"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotMigrated means the database schema is older than the binary.
var ErrNotMigrated = errors.New("database not migrated")

// IsDataError reports whether PostgreSQL refused the data itself (a data
// exception, an integrity violation, a program limit such as nesting
// depth): retrying the same rows fails the same way, so the rows are to
// blame, not the connection.
func IsDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgerrcode.IsDataException(pgErr.Code) ||
		pgerrcode.IsIntegrityConstraintViolation(pgErr.Code) ||
		pgerrcode.IsProgramLimitExceeded(pgErr.Code)
}

// IsSchemaError reports whether the error says the schema is not what the
// binary expects (a missing table or column): retrying cannot help.
func IsSchemaError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case pgerrcode.UndefinedTable, pgerrcode.UndefinedColumn, pgerrcode.UndefinedFunction:
		return true
	}
	return false
}

// IsNotMigrated reports whether err says the schema is behind the binary.
func IsNotMigrated(err error) bool { return errors.Is(err, ErrNotMigrated) }
