package rewrite

import (
	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// The two sides of a normalized comparison (normalized.go): the chain over
// a PHI column, the value under its own chain, the index that answers them,
// and the column side's replacement in the SQL text.

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
		return a.errorf(col, loc, "comparing PHI column %s through a subquery or CTE output is not supported", col.QualifiedName()).
			hint("Compare it in the query that reads the table.", supported)
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
	a.bind(val, r, assignAt{})
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
