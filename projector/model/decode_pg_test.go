package model_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector-run/projector/projector/model"
	"github.com/projector-run/projector/store/storetest"
)

// testConn connects to a fresh database of the test server, closed with
// the test.
func testConn(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), storetest.URL(t))
	require.NoError(t, err, "PostgreSQL is needed for this test")
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// TestUnstorableAgreesWithPostgres checks Decode's storability verdict
// against PostgreSQL itself: for each payload (a valid event), Decode must
// say unstorable exactly when `SELECT $1::text::jsonb` fails. It runs on
// a database of its own on the test server (storetest) and fails without
// it.
func TestUnstorableAgreesWithPostgres(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := testConn(t)
	var version string
	require.NoError(t, conn.QueryRow(ctx, "show server_version_num").Scan(&version))
	t.Logf("PostgreSQL server_version_num %s", version)
	var encoding string
	require.NoError(t, conn.QueryRow(ctx, "show server_encoding").Scan(&encoding))
	require.Equal(t, "UTF8", encoding, "the store needs a UTF8 database")

	data := func(v string) string { return model.DecEvent("data", `{"v":`+v+`}`) }
	payloads := []string{
		// Strings and escapes.
		data(`"\u0000"`), data(`"a\u0000b"`), model.DecEvent("x\\u0000", "1"), data(`{"\u0000":1}`),
		data(`"\ud800"`), data(`"\udc00"`), data(`"\uDBFF"`), data(`"\ud800\u0041"`), data(`"\udc00\ud800"`),
		data(`"\ud800\ud800"`), data(`"\ud800x"`), data(`"\ud83d\ude00"`), data(`"\uD83D\uDE00"`), data(`"\uDBFF\uDFFF"`),
		data(`"\ud800\ud800\udc00"`), data(`{"\ud800":1}`), data(`"\\u0000"`), data(`"\ufffe\uffff"`),
		data(`"\u0001\u001f\u007f\u0080\u00e9"`), data(`"é€😀"`), data(`"\"\\\/\b\f\n\r\t"`),
		// Numbers.
		data("0"), data("-0"), data("-0.0"), data("1E+2"), data("1e-400"), data("1e400"), data(model.DecDigits(1000)),
		data("-" + model.DecDigits(1000) + "." + strings.Repeat("9", 1000)),
		data("1e131071"), data("9.99e131071"), data("99999e131067"), data("-1e131071"), data("1e131072"), data("10e131071"),
		data("1e1000000"), data("-1e1000000"), data("1e-1000000"),
		data("1e-16383"), data("1e-16384"), data("10e-16384"), data("0.5e-16382"), data("0.50e-16382"), data("1.5e-16383"),
		data("0e-16383"), data("0e-16384"), data("0.0e-16383"), data("0e1000000"),
		data("0e1073741822"), data("0e1073741823"), data("0e-1073741822"), data("1e1073741823"), data("0e99999999999999999999"),
		data("1e+0000000000000000000000005"), data("1e-0000000000000000000000005"),
		data(model.DecDigits(131072)), data(model.DecDigits(131073)), data("0." + strings.Repeat("0", 16382) + "1"),
		data("0." + strings.Repeat("0", 16383) + "1"), data("1." + strings.Repeat("0", 16383)), data("1." + strings.Repeat("0", 16384)),
		data(model.DecDigits(131072) + "." + strings.Repeat("1", 16383)),
		model.DecEvent("attempt", "1e1000000"), model.DecEvent("schema_version", "1e-20000"),
		// Nesting: model.MaxDepth is accepted by both, and PostgreSQL refuses far
		// deeper values too. (Between model.MaxDepth and PostgreSQL's own limit,
		// about 10,000 to 20,000 with max_stack_depth=2MB, Decode refuses
		// on purpose; see TestPostgresNestingMargin.)
		model.DecEvent("extra", model.DecNest(model.MaxDepth-1, "")), model.DecEvent("extra", model.DecNest(model.MaxDepth-1, "1")),
		model.DecEvent("data", strings.Repeat(`{"a":`, model.MaxDepth-1)+"1"+strings.Repeat("}", model.MaxDepth-1)),
		model.DecEvent("extra", model.DecNest(200000, "")),
		// Size.
		string(model.DecPadTo(model.MaxValueBytes)),
		model.DecEvent("data", `{"a":[`+strings.Repeat("1e131071,", 50000)+`1]}`),
	}
	stored, refused := 0, 0
	for i, p := range payloads {
		_, derr := model.Decode([]byte(p))
		var de *model.DecodeError
		if derr != nil {
			require.ErrorAs(t, derr, &de)
			require.Equal(t, model.ReasonUnstorable, de.Reason, "payload %d: only unstorable is expected: %v", i, derr)
		}
		var typ string
		pgErr := conn.QueryRow(ctx, "SELECT jsonb_typeof($1::text::jsonb)", p).Scan(&typ)
		if pgErr != nil && ctx.Err() != nil {
			t.Fatalf("payload %d: %v", i, pgErr)
		}
		show := p
		if len(show) > 200 {
			show = fmt.Sprintf("%s... (%d bytes)", show[:200], len(p))
		}
		require.Equal(t, pgErr == nil, derr == nil,
			"payload %d %s\nDecode: %v\nPostgreSQL: %v", i, show, derr, pgErr)
		if pgErr == nil {
			stored++
		} else {
			refused++
		}
	}
	t.Logf("%d payloads stored, %d refused, Decode agreed on all", stored, refused)
	require.Greater(t, stored, 20)
	require.Greater(t, refused, 20)
}

// TestPostgresNestingMargin shows that MaxDepth is well within what
// PostgreSQL stores: four times as deep still works there.
func TestPostgresNestingMargin(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := testConn(t)
	deep := model.DecEvent("data", strings.Repeat(`{"a":[`, 2*model.MaxDepth)+strings.Repeat("]}", 2*model.MaxDepth))
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT jsonb_array_length(($1::text::jsonb) #> '{data,a}')", deep).Scan(&n))
	require.Equal(t, 1, n)
	_, err := model.Decode([]byte(deep))
	var de *model.DecodeError
	require.ErrorAs(t, err, &de)
	require.Equal(t, model.ReasonUnstorable, de.Reason)
}
