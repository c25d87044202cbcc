package store

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// A projection in SQL (contract 7.2) is a file NAME.sql of three sections,
// each one or more statements, opened by a marker line:
//
//	-- +projector Setup
//	-- +projector Apply
//	-- +projector Forget
//
// Before the first marker only comments and blank lines may stand.

// sqlMarker opens a section.
const sqlMarker = "-- +projector "

// sqlSections are the sections a file must have, in the order they run.
var sqlSections = []string{"Setup", "Apply", "Forget"}

// sqlSection is one section of a file: its text as sent to PostgreSQL,
// and where it starts in the file.
type sqlSection struct {
	name string
	text string
	// line is the file's line number (1-based) of the text's first line;
	// last, of its last line with code.
	line, last int
	// statements are the text's statements.
	statements []statement
}

// SQLFileError is a projection file that does not parse, or whose SQL
// PostgreSQL refused: it names the file, the section and, when known, the
// file's line.
type SQLFileError struct {
	File    string
	Section string // "" when the file as a whole is wrong
	Line    int    // 0 when not known
	// FirstLine and LastLine are the section's lines, when Line is not
	// known.
	FirstLine, LastLine int
	Err                 error
}

func (e *SQLFileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Section != "" {
		b.WriteString(": section " + e.Section)
		if e.Line == 0 && e.FirstLine > 0 {
			fmt.Fprintf(&b, " (lines %d-%d)", e.FirstLine, e.LastLine)
		}
	}
	b.WriteString(": ")
	var pe *pgconn.PgError
	if errors.As(e.Err, &pe) {
		// PostgreSQL's own words, on one line.
		b.WriteString(strings.Join(strings.Fields(pe.Message), " "))
		if pe.Detail != "" {
			b.WriteString(" (" + strings.Join(strings.Fields(pe.Detail), " ") + ")")
		}
		b.WriteString(" (SQLSTATE " + pe.Code + ")")
	} else {
		b.WriteString(strings.ReplaceAll(e.Err.Error(), "\n", "; "))
	}
	return b.String()
}

func (e *SQLFileError) Unwrap() error { return e.Err }

// parseSQLFile splits a projection file into its sections.
func parseSQLFile(file, src string) (map[string]sqlSection, error) {
	bad := func(line int, format string, args ...any) error {
		return &SQLFileError{File: file, Line: line, Err: fmt.Errorf(format, args...)}
	}
	if !utf8.ValidString(src) {
		return nil, bad(0, "not valid UTF-8")
	}
	sections := map[string]sqlSection{}
	var cur *sqlSection
	var text strings.Builder
	closeSection := func() {
		if cur != nil {
			cur.text = text.String()
			sections[cur.name] = *cur
		}
		text.Reset()
	}
	lines := strings.SplitAfter(src, "\n")
	for i, l := range lines {
		n := i + 1
		trimmed := strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(trimmed, strings.TrimSpace(sqlMarker)); ok {
			name := strings.TrimSpace(rest)
			switch {
			case !isSection(name):
				return nil, bad(n, "unknown section marker %q: the sections are %s", trimmed, markers())
			case sections[name].name != "" || (cur != nil && cur.name == name):
				return nil, bad(n, "section %s given twice", name)
			}
			closeSection()
			cur = &sqlSection{name: name, line: n + 1}
			continue
		}
		if cur == nil {
			if trimmed != "" && !strings.HasPrefix(trimmed, "--") {
				return nil, bad(n, "SQL before the first section marker (%s)", markers())
			}
			continue
		}
		text.WriteString(l)
	}
	closeSection()
	for _, name := range sqlSections {
		s, ok := sections[name]
		if !ok {
			return nil, &SQLFileError{File: file, Err: fmt.Errorf("misses section %s (a line %q)", name, sqlMarker+name)}
		}
		stmts, err := splitStatements(s.text)
		if err != nil {
			return nil, &SQLFileError{File: file, Section: name, Line: s.line + err.line, Err: err}
		}
		s.statements = stmts
		if len(stmts) > 0 {
			lst := stmts[len(stmts)-1]
			s.last = s.line + lst.line + strings.Count(strings.TrimSpace(stripComments(lst.text)), "\n")
		}
		sections[name] = s
		if len(stmts) == 0 {
			return nil, &SQLFileError{File: file, Section: name, Line: s.line, Err: errors.New("has no SQL statement")}
		}
		for _, st := range stmts {
			if err := allowed(st.text); err != nil {
				return nil, &SQLFileError{File: file, Section: name, Line: s.line + st.line, Err: err}
			}
		}
	}
	return sections, nil
}

func isSection(name string) bool {
	for _, s := range sqlSections {
		if s == name {
			return true
		}
	}
	return false
}

func markers() string {
	var ms []string
	for _, s := range sqlSections {
		ms = append(ms, strconv.Quote(sqlMarker+s))
	}
	return strings.Join(ms, ", ")
}

// transactionControl are the statements a section may not hold: they
// would end, or escape, the transaction the projection runs in.
var transactionControl = map[string]bool{
	"BEGIN": true, "START": true, "COMMIT": true, "END": true, "ROLLBACK": true, "ABORT": true,
	"SAVEPOINT": true, "RELEASE": true, "PREPARE": true, "VACUUM": true,
}

// allowed refuses a statement that would end or escape the transaction,
// or change the session beyond it (the worker's connections are shared
// by every batch): SET is only SET LOCAL (or SET CONSTRAINTS, SET
// TRANSACTION); no RESET, no DISCARD.
func allowed(stmt string) error {
	words := strings.Fields(strings.ToUpper(stripComments(stmt)))
	if len(words) == 0 {
		return nil
	}
	kw := firstKeyword(stmt)
	switch {
	case transactionControl[kw]:
		return fmt.Errorf("%s: a projection runs inside the transaction that stores the events; it cannot end or control it", kw)
	case kw == "SET" && (len(words) < 2 || !slices.Contains([]string{"LOCAL", "CONSTRAINTS", "TRANSACTION"}, words[1])),
		kw == "RESET", kw == "DISCARD":
		return fmt.Errorf("%s: a setting would outlive the transaction, on a connection every batch shares: use SET LOCAL", kw)
	}
	return nil
}

// statement is one statement of a section: its text, the line of the
// section (0-based) the text starts on, and the line its code starts on.
type statement struct {
	text        string
	first, line int
}

// lexError is SQL the splitter cannot read to its end; line is 0-based
// within the section.
type lexError struct {
	msg  string
	line int
}

func (e *lexError) Error() string { return e.msg }

// splitStatements splits SQL at the semicolons that end statements, past
// string literals, quoted identifiers, dollar-quoted bodies and comments,
// and drops statements that are only comments and blanks. It only needs to
// find statement boundaries and first keywords; PostgreSQL parses the rest.
func splitStatements(sql string) ([]statement, *lexError) {
	var out []statement
	start, line, startLine := 0, 0, 0
	emit := func(end int) {
		if s := sql[start:end]; hasCode(s) {
			out = append(out, statement{text: s, first: startLine, line: startLine + leadingLines(s)})
		}
	}
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				i = len(sql)
			} else {
				i += j
			}
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			n, ok := commentEnd(sql[i:])
			if !ok {
				return nil, &lexError{"a /* comment is not closed", line}
			}
			line += strings.Count(sql[i:i+n], "\n")
			i += n
		case c == '\'' || c == '"':
			// E'...' strings take backslash escapes.
			escapes := c == '\'' && i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i < 2 || !isIdent(sql[i-2]))
			j := i + 1
			for {
				if j >= len(sql) {
					return nil, &lexError{fmt.Sprintf("a %c-quoted string is not closed", c), line}
				}
				if escapes && sql[j] == '\\' {
					j += 2
					continue
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c { // doubled quote
						j += 2
						continue
					}
					break
				}
				j++
			}
			line += strings.Count(sql[i:j], "\n")
			i = j + 1
		case c == '$' && (i == 0 || !isIdent(sql[i-1])):
			tag, ok := dollarTag(sql[i:])
			if !ok {
				i++
				continue
			}
			end := strings.Index(sql[i+len(tag):], tag)
			if end < 0 {
				return nil, &lexError{fmt.Sprintf("a %s-quoted body is not closed", tag), line}
			}
			j := i + len(tag) + end + len(tag)
			line += strings.Count(sql[i:j], "\n")
			i = j
		case c == ';':
			emit(i + 1)
			i++
			start, startLine = i, line
		default:
			i++
		}
	}
	emit(len(sql))
	return out, nil
}

// dollarTag returns the $tag$ that s starts with, if any.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '$':
			return s[:j+1], true
		case isIdent(c) && !(j == 1 && c >= '0' && c <= '9'):
		default:
			return "", false
		}
	}
	return "", false
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// hasCode reports whether s holds more than blanks, comments and a
// semicolon.
func hasCode(s string) bool {
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(stripComments(s)), ";")) != ""
}

// firstKeyword returns the first word of a statement, upper-cased.
func firstKeyword(s string) string {
	s = strings.TrimSpace(stripComments(s))
	end := 0
	for end < len(s) && isIdent(s[end]) {
		end++
	}
	return strings.ToUpper(s[:end])
}

// stripComments removes the comments at the start of s.
func stripComments(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		switch {
		case strings.HasPrefix(s, "--"):
			if j := strings.IndexByte(s, '\n'); j >= 0 {
				s = s[j+1:]
			} else {
				return ""
			}
		case strings.HasPrefix(s, "/*"):
			j, ok := commentEnd(s)
			if !ok {
				return ""
			}
			s = s[j:]
		default:
			return s
		}
	}
}

// leadingLines counts the lines before the first code of s.
func leadingLines(s string) int {
	code := stripComments(s)
	return strings.Count(s[:len(s)-len(code)], "\n")
}

// lineOf maps PostgreSQL's error position (1-based, in characters of the
// text sent) to a line of the file, given the line the text starts on.
func lineOf(text string, position int32, first int) int {
	if position <= 0 {
		return 0
	}
	line, chars := first, int32(0)
	for _, r := range text {
		chars++
		if chars >= position {
			return line
		}
		if r == '\n' {
			line++
		}
	}
	return line
}

// commentEnd returns the length of the /* comment s starts with (they
// nest), and false if it is not closed.
func commentEnd(s string) (int, bool) {
	depth, j := 1, 2
	for depth > 0 {
		if j >= len(s) {
			return 0, false
		}
		switch {
		case strings.HasPrefix(s[j:], "/*"):
			depth++
			j += 2
		case strings.HasPrefix(s[j:], "*/"):
			depth--
			j += 2
		default:
			j++
		}
	}
	return j, true
}
