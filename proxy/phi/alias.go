package phi

import (
	"fmt"
	"slices"
	"strings"
)

// aliasNamed refuses a text that names a second name for a policy table
// (a view, child or parent table, foreign table, function... found by the
// catalog query): the rewriter knows policy tables by their names only, so
// a value written through the second name would reach PostgreSQL in
// plaintext, and a value read through it undecrypted. Names are matched as
// whole words, case-insensitively, anywhere in the text (a mention in a
// string or comment is refused too: a false alarm, never a leak). One
// statement of DDL that starts with DROP or ALTER passes: it is how the
// alias goes away; named then tells the session to read the catalog
// again. Costs nothing while the database has no alias.
func (c *catalog) aliasNamed(sql string) (named bool, err error) {
	if c == nil || len(c.aliasNames) == 0 {
		return false, nil
	}
	lower := strings.ToLower(sql)
	if strings.Contains(lower, `u&"`) {
		// A Unicode-escaped identifier (U&"visits\005fv") spells a name
		// without its letters: the word search cannot see it.
		return true, &CatalogError{Msg: "a Unicode-escaped identifier (U&\"...\") is not supported while the database has second names for PHI tables (phiproxy finds them by name): write the identifier plainly"}
	}
	names := make([]string, 0, len(c.aliasNames))
	for n := range c.aliasNames {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !containsWord(lower, n) {
			continue
		}
		if removesAlias(sql) {
			return true, nil
		}
		p := c.aliasNames[n]
		return true, &CatalogError{Msg: fmt.Sprintf("the statement names %s, a second name for table %s that phiproxy does not govern: %s", p.Alias, p.Table, p)}
	}
	return false, nil
}

// containsWord reports whether word occurs in s with no identifier
// character on either side (after it, for a word PostgreSQL may have cut
// a longer identifier to, any).
func containsWord(s, word string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], word)
		if j < 0 {
			return false
		}
		at, end := i+j, i+j+len(word)
		if (at == 0 || !identByte(s[at-1])) && (end == len(s) || !identByte(s[end]) || len(word) >= minCutName) {
			return true
		}
		i = at + 1
	}
}

// minCutName is the shortest name a longer identifier may be cut to:
// PostgreSQL cuts identifiers to 63 bytes at a character boundary (up to
// three bytes less), so a name this long followed by more identifier
// characters may be the same name.
const minCutName = 60

// identByte reports whether b may continue an unquoted identifier.
func identByte(b byte) bool {
	return b == '_' || b == '$' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b >= 0x80
}

// removesAlias reports whether sql is one statement starting with DROP or
// ALTER that holds no value. Any semicolon but trailing ones makes it more
// than one statement (or one with a semicolon in a literal, refused all
// the same). A value would be written by the ALTER (ALTER TABLE child
// ALTER COLUMN ssn SET DEFAULT '...' stores it in the catalog, on a
// relation the rewriter does not know as PHI): a quote, a dollar sign or
// a digit that is not part of a name refuses the text.
func removesAlias(sql string) bool {
	if strings.Contains(strings.TrimRight(sql, " \t\r\n\f;"), ";") {
		return false
	}
	w := firstWord(sql)
	return (w == "drop" || w == "alter") && !holdsValue(sql)
}

// holdsValue reports whether sql may hold a constant: a quote (a string,
// or a quoted identifier, refused all the same), a dollar sign, or a digit
// that does not continue a word.
func holdsValue(sql string) bool {
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == '\'' || c == '$':
			return true
		case c >= '0' && c <= '9' && (i == 0 || !identByte(sql[i-1])):
			return true
		}
	}
	return false
}

// firstWord returns the first word of sql in lower case, after blanks and
// comments (nested ones as PostgreSQL reads them).
func firstWord(sql string) string { return strings.ToLower(leadingWord(sql)) }

// leadingWord is firstWord as written, without allocating.
func leadingWord(sql string) string {
	rest, _ := skipBlank(sql)
	i := 0
	for i < len(rest) && identByte(rest[i]) {
		i++
	}
	return rest[:i]
}

// skipBlank returns sql after its leading blanks and comments (nested ones
// as PostgreSQL reads them); ok is false when a comment is not terminated
// (rest is then empty).
func skipBlank(sql string) (rest string, ok bool) {
	for {
		sql = strings.TrimLeft(sql, " \t\r\n\f")
		switch {
		case strings.HasPrefix(sql, "--"):
			i := strings.IndexByte(sql, '\n')
			if i < 0 {
				return "", true
			}
			sql = sql[i+1:]
		case strings.HasPrefix(sql, "/*"):
			depth, i := 0, 0
			for ; i+1 < len(sql); i++ {
				switch sql[i : i+2] {
				case "/*":
					depth++
					i++
				case "*/":
					depth--
					i++
				}
				if depth == 0 {
					break
				}
			}
			if depth != 0 {
				return "", false
			}
			sql = sql[i+1:]
		default:
			return sql, true
		}
	}
}

// leadingWords returns up to n words that start sql, in lower case, with
// the blanks and comments between them skipped; it stops at anything else
// (a quote, a parenthesis, a semicolon).
func leadingWords(sql string, n int) []string {
	var words []string
	for len(words) < n {
		rest, _ := skipBlank(sql)
		i := 0
		for i < len(rest) && identByte(rest[i]) {
			i++
		}
		if i == 0 {
			break
		}
		words = append(words, strings.ToLower(rest[:i]))
		sql = rest[i:]
	}
	return words
}
