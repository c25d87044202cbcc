package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/store"
	"github.com/projector-run/projector/store/storetest"
)

const sqlCounter = `-- Counts events per type.
-- +projector Setup
CREATE TABLE IF NOT EXISTS type_counts (event_type text PRIMARY KEY, n bigint NOT NULL);
-- +projector Apply
INSERT INTO type_counts AS t SELECT event_type, count(*) FROM new_events GROUP BY 1 ORDER BY 1
ON CONFLICT (event_type) DO UPDATE SET n = t.n + excluded.n;
-- +projector Forget
UPDATE type_counts AS t SET n = t.n - f.n
FROM (SELECT event_type, count(*) AS n FROM workflow_events JOIN forgotten_runs USING (workflow_run_id) GROUP BY 1) AS f
WHERE t.event_type = f.event_type;
`

// TestLoadSQLProjectionsParses: a file's statements are split past
// strings, quoted identifiers, dollar-quoted bodies and comments, so that
// a semicolon or a keyword inside them neither splits a statement nor
// counts as transaction control; a file that cannot be read to its end,
// or that would control the transaction, is refused with its line.
func TestLoadSQLProjectionsParses(t *testing.T) {
	t.Parallel()
	load := func(src string) error {
		_, err := store.LoadSQLProjectionsFS(fstest.MapFS{"d/p.sql": {Data: []byte(src)}}, "d")
		return err
	}
	ok := `-- +projector Setup
CREATE TABLE IF NOT EXISTS "we;ird" (s text DEFAULT 'a;b''c', t text DEFAULT E'\';COMMIT;');
/* a block; /* nested; */ COMMIT; */
DO $body$ BEGIN PERFORM 1; COMMIT; END $body$;
SELECT $$;$$, $1x;
-- +projector Apply
SELECT 1 -- ; COMMIT;
;
-- +projector Forget
SELECT 1`
	require.NoError(t, load(ok))
	for _, tc := range []struct{ src, want string }{
		{"-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSELECT 1;\n-- +projector Forget\nBEGIN;\n", `d/p.sql:6: section Forget: BEGIN: a projection runs inside`},
		{"-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSELECT 1; /* open\n-- +projector Forget\nSELECT 1;\n", `d/p.sql:4: section Apply: a /* comment is not closed`},
		{"-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSELECT $x$ open;\n\n-- +projector Forget\nSELECT 1;\n", `d/p.sql:4: section Apply: a $x$-quoted body is not closed`},
		{"-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSELECT \"open;\n-- +projector Forget\nSELECT 1;\n", `d/p.sql:4: section Apply: a "-quoted string is not closed`},
		{"\xff", `d/p.sql: not valid UTF-8`},
		{"-- +projector Setup\nSELECT 1;\n-- +projector Apply\nSET LOCAL work_mem = '64MB';\nSET search_path = x;\n-- +projector Forget\nSELECT 1;\n", `d/p.sql:5: section Apply: SET: a setting would outlive the transaction`},
		{"-- +projector Setup\nDISCARD TEMP;\n-- +projector Apply\nSELECT 1;\n-- +projector Forget\nSELECT 1;\n", `d/p.sql:2: section Setup: DISCARD: a setting would outlive`},
	} {
		err := load(tc.src)
		require.ErrorContains(t, err, tc.want, "%q", tc.src)
		var fe *store.SQLFileError
		require.ErrorAs(t, err, &fe)
	}

	// Files that are not NAME.sql are left alone, in a directory too.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "type_counts.sql"), []byte(sqlCounter), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("not SQL"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "old.sql"), 0o755))
	ps, err := store.LoadSQLProjections(dir)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Equal(t, "type_counts", ps[0].Name())
	require.Equal(t, "sql", store.KindOf(ps[0]))
}

// TestSQLRelationsHaveTheColumnsOfWorkflowEvents: new_events has the
// columns of workflow_events, in order, with their types and collations,
// and neither it nor forgotten_runs adds to the catalog per transaction
// (ON COMMIT DELETE ROWS empties them in place: their files keep their
// relfilenode).
func TestSQLRelationsHaveTheColumnsOfWorkflowEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ps, err := store.LoadSQLProjectionsFS(fstest.MapFS{"d/type_counts.sql": {Data: []byte(sqlCounter)}}, "d")
	require.NoError(t, err)
	st := storetest.OpenWith(t, storetest.URL(t), ps...)
	conn, err := st.Pool().Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	columns := func(table string) []string {
		rows, err := conn.Query(ctx, `SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || coalesce(co.collname, '')
			FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
			WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, table)
		require.NoError(t, err)
		defer rows.Close()
		var out []string
		for rows.Next() {
			var c string
			require.NoError(t, rows.Scan(&c))
			out = append(out, c)
		}
		require.NoError(t, rows.Err())
		return out
	}
	require.Equal(t, columns("workflow_events"), columns("pg_temp.new_events"))
	filenodes := func() []uint32 {
		var a, b uint32
		require.NoError(t, conn.QueryRow(ctx, `SELECT pg_relation_filenode('pg_temp.new_events'), pg_relation_filenode('pg_temp.forgotten_runs')`).Scan(&a, &b))
		return []uint32{a, b}
	}
	before := filenodes()
	for range 3 {
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `INSERT INTO new_events SELECT * FROM workflow_events; INSERT INTO forgotten_runs VALUES ('r')`)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
	}
	require.Equal(t, before, filenodes(), "emptied in place at commit")
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM new_events) + (SELECT count(*) FROM forgotten_runs)`).Scan(&n))
	require.Zero(t, n, "emptied at commit")
}
