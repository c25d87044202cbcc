package store

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestArrayCodecsWriteWhatPgxWrites: for every slice type the batch
// statements pass, the direct encoders write byte for byte what pgx's own
// array codec writes (through its interfaces and reflection), for random
// slices and for the edges: nil (SQL NULL), empty, NULL elements, empty
// strings, extreme numbers, timestamps before and after PostgreSQL's 2000
// epoch and far from it, and an infinite timestamp (left to pgx). It also
// checks that the direct plans are the ones chosen.
func TestArrayCodecsWriteWhatPgxWrites(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	str := func() string { return strings.Repeat("é", rng.IntN(4)) + string(rune('a'+rng.IntN(26))) }
	ts := func() pgtype.Timestamptz {
		if rng.IntN(5) == 0 {
			return pgtype.Timestamptz{}
		}
		sec := rng.Int64N(253402300799+62135596800) - 62135596800 // years 1 to 9999
		return pgtype.Timestamptz{Time: time.Unix(sec, int64(rng.IntN(1_000_000))*1000).UTC(), Valid: true}
	}
	cases := []struct {
		oid   uint32
		value any
	}{
		{pgtype.TextArrayOID, []string(nil)},
		{pgtype.TextArrayOID, []string{}},
		{pgtype.TextArrayOID, []string{"", "a", "☃ snow", strings.Repeat("x", 1000)}},
		{pgtype.ByteaArrayOID, [][]byte{nil, {}, {0, 0xff}, []byte("k")}},
		{pgtype.ByteaArrayOID, [][]byte{[]byte("no nulls")}},
		{pgtype.Int4ArrayOID, []int32{0, -1, 1 << 30, -1 << 31}},
		{pgtype.Int8ArrayOID, []int64{0, -1, 1 << 62, -1 << 63}},
		{pgtype.BoolArrayOID, []bool{true, false}},
		{pgtype.TimestamptzArrayOID, []pgtype.Timestamptz{
			{}, {Time: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Valid: true},
			{Time: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), Valid: true},
			{Time: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), Valid: true},
			{Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", 14*3600)), Valid: true},
		}},
		{pgtype.TimestamptzArrayOID, []pgtype.Timestamptz{{Valid: true, InfinityModifier: pgtype.Infinity}, {}}},
	}
	for range 50 {
		n := rng.IntN(40)
		ss, bs, i4, i8, bo, tt := make([]string, n), make([][]byte, n), make([]int32, n), make([]int64, n), make([]bool, n), make([]pgtype.Timestamptz, n)
		for i := range n {
			ss[i], i4[i], i8[i], bo[i], tt[i] = str(), rng.Int32(), rng.Int64(), rng.IntN(2) == 0, ts()
			if rng.IntN(4) > 0 {
				bs[i] = []byte(str())
			}
		}
		cases = append(cases, []struct {
			oid   uint32
			value any
		}{{pgtype.TextArrayOID, ss}, {pgtype.ByteaArrayOID, bs}, {pgtype.Int4ArrayOID, i4}, {pgtype.Int8ArrayOID, i8},
			{pgtype.BoolArrayOID, bo}, {pgtype.TimestamptzArrayOID, tt}}...)
	}

	ours := pgtype.NewMap()
	registerArrayCodecs(ours)
	theirs := pgtype.NewMap()
	for _, tc := range cases {
		plan := ours.PlanEncode(tc.oid, pgtype.BinaryFormatCode, tc.value)
		require.NotNil(t, plan)
		switch plan.(type) {
		case encodeStrings, encodeBytes, encodeInt32s, encodeInt64s, encodeBools, encodeTimestamptzs:
		default:
			t.Fatalf("%T: pgx's plan %T was chosen, not the direct one", tc.value, plan)
		}
		got, err := plan.Encode(tc.value, []byte("prefix"))
		require.NoError(t, err)
		want, err := theirs.Encode(tc.oid, pgtype.BinaryFormatCode, tc.value, []byte("prefix"))
		require.NoError(t, err)
		require.Equal(t, want, got, "%T %v", tc.value, tc.value)
	}
	// Other values still go to pgx's codec.
	require.NotNil(t, ours.PlanEncode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, []*string{nil}))
}
