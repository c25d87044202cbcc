package model

import "errors"

// ErrRefused means PostgreSQL refuses this program's configuration: a
// password, a role, a database, a privilege or a certificate that only an
// operator can fix. A worker that meets it after it started retries,
// logging it at error level, and is not ready meanwhile; at start it is
// exit code 2 (store.IsConfigError).
var ErrRefused = errors.New("postgresql refuses the configuration")
