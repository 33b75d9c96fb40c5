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

// normSide is one side of a normalized comparison that is a chain over a
// PHI column.
type normSide struct {
	node *pg.Node // the whole chain, replaced by the index column
	cr   *pg.ColumnRef
	ref  ref
	f    fold
}

// normColumn returns the side when n is a chain over a PHI column; ok
// false when it is not (n is then analyzed as any expression).
func (a *analyzer) normColumn(n *pg.Node, sc *scope) (normSide, bool, error) {
	inner, f, ok := chainOf(n)
	if !ok {
		return normSide{}, false, nil
	}
	cr := inner.GetColumnRef()
	if cr == nil {
		return normSide{}, false, nil
	}
	r, err := a.phiOperand(inner, sc)
	if err != nil || !r.phi() {
		return normSide{}, false, err
	}
	if inner == n {
		return normSide{}, false, nil // a bare column: the exact index's business
	}
	return normSide{node: n, cr: cr, ref: r, f: f}, true, nil
}

// normValue is the value side of a normalized comparison: a parameter, a
// literal or NULL, under the chain g.
type normValue struct {
	node  *pg.Node // the whole value expression
	inner *pg.Node
	g     fold
}

func valueChain(n *pg.Node) (normValue, bool) {
	inner, g, ok := chainOf(n)
	if !ok {
		return normValue{}, false
	}
	switch x := inner.Node.(type) {
	case *pg.Node_ParamRef:
		return normValue{node: n, inner: inner, g: g}, true
	case *pg.Node_AConst:
		// A string or NULL: a number compared with text fails in
		// PostgreSQL (text = integer does not exist).
		if x.AConst.GetSval() != nil || x.AConst.Isnull {
			return normValue{node: n, inner: inner, g: g}, true
		}
	}
	return normValue{}, false
}

// checkSide checks that the chain of s may be answered on its column at
// all: a text column, a known collation where the chain needs ctype C.
func (a *analyzer) checkSide(s normSide, loc int32) error {
	col := s.ref.col
	if s.ref.derived {
		return a.errorf(col, loc, "comparing PHI column %s through a subquery or CTE output is not supported: compare it in the query that reads the table (%s)", col.QualifiedName(), supported)
	}
	if col.Type != policy.TypeText && col.Type != policy.TypeVarchar {
		return a.reject(col, loc, "a function or cast")
	}
	if s.f.ctype {
		if coll, ok := a.collation(col); !ok || !coll.CTypeC {
			return a.errorf(col, loc, "%s on PHI column %s is refused: a normalized index computes lower()/upper()/\\D exactly only where PostgreSQL maps ASCII letters alone, that is where the column's collation has ctype C or POSIX, and %s (regexp_replace with [^0-9] and trim() do not depend on it)",
				s.f, col.QualifiedName(), collationState(ok))
		}
	}
	return nil
}

func collationState(known bool) string {
	if known {
		return "this database's does not"
	}
	return "phiproxy does not know this database's"
}

// searchIndex returns the normalized index of s's column that answers
// its chain: one with the same kernel, the same function when exact is
// set (the value is compared as it is), and a trustworthy length.
func (a *analyzer) searchIndex(s normSide, exact bool, loc int32) (*policy.BlindIndex, error) {
	col := s.ref.col
	if err := a.migrating(col, loc, s.f.String()+" = a value"); err != nil {
		return nil, err
	}
	var found *policy.BlindIndex
	foundSame := false
	for _, ix := range col.Search {
		n, ok := indexFold(ix)
		if !ok || !n.sameKernel(s.f) || exact && !n.same(s.f) {
			continue
		}
		if same := n.same(s.f); found == nil || same && !foundSame {
			found, foundSame = ix, same
		}
	}
	if found == nil {
		if exact && s.f.casing == 'u' {
			return nil, a.errorf(col, loc, "%s = a value on PHI column %s is not supported: no index holds upper(); write upper(%s) = upper($1)", s.f, col.QualifiedName(), col.Name)
		}
		if exact {
			for _, ix := range col.Search {
				if n, ok := indexFold(ix); ok && n.sameKernel(s.f) {
					return nil, a.errorf(col, loc, "%s = a value on PHI column %s is not supported: its index %s computes %s; apply %s to the value too", s.f, col.QualifiedName(), ix.Name, n, s.f)
				}
			}
		}
		return nil, a.errorf(col, loc, "%s on PHI column %s needs a normalized index that computes it: add search: {<name>: {normalize: %s}} to its policy", s.f, col.QualifiedName(), s.f.normalizers())
	}
	if found.Bits < policy.MinExactBits {
		return nil, a.errorf(col, loc, "%s on PHI column %s is refused: its index %s keeps %d bits, so distinct values may share an index value and match rows PostgreSQL would not; use bits of %d or more", s.f, col.QualifiedName(), found.Name, found.Bits, policy.MinExactBits)
	}
	return found, nil
}

// normRole returns the role of a value compared with s's column through
// index ix, or an error when the value side cannot be answered.
func (a *analyzer) normRole(s normSide, ix *policy.BlindIndex, v normValue, loc int32) (role, error) {
	col := s.ref.col
	n, _ := indexFold(ix)
	switch {
	case v.g.steps == 0 && v.g == (fold{}) && n.same(s.f):
		return role{action: ActionIndexNormalized, col: col, index: ix}, nil
	case v.g.steps > 0 && v.g.same(s.f):
		if v.g.ctype {
			if coll, ok := a.collation(nil); !ok || !coll.CTypeC {
				return role{}, a.errorf(col, loc, "%s of a value compared with PHI column %s is refused: PostgreSQL computes it in the database's default collation, and %s ctype C or POSIX", v.g, col.QualifiedName(), map[bool]string{true: "this database's is not", false: "phiproxy does not know whether this database's is"}[ok])
			}
		}
		return role{action: ActionIndex, col: col, index: ix}, nil
	}
	return role{}, a.errorf(col, loc, "comparing %s on PHI column %s with a value needs the same functions around the value (%s = lower($1)) or, when the index computes exactly %s, none", s.f, col.QualifiedName(), s.f, s.f)
}

// bindNorm binds the value v in role r: its whole expression (functions
// and casts included) becomes the parameter, the literal slot or NULL.
func (a *analyzer) bindNorm(v normValue, r role) error {
	val, err := a.valueOf(v.inner, r.col, "comparing")
	if err != nil {
		return err
	}
	start, end, ok := a.exprSpan(v.node)
	if !ok {
		return a.errorf(r.col, val.loc, "cannot locate the value compared with %s", r.col.QualifiedName())
	}
	switch {
	case val.kind == vDefault:
		return a.errorf(r.col, val.loc, "DEFAULT is not a value to compare")
	case val.kind == vLiteral && r.array:
		return a.errorf(r.col, val.loc, "an array literal compared with PHI column %s is not supported: bind the array as a parameter", r.col.QualifiedName())
	}
	val.start, val.end, val.cast = start, end, start != val.start || end != val.end || val.cast
	a.bind(val, r)
	return nil
}

// replaceSide replaces the chain of s by its column's index column ix,
// qualified as the column was.
func (a *analyzer) replaceSide(s normSide, ix *policy.BlindIndex) error {
	start, end, ok := a.exprSpan(s.node)
	ts := a.toks
	i := ts.at(int(s.cr.Location))
	last := i + 2*(len(s.cr.Fields)-1)
	if !ok || i < 0 || last >= len(ts) {
		return a.errorf(s.ref.col, s.cr.Location, "cannot locate the column reference to %s", s.ref.col.QualifiedName())
	}
	qual := a.sql[ts[i].start:ts[last].start]
	a.addEditFor(s.ref.col, start, end, text(qual+quoteIdent(ix.Column)))
	a.noteUse(s.ref.col, ActionIndex) // a search, whatever the value side
	return nil
}

// normalizedEquality handles F(col) op value, value op F(col) and
// F(a.col) op F(b.col) for =, <>, != and IS [NOT] DISTINCT FROM. done is
// false when neither side is a chain over a PHI column.
func (a *analyzer) normalizedEquality(l, r *pg.Node, sc *scope, loc int32) (bool, error) {
	ls, lok, err := a.normColumn(l, sc)
	if err != nil {
		return true, err
	}
	rs, rok, err := a.normColumn(r, sc)
	if err != nil {
		return true, err
	}
	switch {
	case lok && rok:
		return true, a.normalizedJoin(ls, rs, loc)
	case rok:
		ls, l, r = rs, r, l
	case !lok:
		return false, nil
	}
	if err := a.checkSide(ls, loc); err != nil {
		return true, err
	}
	if cr := r.GetColumnRef(); cr != nil {
		if rr, err := a.resolve(cr, sc); err == nil && rr.phi() {
			return true, a.errorf(ls.ref.col, loc, "comparing %s on PHI column %s with PHI column %s is not supported: apply the same functions to both", ls.f, ls.ref.col.QualifiedName(), rr.col.QualifiedName())
		}
	}
	v, ok := valueChain(r)
	if !ok {
		return true, a.errorf(ls.ref.col, loc, "comparing %s on PHI column %s with an expression is not supported: compare it with a parameter or literal, under the same functions (%s)", ls.f, ls.ref.col.QualifiedName(), supported)
	}
	if ls.f.steps == 0 {
		// Only casts to text: the value itself, on the exact index.
		ix, err := a.exactIndex(ls.ref.col, loc, "=")
		if err != nil {
			return true, err
		}
		if v.g.steps > 0 {
			return true, a.errorf(ls.ref.col, loc, "comparing PHI column %s with a function of a value is not supported: compare it with the value itself, or apply the same function to both sides when a normalized index answers it (%s)", ls.ref.col.QualifiedName(), supported)
		}
		if err := a.bindNorm(v, role{action: ActionIndex, col: ls.ref.col, index: ix}); err != nil {
			return true, err
		}
		return true, a.replaceSide(ls, ix)
	}
	ix, err := a.searchIndex(ls, v.g.steps == 0, loc)
	if err != nil {
		return true, err
	}
	ro, err := a.normRole(ls, ix, v, loc)
	if err != nil {
		return true, err
	}
	if err := a.bindNorm(v, ro); err != nil {
		return true, err
	}
	return true, a.replaceSide(ls, ix)
}

// normalizedJoin handles F(a.x) = F(b.y): both columns need an index of
// one key (group and normalizers) that answers F.
func (a *analyzer) normalizedJoin(ls, rs normSide, loc int32) error {
	lc, rc := ls.ref.col, rs.ref.col
	if err := a.checkSide(ls, loc); err != nil {
		return err
	}
	if err := a.checkSide(rs, loc); err != nil {
		return err
	}
	if !ls.f.same(rs.f) {
		return a.errorf(lc, loc, "comparing %s on PHI column %s with %s on %s is not supported: apply the same functions to both", ls.f, lc.QualifiedName(), rs.f, rc.QualifiedName())
	}
	var li, ri *policy.BlindIndex
	if ls.f.steps == 0 {
		var err error
		if li, err = a.exactIndex(lc, loc, "comparing"); err != nil {
			return err
		}
		if ri, err = a.exactIndex(rc, loc, "comparing"); err != nil {
			return err
		}
		if !lc.SameIndex(rc) {
			return a.errorf(lc, loc, "comparing PHI columns %s and %s needs both in one index_group (their blind indexes use different keys)", lc.QualifiedName(), rc.QualifiedName())
		}
	} else {
		for _, x := range lc.Search {
			for _, y := range rc.Search {
				f, ok := indexFold(x)
				if ok && f.sameKernel(ls.f) && sameKey(x, y) && x.Bits >= policy.MinExactBits && (li == nil || f.same(ls.f)) {
					li, ri = x, y
				}
			}
		}
		if li == nil {
			return a.errorf(lc, loc, "comparing %s on PHI columns %s and %s needs a normalized index computing it on both, in one index_group with the same normalizers (add search: {<name>: {normalize: %s}} to both and a shared index_group)", ls.f, lc.QualifiedName(), rc.QualifiedName(), ls.f.normalizers())
		}
	}
	if err := a.replaceSide(ls, li); err != nil {
		return err
	}
	return a.replaceSide(rs, ri)
}

// sameKey reports whether two normalized indexes hold comparable values:
// the same key (group, normalizers, form) and length.
func sameKey(x, y *policy.BlindIndex) bool {
	if x.Group != y.Group || x.V1 != y.V1 || x.Bits != y.Bits || len(x.Normalize) != len(y.Normalize) {
		return false
	}
	for i := range x.Normalize {
		if x.Normalize[i] != y.Normalize[i] {
			return false
		}
	}
	return true
}

// normalizedIn handles F(col) [NOT] IN (values): each value either under
// the same functions or bare.
func (a *analyzer) normalizedIn(e *pg.A_Expr, sc *scope) (bool, error) {
	items := e.Rexpr.GetList().GetItems()
	return a.normalizedList(e.Lexpr, items, false, sc, e.Location, "IN (...)")
}

// normalizedAny handles F(col) = ANY($n) (elements compared as they are)
// and F(col) = ANY(ARRAY[values]), and <> ALL.
func (a *analyzer) normalizedAny(e *pg.A_Expr, sc *scope) (bool, error) {
	if arr := e.Rexpr.GetAArrayExpr(); arr != nil {
		return a.normalizedList(e.Lexpr, arr.Elements, false, sc, e.Location, "= ANY(ARRAY[...])")
	}
	return a.normalizedList(e.Lexpr, []*pg.Node{e.Rexpr}, true, sc, e.Location, "= ANY(...)")
}

// arrayValue is the array parameter of = ANY($n), casts (to text[]) and
// all: its elements are compared as they are.
func arrayValue(n *pg.Node) (normValue, bool) {
	inner := n
	for inner.GetTypeCast() != nil {
		inner = inner.GetTypeCast().Arg
	}
	if inner.GetParamRef() == nil {
		return normValue{}, false
	}
	return normValue{node: n, inner: n}, true
}

func (a *analyzer) normalizedList(l *pg.Node, items []*pg.Node, array bool, sc *scope, loc int32, what string) (bool, error) {
	s, ok, err := a.normColumn(l, sc)
	if !ok || err != nil {
		return err != nil, err
	}
	if err := a.checkSide(s, loc); err != nil {
		return true, err
	}
	vals := make([]normValue, len(items))
	bare := false
	for i, it := range items {
		v, ok := valueChain(it)
		if array {
			v, ok = arrayValue(it)
		}
		if !ok {
			return true, a.errorf(s.ref.col, loc, "%s: comparing %s on PHI column %s needs parameters or literals, bare or under the same functions", what, s.f, s.ref.col.QualifiedName())
		}
		vals[i] = v
		bare = bare || v.g.steps == 0
	}
	var ix *policy.BlindIndex
	if s.f.steps == 0 {
		ix, err = a.exactIndex(s.ref.col, loc, what)
	} else {
		ix, err = a.searchIndex(s, bare, loc)
	}
	if err != nil {
		return true, err
	}
	for _, v := range vals {
		ro := role{action: ActionIndex, col: s.ref.col, index: ix}
		if s.f.steps > 0 {
			if ro, err = a.normRole(s, ix, v, loc); err != nil {
				return true, err
			}
		} else if v.g.steps > 0 {
			return true, a.errorf(s.ref.col, loc, "%s: comparing PHI column %s with a function of a value is not supported", what, s.ref.col.QualifiedName())
		}
		ro.array = array
		if err := a.bindNorm(v, ro); err != nil {
			return true, err
		}
	}
	return true, a.replaceSide(s, ix)
}

// exprSpan returns the byte range of a chain node: a function call (its
// name to its closing parenthesis), a cast, a column reference, a
// parameter or a constant.
func (a *analyzer) exprSpan(n *pg.Node) (start, end int, ok bool) {
	ts, err := a.tokens()
	if err != nil {
		return 0, 0, false
	}
	switch x := n.Node.(type) {
	case *pg.Node_FuncCall:
		i := ts.at(int(x.FuncCall.Location))
		if i < 0 {
			return 0, 0, false
		}
		k := i
		for k < len(ts) && ts[k].kind != pg.Token_ASCII_40 {
			k++
		}
		j := ts.matching(k)
		if j < 0 {
			return 0, 0, false
		}
		return ts[i].start, ts[j].end, true
	case *pg.Node_ColumnRef:
		i := ts.at(int(x.ColumnRef.Location))
		last := i + 2*(len(x.ColumnRef.Fields)-1)
		if i < 0 || last >= len(ts) {
			return 0, 0, false
		}
		return ts[i].start, ts[last].end, true
	case *pg.Node_TypeCast:
		tc := x.TypeCast
		if tc.Location < 0 {
			return a.span(ts, n)
		}
		i := ts.at(int(tc.Location))
		if i < 0 {
			return 0, 0, false
		}
		if ts[i].kind == pg.Token_CAST {
			j := ts.matching(i + 1)
			if j < 0 {
				return 0, 0, false
			}
			return ts[i].start, ts[j].end, true
		}
		s, _, ok := a.exprSpan(tc.Arg)
		if !ok || ts[i].kind != pg.Token_TYPECAST {
			return 0, 0, false
		}
		j := typeNameEnd(a.sql, ts, i+1)
		if j < 0 {
			return 0, 0, false
		}
		return s, ts[j].end, true
	}
	return a.span(ts, n)
}
