package rewrite

import "github.com/novamind/phiproxy/policy"

// mentionsPolicy is the fast path: it reports whether sql could reference a
// policy table, by a case-insensitive byte search for each table name. Only
// when it is true is the text parsed. It errs on the side of parsing: a name
// inside a string or comment matches too, and a Unicode-escaped identifier
// (U&"...") always does, since it can spell a table name in escapes.
func mentionsPolicy(sql string, pol *policy.Policy) bool {
	// One pass over the text: only where a byte could start a needle are
	// the needles compared. EXECUTE name(args) runs a prepared statement,
	// maybe one the proxy rewrote, with arguments written in the text, so
	// it is always analyzed too.
	const unicodeIdent, execute = `u&"`, "execute"
	var first [256]bool
	first[unicodeIdent[0]], first[execute[0]] = true, true
	for _, t := range pol.Tables() {
		if t.Name == "" {
			return true
		}
		first[lower(t.Name[0])] = true
	}
	for i := 0; i < len(sql); i++ {
		if !first[lower(sql[i])] {
			continue
		}
		rest := sql[i:]
		if hasPrefixFold(rest, unicodeIdent) || hasPrefixFold(rest, execute) {
			return true
		}
		for _, t := range pol.Tables() {
			if hasPrefixFold(rest, t.Name) {
				return true
			}
		}
	}
	return false
}

// hasPrefixFold reports whether s starts with prefix, ASCII
// case-insensitively. It does not allocate.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for j := 0; j < len(prefix); j++ {
		if lower(s[j]) != lower(prefix[j]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
