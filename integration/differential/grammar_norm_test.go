package differential

import (
	"strings"
)

// Normalized matching (issue 10 item 4): comparisons of a function of a
// text PHI column, which phiproxy answers from a normalized index when its
// normalizers compute exactly the function (lower/upper under ctype C, as
// in the test clusters, and keeping the digits), and refuses otherwise (no
// such index, or trim() on the seed's columns).
func atomNorm(b *builder, c *column, ref string) (string, bool) {
	if !c.phi() || c.typ != "text" && c.typ != "varchar" {
		return "", false
	}
	v := func() string { return b.val(c, b.pick(c, true)) }
	// Mostly the forms the seed policy's indexes answer (lower() on
	// email, the digits of phone and ssn); the others are refused.
	n := b.r.IntN(10)
	if b.r.IntN(4) > 0 {
		switch c.pool {
		case "email":
			n = []int{0, 1, 2, 5, 6, 7}[b.r.IntN(6)]
		case "phone", "ssn":
			n = []int{3, 4, 9}[b.r.IntN(3)]
		}
	}
	switch n {
	case 0:
		return "lower(" + ref + ") = lower(" + v() + ")", true
	case 1:
		return "UPPER(" + ref + "::text) = UPPER(" + v() + ")", true // Django's __iexact
	case 2:
		// The normalized form itself, so that it matches: lower-cased.
		w := b.pick(c, false)
		w.text = asciiLower(w.text)
		return "lower(" + ref + ") = " + b.val(c, w), true
	case 3:
		w := b.pick(c, false)
		if b.r.IntN(2) == 0 {
			w.text = digitsOf(w.text)
		}
		return "regexp_replace(" + ref + ", '[^0-9]', '', 'g') = " + b.val(c, w), true
	case 4:
		return "regexp_replace(" + ref + `, '\D', '', 'g') = regexp_replace(` + v() + `, '\D', '', 'g')`, true
	case 5:
		return "lower(" + ref + ") <> lower(" + v() + ")", true
	case 6:
		return "lower(" + ref + ") IS DISTINCT FROM lower(" + v() + ")", true
	case 7:
		op := " IN "
		if b.r.IntN(2) == 0 {
			op = " NOT IN "
		}
		return "lower(" + ref + ")" + op + "(lower(" + v() + "), " + v() + ")", true
	case 8:
		return "lower(trim(" + ref + ")) = lower(trim(" + v() + "))", true
	default:
		return "regexp_replace(" + ref + ", '[^0-9]', '', 'g') <> regexp_replace(" + v() + ", '[^0-9]', '', 'g')", true
	}
}

func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

func digitsOf(s string) string {
	return strings.Map(func(r rune) rune {
		if '0' <= r && r <= '9' {
			return r
		}
		return -1
	}, s)
}
