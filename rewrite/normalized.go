package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// Normalized matching (issue 10 item 4). SQL that compares a function of
// a PHI column, such as lower(email) = lower($1) or Django's
// UPPER(email::text) = UPPER($1), is answered by one of the column's
// normalized indexes (policy `search:`) when, and only when, the index's
// normalizers compute exactly what the SQL functions compute, for every
// input:
//
//   - trim(col), btrim(col), trim(both from col), btrim(col, ' '): remove
//     leading and trailing spaces only, whatever the locale: normalizer
//     btrim.
//   - lower(col): under a ctype of C or POSIX, PostgreSQL maps the ASCII
//     letters alone (str_tolower's asc_tolower): normalizer ascii_lower.
//     Under any other ctype lower() follows the locale (libc's towlower,
//     ICU's full case mapping, which turns İ into i + U+0307; ẞ, ſ and
//     the Kelvin sign differ between them), which no normalizer of
//     phiproxy can promise to reproduce, so it is refused. The catalog
//     tells the collation (Collations); without it, refused too.
//   - upper(col): under ctype C, upper(x) = upper(y) exactly when
//     ascii_lower(x) = ascii_lower(y) (both fold the same 26 letter
//     pairs), so the ascii_lower index answers it when both sides are
//     upper()ed; upper(col) = 'value' is refused (no index holds upper()).
//   - regexp_replace(col, '[^0-9]', '', 'g'): keeps the ASCII digits, in
//     every locale (bracket ranges are code points): normalizer digits.
//     The class \D means the same under ctype C only (ICU's \d matches
//     other scripts' digits).
//   - casts to text or varchar without a length, which change nothing on a
//     text or varchar column.
//
// Compositions reduce to one canonical meaning (fold): trim and case
// mapping commute and touch different characters, a later case mapping
// overrides an earlier one (lower(upper(x)) = lower(x) on ASCII), and
// keeping the digits absorbs both. The value side must either apply the
// same functions (then the proxy indexes the value with the index's
// normalizers: F(x) = F(v) exactly when N(x) = N(v)) or none (then the
// value is compared with the normalized form as it is, which needs F and N
// to be the same function: ActionIndexNormalized). Functions of the value
// follow the database's default collation (a parameter's or literal's),
// which must then have ctype C too. NULLs stay NULL on both sides, so
// <>, NOT IN and IS DISTINCT FROM keep PostgreSQL's three-valued logic.

// fold is the canonical meaning of a chain of the functions above.
type fold struct {
	digits bool // only the ASCII digits remain
	trim   bool // leading and trailing spaces removed
	casing byte // 'l' lower-cased, 'u' upper-cased (ASCII letters), 0 as is
	ctype  bool // a step means what it says only under ctype C
	steps  int  // functions applied (casts do not count)
	classD bool // the digits were kept with \D (for messages only)
}

// then is f followed by one more function.
func (f fold) then(op string) fold {
	f.steps++
	switch op {
	case "btrim":
		if !f.digits {
			f.trim = true
		}
	case "lower", "upper":
		f.ctype = true
		if !f.digits {
			f.casing = op[0]
		}
	case "digits", `\D`:
		f.ctype = f.ctype || op == `\D`
		f.digits, f.trim, f.casing, f.classD = true, false, 0, op == `\D`
	}
	return f
}

// same reports whether f and g are the same function.
func (f fold) same(g fold) bool {
	return f.digits == g.digits && f.trim == g.trim && f.casing == g.casing
}

// sameKernel reports whether f(x) = f(y) exactly when g(x) = g(y).
func (f fold) sameKernel(g fold) bool {
	if f.digits || g.digits {
		return f.digits == g.digits
	}
	return f.trim == g.trim && (f.casing != 0) == (g.casing != 0)
}

func (f fold) String() string {
	var s string
	switch {
	case f.digits && f.classD:
		return `regexp_replace(col, '\D', '', 'g')`
	case f.digits:
		return "regexp_replace(col, '[^0-9]', '', 'g')"
	case f.casing == 'l':
		s = "lower("
	case f.casing == 'u':
		s = "upper("
	}
	if f.trim {
		s += "btrim(col)"
	} else {
		s += "col"
	}
	if f.casing != 0 {
		s += ")"
	}
	return s
}

// normalizers suggests the normalize list of an index that answers f.
func (f fold) normalizers() string {
	var n []string
	if f.digits {
		return "[digits]"
	}
	if f.trim {
		n = append(n, "btrim")
	}
	if f.casing != 0 {
		n = append(n, "ascii_lower")
	}
	return "[" + strings.Join(n, ", ") + "]"
}

// indexFold is the meaning of a normalized index; false when one of its
// normalizers is not exactly a PostgreSQL function (trim, lower, nfc of a
// v1-form index).
func indexFold(ix *policy.BlindIndex) (fold, bool) {
	var f fold
	for _, n := range ix.Normalize {
		switch n {
		case "btrim":
			f = f.then("btrim")
		case "ascii_lower":
			f = f.then("lower")
		case "digits":
			f = f.then("digits")
		default:
			return fold{}, false
		}
	}
	f.ctype = false // the index computes on ASCII whatever the locale
	return f, true
}

// chainOf peels the functions above off n: it returns the innermost node
// and the fold of what surrounds it. ok is false when n is no such chain
// (not even a bare node is returned then: the caller analyzes n as any
// expression).
func chainOf(n *pg.Node) (inner *pg.Node, f fold, ok bool) {
	var ops []string
	for {
		switch x := n.Node.(type) {
		case *pg.Node_TypeCast:
			if !textCast(x.TypeCast.TypeName) {
				return nil, fold{}, false
			}
			n = x.TypeCast.Arg
			continue
		case *pg.Node_FuncCall:
			op, arg := chainFunc(x.FuncCall)
			if op == "" {
				return nil, fold{}, false
			}
			ops = append(ops, op)
			n = arg
			continue
		}
		break
	}
	for i := len(ops) - 1; i >= 0; i-- {
		f = f.then(ops[i])
	}
	return n, f, true
}

// textCast reports whether t is text or varchar without a length.
func textCast(t *pg.TypeName) bool {
	if t == nil || len(t.Typmods) > 0 || len(t.ArrayBounds) > 0 || t.Setof || t.PctType {
		return false
	}
	var names []string
	for _, n := range t.Names {
		if s := n.GetString_(); s != nil {
			names = append(names, s.Sval)
		}
	}
	switch strings.Join(names, ".") {
	case "text", "pg_catalog.text", "varchar", "pg_catalog.varchar":
		return true
	}
	return false
}

// chainFunc recognizes one function of a chain: its meaning and argument.
func chainFunc(f *pg.FuncCall) (string, *pg.Node) {
	if f.AggStar || f.AggDistinct || f.FuncVariadic || f.Over != nil || f.AggFilter != nil || len(f.AggOrder) > 0 || f.AggWithinGroup {
		return "", nil
	}
	for _, a := range f.Args {
		if a.GetNamedArgExpr() != nil {
			return "", nil
		}
	}
	name := strings.TrimPrefix(strings.ToLower(funcName(f)), "pg_catalog.")
	switch {
	case (name == "lower" || name == "upper") && len(f.Args) == 1:
		return name, f.Args[0]
	case name == "btrim" && (len(f.Args) == 1 || len(f.Args) == 2 && constString(f.Args[1]) == " "):
		return "btrim", f.Args[0]
	case name == "regexp_replace" && len(f.Args) == 4 && constString(f.Args[2]) == "" && f.Args[2].GetAConst().GetSval() != nil && constString(f.Args[3]) == "g":
		switch constString(f.Args[1]) {
		case "[^0-9]":
			return "digits", f.Args[0]
		case `\D`:
			return `\D`, f.Args[0]
		}
	}
	return "", nil
}

// constString is the value of an untyped string constant, "" otherwise.
func constString(n *pg.Node) string {
	if s := n.GetAConst().GetSval(); s != nil {
		return s.Sval
	}
	return ""
}
