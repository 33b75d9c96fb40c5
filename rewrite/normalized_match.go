package rewrite

import (
	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// The comparisons answered by a normalized index (normalized.go): =, <>,
// IS [NOT] DISTINCT FROM, joins, IN lists and = ANY.

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
