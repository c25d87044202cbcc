package store

import (
	"encoding/binary"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"
)

// The batch statements pass their rows as arrays, one per column
// (unnest). pgx encodes a []string or []int64 element by element through
// an interface (an allocation each), and a []pgtype.Timestamptz through
// reflection. registerArrayCodecs puts, on one connection, codecs before
// pgx's own for the array types those statements use, which write the
// binary array format straight from the slice; any other value goes to
// pgx's codec as before. TestArrayCodecsWriteWhatPgxWrites checks that
// the bytes are pgx's.
func registerArrayCodecs(m *pgtype.Map) {
	for _, a := range []struct {
		array, elem uint32
	}{
		{pgtype.TextArrayOID, pgtype.TextOID},
		{pgtype.ByteaArrayOID, pgtype.ByteaOID},
		{pgtype.Int4ArrayOID, pgtype.Int4OID},
		{pgtype.Int8ArrayOID, pgtype.Int8OID},
		{pgtype.BoolArrayOID, pgtype.BoolOID},
		{pgtype.TimestamptzArrayOID, pgtype.TimestamptzOID},
	} {
		t, ok := m.TypeForOID(a.array)
		if !ok {
			continue
		}
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: &sliceArrayCodec{Codec: t.Codec, elem: a.elem}})
	}
}

// sliceArrayCodec is pgx's codec for an array type, with a direct binary
// encoder for the slice type of its element.
type sliceArrayCodec struct {
	pgtype.Codec
	elem uint32
}

func (c *sliceArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []string:
			if c.elem == pgtype.TextOID {
				return encodeStrings{}
			}
		case [][]byte:
			if c.elem == pgtype.ByteaOID {
				return encodeBytes{}
			}
		case []int32:
			if c.elem == pgtype.Int4OID {
				return encodeInt32s{}
			}
		case []int64:
			if c.elem == pgtype.Int8OID {
				return encodeInt64s{}
			}
		case []bool:
			if c.elem == pgtype.BoolOID {
				return encodeBools{}
			}
		case []pgtype.Timestamptz:
			if c.elem == pgtype.TimestamptzOID {
				return encodeTimestamptzs{fallback: c.Codec.PlanEncode(m, oid, format, pgtype.FlatArray[pgtype.Timestamptz](nil))}
			}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// appendArrayHeader starts a one-dimensional array of n elements in the
// binary format: one dimension, whether it has NULLs, the element type,
// and the dimension's length and lower bound (as pgx writes it, also for
// an empty array).
func appendArrayHeader(buf []byte, n int, hasNulls bool, elem uint32) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 1)
	nulls := uint32(0)
	if hasNulls {
		nulls = 1
	}
	buf = binary.BigEndian.AppendUint32(buf, nulls)
	buf = binary.BigEndian.AppendUint32(buf, elem)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	return binary.BigEndian.AppendUint32(buf, 1)
}

const nullLength = 0xffffffff // -1: a NULL element

type encodeStrings struct{}

func (encodeStrings) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]string)
	if v == nil {
		return nil, nil
	}
	buf = appendArrayHeader(buf, len(v), false, pgtype.TextOID)
	for _, s := range v {
		buf = appendText(buf, s)
	}
	return buf, nil
}

type encodeBytes struct{}

func (encodeBytes) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([][]byte)
	if v == nil {
		return nil, nil
	}
	hasNulls := false
	for _, b := range v {
		hasNulls = hasNulls || b == nil
	}
	buf = appendArrayHeader(buf, len(v), hasNulls, pgtype.ByteaOID)
	for _, b := range v {
		if b == nil {
			buf = binary.BigEndian.AppendUint32(buf, nullLength)
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
		buf = append(buf, b...)
	}
	return buf, nil
}

type encodeInt32s struct{}

func (encodeInt32s) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]int32)
	if v == nil {
		return nil, nil
	}
	buf = appendArrayHeader(buf, len(v), false, pgtype.Int4OID)
	for _, n := range v {
		buf = binary.BigEndian.AppendUint32(buf, 4)
		buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	}
	return buf, nil
}

type encodeInt64s struct{}

func (encodeInt64s) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]int64)
	if v == nil {
		return nil, nil
	}
	buf = appendArrayHeader(buf, len(v), false, pgtype.Int8OID)
	for _, n := range v {
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	return buf, nil
}

type encodeBools struct{}

func (encodeBools) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]bool)
	if v == nil {
		return nil, nil
	}
	buf = appendArrayHeader(buf, len(v), false, pgtype.BoolOID)
	for _, b := range v {
		buf = binary.BigEndian.AppendUint32(buf, 1)
		if b {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
	}
	return buf, nil
}

// encodeTimestamptzs writes finite timestamps; an array with an infinite
// one (never from a decoded event) goes to pgx's plan.
type encodeTimestamptzs struct {
	fallback pgtype.EncodePlan
}

func (e encodeTimestamptzs) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([]pgtype.Timestamptz)
	if v == nil {
		return nil, nil
	}
	hasNulls := false
	for _, t := range v {
		if t.Valid && t.InfinityModifier != pgtype.Finite {
			if e.fallback == nil {
				return nil, fmt.Errorf("encode timestamptz array: no plan for an infinite value")
			}
			return e.fallback.Encode(pgtype.FlatArray[pgtype.Timestamptz](v), buf)
		}
		hasNulls = hasNulls || !t.Valid
	}
	buf = appendArrayHeader(buf, len(v), hasNulls, pgtype.TimestamptzOID)
	for _, t := range v {
		if !t.Valid {
			buf = binary.BigEndian.AppendUint32(buf, nullLength)
			continue
		}
		buf = appendTimestamptz(buf, t.Time)
	}
	return buf, nil
}
