package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Roles is an empty database of the test's own on the test server, owned
// by a role that is not a superuser (Owner), and a second role that owns
// nothing (Worker): the least-privilege setup of the README. The roles
// have random names; the database and both roles are dropped when the
// test ends. Trust authentication on the test server accepts their
// passwords as any other.
type Roles struct {
	Database, Owner, Worker string
	// OwnerURL and WorkerURL connect to Database as each role.
	OwnerURL, WorkerURL string
}

// NewRoles creates the database and the roles.
func NewRoles(t testing.TB) *Roles {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	suffix := hex.EncodeToString(b)
	r := &Roles{Database: "projector_lp_" + suffix, Owner: "projector_owner_" + suffix, Worker: "projector_worker_" + suffix}
	server := ServerURL(t)
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("connect to the test server: %v", err)
	}
	defer admin.Close(ctx)
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), server)
		if err != nil {
			t.Errorf("drop the roles: %v", err)
			return
		}
		defer conn.Close(context.Background())
		for _, q := range []string{
			"DROP DATABASE IF EXISTS " + pgx.Identifier{r.Database}.Sanitize() + " WITH (FORCE)",
			"DROP ROLE IF EXISTS " + pgx.Identifier{r.Worker}.Sanitize(),
			"DROP ROLE IF EXISTS " + pgx.Identifier{r.Owner}.Sanitize(),
		} {
			if _, err := conn.Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	for _, q := range []string{
		"CREATE ROLE " + pgx.Identifier{r.Owner}.Sanitize() + " LOGIN PASSWORD 'owner-Pa55'",
		"CREATE ROLE " + pgx.Identifier{r.Worker}.Sanitize() + " LOGIN PASSWORD 'worker-Pa55'",
		"CREATE DATABASE " + pgx.Identifier{r.Database}.Sanitize() + " OWNER " + pgx.Identifier{r.Owner}.Sanitize(),
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u, err := url.Parse(server)
	if err != nil || u.Scheme == "" {
		t.Fatalf("TEST_DATABASE_URL is not a postgres:// URL")
	}
	u.Path = "/" + r.Database
	u.RawQuery = "sslmode=disable"
	u.User = url.UserPassword(r.Owner, "owner-Pa55")
	r.OwnerURL = u.String()
	u.User = url.UserPassword(r.Worker, "worker-Pa55")
	r.WorkerURL = u.String()
	return r
}

// READMEGrants returns the README's block of least-privilege GRANTs, with
// the README's names (database projector, roles projector_owner and
// projector_worker) replaced by r's.
func (r *Roles) READMEGrants(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	readme, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "README.md"))
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	const marker = "<!-- least-privilege grants:"
	s := string(readme)
	i := strings.Index(s, marker)
	if i < 0 {
		t.Fatalf("README.md has no %q block", marker)
	}
	s = s[i:]
	start := strings.Index(s, "```sql\n")
	end := strings.Index(s[start+7:], "```")
	if start < 0 || end < 0 {
		t.Fatalf("README.md: no sql block after %q", marker)
	}
	block := s[start+7 : start+7+end]
	block = regexp.MustCompile(`\bprojector_worker\b`).ReplaceAllString(block, pgx.Identifier{r.Worker}.Sanitize())
	block = regexp.MustCompile(`\bprojector_owner\b`).ReplaceAllString(block, pgx.Identifier{r.Owner}.Sanitize())
	block = regexp.MustCompile(`\bDATABASE projector\b`).ReplaceAllString(block, "DATABASE "+pgx.Identifier{r.Database}.Sanitize())
	return block
}
