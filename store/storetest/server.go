package storetest

import (
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// What the tests that run a PostgreSQL server of their own share (with
// other settings than the local one's: TLS, a crash, a restart).

// PGBinary finds a PostgreSQL server program (initdb, pg_ctl, postgres)
// on PATH or in Debian's /usr/lib/postgresql/<version>/bin, newest first.
// Without one the test fails: what needs a server of its own never skips.
func PGBinary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	sort.Slice(found, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(found[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(found[j]))))
		return vi > vj
	})
	require.NotEmpty(t, found, "this test runs a PostgreSQL server of its own: %s must be on PATH or in /usr/lib/postgresql/*/bin (apt-get install postgresql)", name)
	return found[0]
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
