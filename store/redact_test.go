package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/store"
)

// TestRedactURLHidesEveryPassword: a database URL is printed without its
// password, whether in the user info, in libpq's password parameters or
// in a key=value DSN.
func TestRedactURLHidesEveryPassword(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		"postgres://worker:s3cret-pw@db.example:5432/projector?sslmode=verify-full",
		"postgres://worker@db.example/projector?password=s3cret-pw&sslmode=require",
		"postgresql://worker@db.example/projector?sslpassword=s3cret-pw&sslkey=/k.pem",
		"host=db.example user=worker password=s3cret-pw dbname=projector",
	} {
		got := store.RedactURL(raw)
		require.NotContains(t, got, "s3cret-pw", raw)
		require.Contains(t, got, "db.example", raw)
	}
	require.Equal(t, "postgres://worker:xxxxx@db.example:5432/projector?sslmode=verify-full",
		store.RedactURL("postgres://worker:s3cret-pw@db.example:5432/projector?sslmode=verify-full"))
}
