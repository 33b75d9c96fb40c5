package rewrite

import "github.com/novamind/phiproxy/policy"

// mentionsPolicy is the fast path: it reports whether sql could reference a
// policy table, by a case-insensitive byte search for each table name. Only
// when it is true is the text parsed. It errs on the side of parsing: a name
// inside a string or comment matches too, and a Unicode-escaped identifier
// (U&"...") always does, since it can spell a table name in escapes.
func mentionsPolicy(sql string, pol *policy.Policy) bool {
	for _, t := range pol.Tables() {
		if containsFold(sql, t.Name) {
			return true
		}
	}
	// EXECUTE name(args) runs a prepared statement, maybe one the proxy
	// rewrote, with arguments written in the text: always analyzed.
	return containsFold(sql, `u&"`) || containsFold(sql, "execute")
}

// containsFold reports whether s contains sub, ASCII case-insensitively. sub
// must be a policy identifier (ASCII). It does not allocate.
func containsFold(s, sub string) bool {
	n := len(sub)
	if n == 0 {
		return true
	}
	first := lower(sub[0])
	for i := 0; i+n <= len(s); i++ {
		if lower(s[i]) != first {
			continue
		}
		j := 1
		for j < n && lower(s[i+j]) == lower(sub[j]) {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
