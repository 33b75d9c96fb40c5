package rewrite

import (
	"sync/atomic"

	"github.com/novamind/phiproxy/policy"
)

// keywords make a text worth parsing although it names no policy table:
// statements that can reach one by a name the byte scan cannot see (a DO
// or function body written with E'\x45' escapes or building 'pat' ||
// 'ients' at run time, foreign table options in U&'\0069' escapes, a
// domain standing in for a storage type) and functions that run SQL given
// as a string. Words are matched at word boundaries (an identifier
// character on either side means another word); prefixes only at the start
// of a word (dblink_exec, query_to_xmlschema). A spurious match costs one
// parse, never a wrong answer. DO is special: it must start a statement
// (see doKeyword).
var keywords = []struct {
	word   string
	prefix bool
}{
	{"function", false},       // CREATE [OR REPLACE] FUNCTION, EXECUTE FUNCTION
	{"procedure", false},      // CREATE PROCEDURE, EXECUTE PROCEDURE
	{"foreign", false},        // CREATE / ALTER FOREIGN TABLE, IMPORT FOREIGN SCHEMA
	{"subscription", false},   // CREATE / ALTER SUBSCRIPTION
	{"domain", false},         // CREATE DOMAIN text ...
	{"rename", false},         // ALTER TYPE d RENAME TO text
	{"dblink", true},          // dblink(), dblink_exec(): SQL on a second connection
	{"query_to_xml", true},    // query_to_xml[schema|_and_xmlschema](query text, ...)
	{"ts_stat", true},         // ts_stat(sqlquery text)
	{"ts_rewrite", true},      // ts_rewrite(tsquery, select text)
	{"table_to_xml", true},    // table_to_xml[schema|_and_xmlschema](regclass, ...): whole rows
	{"schema_to_xml", true},   // schema_to_xml...(name, ...)
	{"database_to_xml", true}, // database_to_xml...(...)
	{"cursor_to_xml", true},   // cursor_to_xml(cursor, ...), cursor_to_xmlschema
}

// mentionsPolicy is the fast path: it reports whether sql could reference a
// policy table, by a case-insensitive byte search for each table name. Only
// when it is true is the text parsed. It errs on the side of parsing: a name
// inside a string or comment matches too, and a Unicode-escaped identifier
// (U&"...") always does, since it can spell a table name in escapes. The
// keywords above make it true as well.
func mentionsPolicy(sql string, pol *policy.Policy) bool {
	// One pass over the text, one table lookup per byte: only where a
	// byte could start a needle are the needles that start with it
	// compared (keywords only where a word starts). EXECUTE name(args)
	// runs a prepared statement, maybe one the proxy rewrote, with
	// arguments written in the text, so it is always analyzed too.
	st := scanTableFor(pol)
	if st.all {
		return true
	}
	class := &st.class
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		cl := class[c]
		if cl == 0 {
			continue
		}
		rest := sql[i:]
		if cl&classNeedle != 0 {
			for _, n := range st.needles[c] {
				if hasPrefixLower(rest, n) {
					return true
				}
			}
		}
		if cl&classKeyword == 0 || i > 0 && identBytes[sql[i-1]] {
			continue // keywords start words
		}
		for _, k := range st.keywords[c] {
			if !hasPrefixLower(rest, k.word) {
				continue
			}
			whole := len(rest) == len(k.word) || !identBytes[rest[len(k.word)]]
			if k.word == doWord {
				if whole && doKeyword(sql[:i]) {
					return true
				}
				continue
			}
			if k.prefix || whole {
				return true
			}
		}
	}
	return false
}

const unicodeIdent, executeWord, doWord = `u&"`, "execute", "do"

// scanTable is mentionsPolicy's byte classes and needles for one policy.
type scanTable struct {
	pol   *policy.Policy
	class [256]uint8
	// needles are the table names, U&" and EXECUTE, lower-cased, by
	// their first byte in either case; keywords likewise, DO among them.
	needles  [256][]string
	keywords [256][]scanKeyword
	all      bool // a table name the scan cannot look for: parse every text
}

type scanKeyword struct {
	word   string // lower case
	prefix bool
}

// lastScanTable keeps the table of the policy scanned last (a proxy has
// one), so a scan does not rebuild it.
var lastScanTable atomic.Pointer[scanTable]

func scanTableFor(pol *policy.Policy) *scanTable {
	if st := lastScanTable.Load(); st != nil && st.pol == pol {
		return st
	}
	st := &scanTable{pol: pol}
	both := func(c byte) []byte {
		if c >= 'a' && c <= 'z' {
			return []byte{c, c - 'a' + 'A'}
		}
		return []byte{c}
	}
	needle := func(n string) {
		n = asciiLowerString(n)
		for _, c := range both(n[0]) {
			st.class[c] |= classNeedle
			st.needles[c] = append(st.needles[c], n)
		}
	}
	keyword := func(k scanKeyword) {
		for _, c := range both(k.word[0]) {
			st.class[c] |= classKeyword
			st.keywords[c] = append(st.keywords[c], k)
		}
	}
	needle(unicodeIdent)
	needle(executeWord)
	keyword(scanKeyword{word: doWord})
	for _, k := range keywords {
		keyword(scanKeyword{word: k.word, prefix: k.prefix})
	}
	for _, t := range pol.Tables() {
		if t.Name == "" {
			st.all = true
			continue
		}
		needle(t.Name)
	}
	lastScanTable.Store(st)
	return st
}

// Byte classes of mentionsPolicy's scan.
const (
	classNeedle  uint8 = 1 << iota // may start a table name, U&" or EXECUTE
	classKeyword                   // may start a keyword
)

func asciiLowerString(s string) string {
	b := []byte(s)
	for i := range b {
		b[i] = lower(b[i])
	}
	return string(b)
}

// identByte reports whether c can continue an identifier (PostgreSQL's
// ident_cont: letters, digits, _, $ and every byte >= 0x80).
func identByte(c byte) bool {
	return identBytes[c]
}

var identBytes = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		l := lower(byte(c))
		t[c] = l >= 'a' && l <= 'z' || l >= '0' && l <= '9' || l == '_' || l == '$' || l >= 0x80
	}
	return t
}()

// doKeyword reports whether a word DO after before could begin a DO
// statement: the text before it is empty, ends with ";" or with the end of
// a /* comment */, once trailing white space is removed, or holds "--"
// (a line comment may end right before it). DO elsewhere (ON CONFLICT DO,
// CREATE RULE ... DO) belongs to a statement that names its table.
func doKeyword(before string) bool {
	j := len(before) - 1
	for j >= 0 && (before[j] == ' ' || before[j] == '\t' || before[j] == '\n' || before[j] == '\r' || before[j] == '\f' || before[j] == '\v') {
		j--
	}
	if j < 0 || before[j] == ';' || before[j] == '/' {
		return true
	}
	for k := 0; k+1 < len(before); k++ {
		if before[k] == '-' && before[k+1] == '-' {
			return true
		}
	}
	return false
}

// hasPrefixLower reports whether s starts with prefix, which is in lower
// case, ASCII case-insensitively. It does not allocate.
func hasPrefixLower(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for j := 0; j < len(prefix); j++ {
		if lowerBytes[s[j]] != prefix[j] {
			return false
		}
	}
	return true
}

var lowerBytes = func() (t [256]byte) {
	for c := range t {
		t[c] = lower(byte(c))
	}
	return t
}()

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
