package model

import (
	"bytes"
	"fmt"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// This file holds the strict, single-pass JSON scanner behind Decode. It
// validates the whole value per RFC 8259 (plus: valid UTF-8 everywhere, no
// duplicate keys in any object), notes the first thing PostgreSQL's jsonb
// cannot store, and captures the raw spans of the top-level members Decode
// needs. It never recurses: nesting is tracked on an explicit stack, so a
// value nested 500,000 levels deep costs memory, not goroutine stack.

// MaxDepth is the deepest nesting of objects and arrays that Decode accepts
// (the top-level object is level 1). A deeper value is unstorable.
// PostgreSQL 15 with the default max_stack_depth (2MB) parses about 10,000
// levels into jsonb and fails with "stack depth limit exceeded" by 20,000;
// 512 keeps a wide margin, also for later jsonb processing in SQL.
const MaxDepth = 512

// Limits of PostgreSQL's numeric type, which jsonb stores every number as
// (src/backend/utils/adt/numeric.c, verified against PostgreSQL 15):
const (
	// set_var_from_str rejects an exponent e with |e| >= INT_MAX/2, even
	// for a zero mantissa ("0e1073741823").
	pgMaxExponent = 1<<30 - 1
	// The display scale (digits after the decimal point, as written, minus
	// the exponent) is stored in 14 bits: "1e-16383" fits, "1e-16384" and
	// "10e-16384" and "0e-16384" overflow.
	pgMaxDscale = 0x3FFF
	// The weight (in base-10000 digits) of the leading non-zero digit is an
	// int16, so its decimal exponent is at most 4*32768-1: "9.9e131071"
	// fits, "1e131072" overflows.
	pgMaxLeadExp = 131071
)

// dupLinearMax is how many keys an object may have before duplicate
// detection switches from a linear search to a hash set.
const dupLinearMax = 16

type jsonKind uint8

const (
	kindNone jsonKind = iota
	kindObject
	kindArray
	kindString
	kindNumber
	kindBool
	kindNull
)

// describe names the JSON type, for error texts.
func (k jsonKind) describe() string {
	switch k {
	case kindObject:
		return "an object"
	case kindArray:
		return "an array"
	case kindString:
		return "a string"
	case kindNumber:
		return "a number"
	case kindBool:
		return "a boolean"
	case kindNull:
		return "null"
	}
	return "nothing"
}

// Top-level members Decode reads, in the order their errors are reported.
const (
	fEventID = iota
	fEventType
	fSource
	fWorkflowID
	fWorkflowRunID
	fTimestamp
	fAttempt
	fStepID
	fData
	fSchemaVersion
	eventFieldCount
)

var eventFieldNames = [eventFieldCount]string{
	fEventID:       "event_id",
	fEventType:     "event_type",
	fSource:        "source",
	fWorkflowID:    "workflow_id",
	fWorkflowRunID: "workflow_run_id",
	fTimestamp:     "timestamp",
	fAttempt:       "attempt",
	fStepID:        "step_id",
	fData:          "data",
	fSchemaVersion: "schema_version",
}

// eventFieldIndex returns the index of a known top-level member name (unescaped),
// or -1.
func eventFieldIndex(key []byte) int {
	switch string(key) {
	case "event_id":
		return fEventID
	case "event_type":
		return fEventType
	case "source":
		return fSource
	case "workflow_id":
		return fWorkflowID
	case "workflow_run_id":
		return fWorkflowRunID
	case "timestamp":
		return fTimestamp
	case "attempt":
		return fAttempt
	case "step_id":
		return fStepID
	case "data":
		return fData
	case "schema_version":
		return fSchemaVersion
	}
	return -1
}

// jsonSpan is the raw text of one value: data[start:end], quotes included for
// strings.
type jsonSpan struct {
	start, end int
	kind       jsonKind
	esc        bool // a string with at least one backslash escape
	set        bool
}

// body returns a string's text between the quotes, or the whole literal.
func (sp jsonSpan) body(data []byte) []byte {
	if sp.kind == kindString {
		return data[sp.start+1 : sp.end-1]
	}
	return data[sp.start:sp.end]
}

// scanFrame is one open object or array.
type scanFrame struct {
	keyStart int32 // index in jsonScanner.keys of this object's first key
	set      int32 // index in jsonScanner.sets of its key set, -1 while linear
	obj      bool
}

type jsonScanner struct {
	data []byte
	pos  int

	stack []scanFrame
	// keys holds the unescaped keys of the open objects that are still
	// checked linearly. A key aliases data, or arena when it had escapes.
	keys  [][]byte
	arena []byte
	// keysMax is the longest keys has been, for clearing it.
	keysMax int
	// sets is a stack of the key sets of open objects with many keys;
	// nsets of them are in use, the rest are cleared for reuse.
	sets  []map[string]struct{}
	nsets int
	// bigSet says a key set grew large; the pool then drops the sets,
	// since clearing a map does not shrink it.
	bigSet bool

	lastKind jsonKind
	lastEsc  bool

	// unstorable is the first thing found that jsonb cannot store.
	unstorable *DecodeError

	// Capture of top-level members: field is the member being scanned
	// (-1 for none or an unknown one), valStart where its value began.
	field    int
	valStart int
	fields   [eventFieldCount]jsonSpan
	// Capture of data.error, a member of the data object (depth 2).
	inError    bool
	errorStart int
	dataError  jsonSpan
}

// Scanners are reused: their stacks, key lists and key sets then cost no
// allocation in the steady state.
var scannerPool = sync.Pool{New: func() any {
	return &jsonScanner{stack: make([]scanFrame, 0, 32), keys: make([][]byte, 0, 64)}
}}

// Buffers that grew beyond these (for a pathological value) are dropped
// rather than kept in the pool.
const (
	poolMaxStack = 1024
	poolMaxKeys  = 1024
	poolMaxArena = 64 << 10
	poolMaxSets  = 8
	// poolMaxSetKeys is the most keys a pooled key set may have held.
	poolMaxSetKeys = 4096
)

func getScanner(data []byte) *jsonScanner {
	s := scannerPool.Get().(*jsonScanner)
	s.data = data
	s.field = -1
	return s
}

// putScanner resets s, dropping every reference to the value, and pools it.
func putScanner(s *jsonScanner) {
	clear(s.keys[:s.keysMax])
	for _, m := range s.sets[:s.nsets] {
		clear(m)
	}
	stack, keys, arena, sets := s.stack[:0], s.keys[:0], s.arena[:0], s.sets
	if cap(stack) > poolMaxStack {
		stack = make([]scanFrame, 0, 32)
	}
	if cap(keys) > poolMaxKeys {
		keys = make([][]byte, 0, 64)
	}
	if cap(arena) > poolMaxArena {
		arena = nil
	}
	if s.bigSet {
		sets = nil
	} else if len(sets) > poolMaxSets {
		sets = sets[:poolMaxSets:poolMaxSets]
	}
	*s = jsonScanner{stack: stack, keys: keys, arena: arena, sets: sets}
	scannerPool.Put(s)
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// plainStringByte[c] is true for the bytes that may appear as-is in a JSON
// string and need no further look: printable ASCII except '"' and '\\'.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// fieldName names the known top-level member being scanned, for errors.
func (s *jsonScanner) fieldName() string {
	if s.field >= 0 {
		return eventFieldNames[s.field]
	}
	return ""
}

func (s *jsonScanner) syntaxError(pos int, context string) *DecodeError {
	var detail string
	switch {
	case len(s.data) == 0:
		return &DecodeError{Reason: ReasonInvalidJSON, Detail: "empty value"}
	case pos >= len(s.data):
		detail = fmt.Sprintf("unexpected end of input at byte %d", pos)
	case pos == 0 && bytes.HasPrefix(s.data, utf8BOM):
		return &DecodeError{Reason: ReasonInvalidJSON, Detail: "byte order mark at byte 0 is not allowed"}
	default:
		detail = describeByte(s.data[pos], pos)
	}
	if context != "" {
		detail += " (" + context + ")"
	}
	return &DecodeError{Reason: ReasonInvalidJSON, Field: s.fieldName(), Detail: detail}
}

func describeByte(c byte, pos int) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("invalid character %q at byte %d", rune(c), pos)
	}
	return fmt.Sprintf("invalid byte 0x%02x at byte %d", c, pos)
}

func (s *jsonScanner) stringError(format string, args ...any) *DecodeError {
	return &DecodeError{Reason: ReasonInvalidJSON, Field: s.fieldName(), Detail: fmt.Sprintf(format, args...)}
}

func (s *jsonScanner) markUnstorable(format string, args ...any) {
	if s.unstorable == nil {
		s.unstorable = &DecodeError{Reason: ReasonUnstorable, Field: s.fieldName(), Detail: fmt.Sprintf(format, args...)}
	}
}

func (s *jsonScanner) skipWS() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// scan validates the whole value. It returns the first syntax error;
// s.unstorable holds the first storability problem.
func (s *jsonScanner) scan() *DecodeError {
	d := s.data
	s.field = -1
	s.skipWS()
	for {
		// A value starts at s.pos, whitespace skipped.
		if s.pos >= len(d) {
			return s.syntaxError(s.pos, "looking for beginning of value")
		}
		switch c := d[s.pos]; c {
		case '{':
			s.push(true)
			s.pos++
			s.skipWS()
			if s.pos < len(d) && d[s.pos] == '}' {
				s.pos++
				s.pop()
				s.lastKind = kindObject
				break
			}
			if err := s.member(); err != nil {
				return err
			}
			continue
		case '[':
			s.push(false)
			s.pos++
			s.skipWS()
			if s.pos < len(d) && d[s.pos] == ']' {
				s.pos++
				s.pop()
				s.lastKind = kindArray
				break
			}
			continue
		case '"':
			if err := s.scanString(); err != nil {
				return err
			}
			s.lastKind = kindString
		case 't':
			if err := s.literal("true"); err != nil {
				return err
			}
			s.lastKind = kindBool
		case 'f':
			if err := s.literal("false"); err != nil {
				return err
			}
			s.lastKind = kindBool
		case 'n':
			if err := s.literal("null"); err != nil {
				return err
			}
			s.lastKind = kindNull
		default:
			if c != '-' && (c < '0' || c > '9') {
				return s.syntaxError(s.pos, "looking for beginning of value")
			}
			if err := s.number(); err != nil {
				return err
			}
			s.lastKind = kindNumber
		}
		// A value ended at s.pos: close containers until a ',' leads to
		// the next value.
		for {
			depth := len(s.stack)
			if depth <= 2 {
				s.valueEnded(depth)
			}
			s.skipWS()
			if depth == 0 {
				if s.pos < len(d) {
					return s.syntaxError(s.pos, "after top-level value")
				}
				return nil
			}
			if s.pos >= len(d) {
				return s.syntaxError(s.pos, "")
			}
			c := d[s.pos]
			top := &s.stack[depth-1]
			if c == ',' {
				s.pos++
				s.skipWS()
				if top.obj {
					if err := s.member(); err != nil {
						return err
					}
				}
				break
			}
			if top.obj {
				if c != '}' {
					return s.syntaxError(s.pos, "expected ',' or '}' after object member")
				}
				s.lastKind = kindObject
			} else {
				if c != ']' {
					return s.syntaxError(s.pos, "expected ',' or ']' after array element")
				}
				s.lastKind = kindArray
			}
			s.pos++
			s.pop()
		}
	}
}

// valueEnded records the jsonSpan of a top-level member's value (depth 1) or of
// data.error (depth 2) that just ended at s.pos.
func (s *jsonScanner) valueEnded(depth int) {
	switch {
	case depth == 1 && s.field >= 0:
		s.fields[s.field] = jsonSpan{start: s.valStart, end: s.pos, kind: s.lastKind, esc: s.lastKind == kindString && s.lastEsc, set: true}
		s.field = -1
	case depth == 2 && s.inError:
		s.dataError = jsonSpan{start: s.errorStart, end: s.pos, kind: s.lastKind, esc: s.lastKind == kindString && s.lastEsc, set: true}
		s.inError = false
	}
}

func (s *jsonScanner) push(obj bool) {
	s.stack = append(s.stack, scanFrame{keyStart: int32(len(s.keys)), set: -1, obj: obj})
	if len(s.stack) > MaxDepth {
		s.markUnstorable("nesting deeper than %d levels at byte %d", MaxDepth, s.pos)
	}
}

func (s *jsonScanner) pop() {
	f := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	if f.obj {
		s.keys = s.keys[:f.keyStart]
		if f.set >= 0 {
			clear(s.sets[f.set])
			s.nsets--
		}
	}
}

// member scans `"key" :` at s.pos and skips the whitespace before the value.
func (s *jsonScanner) member() *DecodeError {
	d := s.data
	if s.pos >= len(d) || d[s.pos] != '"' {
		return s.syntaxError(s.pos, "expected '\"' to begin an object key")
	}
	keyPos := s.pos
	if err := s.scanString(); err != nil {
		return err
	}
	key := d[keyPos+1 : s.pos-1]
	if s.lastEsc {
		start := len(s.arena)
		s.arena = appendUnescaped(s.arena, key)
		key = s.arena[start:len(s.arena):len(s.arena)]
	}
	depth := len(s.stack)
	if s.isDuplicate(&s.stack[depth-1], key) {
		field := s.fieldName()
		if depth == 1 {
			if i := eventFieldIndex(key); i >= 0 {
				field = eventFieldNames[i]
			}
		}
		return &DecodeError{Reason: ReasonInvalidJSON, Field: field,
			Detail: fmt.Sprintf("duplicate key %s at byte %d", quoteTrunc(key), keyPos)}
	}
	switch {
	case depth == 1:
		s.field = eventFieldIndex(key)
	case depth == 2 && s.field == fData:
		s.inError = string(key) == "error"
	}
	s.skipWS()
	if s.pos >= len(d) || d[s.pos] != ':' {
		return s.syntaxError(s.pos, "expected ':' after object key")
	}
	s.pos++
	s.skipWS()
	if depth == 1 {
		s.valStart = s.pos
	} else if depth == 2 && s.inError {
		s.errorStart = s.pos
	}
	return nil
}

// isDuplicate reports whether the object f already has key, and adds it.
func (s *jsonScanner) isDuplicate(f *scanFrame, key []byte) bool {
	if f.set >= 0 {
		m := s.sets[f.set]
		// The map lives only while this object is open, and the bytes
		// behind key (the value, or the append-only arena) never change
		// during Decode, so an aliasing string is safe here.
		k := unsafe.String(unsafe.SliceData(key), len(key))
		if _, ok := m[k]; ok {
			return true
		}
		m[k] = struct{}{}
		if len(m) > poolMaxSetKeys {
			s.bigSet = true
		}
		return false
	}
	prev := s.keys[f.keyStart:]
	for _, p := range prev {
		if string(p) == string(key) {
			return true
		}
	}
	s.keys = append(s.keys, key)
	s.keysMax = max(s.keysMax, len(s.keys))
	if len(prev) < dupLinearMax {
		return false
	}
	// Switch this object to a hash set.
	if s.nsets == len(s.sets) {
		s.sets = append(s.sets, make(map[string]struct{}, 4*dupLinearMax))
	}
	f.set = int32(s.nsets)
	s.nsets++
	m := s.sets[f.set]
	for _, p := range s.keys[f.keyStart:] {
		m[unsafe.String(unsafe.SliceData(p), len(p))] = struct{}{}
	}
	s.keys = s.keys[:f.keyStart]
	return false
}

func (s *jsonScanner) literal(lit string) *DecodeError {
	d := s.data
	for k := 0; k < len(lit); k++ {
		if s.pos+k >= len(d) || d[s.pos+k] != lit[k] {
			return s.syntaxError(s.pos+k, "in literal "+lit)
		}
	}
	s.pos += len(lit)
	return nil
}

func isDecDigit(c byte) bool { return c >= '0' && c <= '9' }

// number scans a number per RFC 8259 and checks that PostgreSQL's numeric
// can hold it.
func (s *jsonScanner) number() *DecodeError {
	d := s.data
	start := s.pos
	i := s.pos
	if d[i] == '-' {
		i++
	}
	var (
		nonzero bool
		lead    int64 // decimal exponent of the leading non-zero digit, before the exponent part
	)
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		j := i
		for i < len(d) && isDecDigit(d[i]) {
			i++
		}
		nonzero = true
		lead = int64(i - j - 1)
	default:
		return s.syntaxError(i, "in number, expected digit")
	}
	frac := 0
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && isDecDigit(d[i]) {
			if !nonzero && d[i] != '0' {
				nonzero = true
				lead = -int64(i - j + 1)
			}
			i++
		}
		frac = i - j
		if frac == 0 {
			return s.syntaxError(i, "in number, expected digit after decimal point")
		}
	}
	var exp int64
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		neg := false
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			neg = d[i] == '-'
			i++
		}
		j := i
		for i < len(d) && isDecDigit(d[i]) {
			if exp < 1<<40 { // saturate: already far beyond any limit
				exp = exp*10 + int64(d[i]-'0')
			}
			i++
		}
		if i == j {
			return s.syntaxError(i, "in number, expected digit in exponent")
		}
		if neg {
			exp = -exp
		}
	}
	s.pos = i
	if s.unstorable == nil &&
		(exp >= pgMaxExponent || exp <= -pgMaxExponent ||
			int64(frac)-exp > pgMaxDscale ||
			nonzero && lead+exp > pgMaxLeadExp) {
		s.markUnstorable("number at byte %d is outside the range of PostgreSQL numeric", start)
	}
	return nil
}

// hex4 decodes the four hex digits at d[i:i+4].
func hex4(d []byte, i int) (rune, bool) {
	if i+4 > len(d) {
		return 0, false
	}
	var r rune
	for _, c := range d[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func isHighSurrogate(r rune) bool { return r >= 0xD800 && r < 0xDC00 }
func isLowSurrogate(r rune) bool  { return r >= 0xDC00 && r < 0xE000 }

// scanString scans the string starting at s.pos (a '"') and sets s.lastEsc.
func (s *jsonScanner) scanString() *DecodeError {
	d := s.data
	i := s.pos + 1
	esc := false
	for {
		for i < len(d) && plainStringByte[d[i]] {
			i++
		}
		if i >= len(d) {
			return s.syntaxError(i, "in string")
		}
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			s.lastEsc = esc
			return nil
		case c == '\\':
			esc = true
			if i+1 >= len(d) {
				return s.syntaxError(i+1, "in string escape")
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(d, i+2)
				if !ok {
					return s.stringError("invalid \\u escape in string at byte %d", i)
				}
				at := i
				i += 6
				switch {
				case r == 0:
					s.markUnstorable("\\u0000 escape at byte %d: PostgreSQL jsonb cannot store NUL", at)
				case isHighSurrogate(r):
					if i+1 < len(d) && d[i] == '\\' && d[i+1] == 'u' {
						if r2, ok := hex4(d, i+2); ok && isLowSurrogate(r2) {
							i += 6
							break
						}
					}
					s.markUnstorable("unpaired UTF-16 surrogate escape \\u%04x at byte %d", r, at)
				case isLowSurrogate(r):
					s.markUnstorable("unpaired UTF-16 surrogate escape \\u%04x at byte %d", r, at)
				}
			default:
				if e := d[i+1]; e >= 0x20 && e < 0x7f {
					return s.stringError("invalid escape '\\%c' in string at byte %d", e, i)
				}
				return s.stringError("invalid escape in string at byte %d", i)
			}
		case c < 0x20:
			return s.stringError("invalid control character 0x%02x in string at byte %d", c, i)
		default: // c >= 0x80
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size <= 1 {
				return s.stringError("invalid UTF-8 in string at byte %d", i)
			}
			i += size
		}
	}
}

// appendUnescaped appends the text of a scanned string body (between the
// quotes) to dst. A surrogate pair becomes one code point; an unpaired
// surrogate (unstorable, but it may still take part in duplicate-key
// detection) becomes its 3-byte generalized UTF-8 form, so that equal
// escapes compare equal whatever their hex case.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\\')
		if j < 0 {
			return append(dst, raw[i:]...)
		}
		dst = append(dst, raw[i:i+j]...)
		i += j
		switch e := raw[i+1]; e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(raw, i+2)
			i += 6
			if isHighSurrogate(r) && i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				if r2, ok := hex4(raw, i+2); ok && isLowSurrogate(r2) {
					r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
					i += 6
				}
			}
			if isHighSurrogate(r) || isLowSurrogate(r) {
				dst = append(dst, byte(0xE0|r>>12), byte(0x80|(r>>6)&0x3F), byte(0x80|r&0x3F))
			} else {
				dst = utf8.AppendRune(dst, r)
			}
			continue
		default: // '"', '\\', '/'
			dst = append(dst, e)
		}
		i += 2
	}
	return dst
}

// quoteTrunc quotes b for an error text, cut to a readable length.
func quoteTrunc(b []byte) string {
	const limit = 64
	if len(b) <= limit {
		return fmt.Sprintf("%q", b)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return fmt.Sprintf("%q...", b[:cut])
}
