package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// Operators and comparisons on PHI columns (expr.go walks to them): which
// comparisons a blind index answers exactly, and their rewriting onto the
// index column.

func (a *analyzer) aExpr(e *pg.A_Expr, sc *scope) error {
	op := opName(e.Name)
	eq := op == "=" || op == "<>" || op == "!="
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP, pg.A_Expr_Kind_AEXPR_DISTINCT, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		if eq && e.Lexpr != nil {
			return a.equality(e.Lexpr, e.Rexpr, sc, e.Location)
		}
	case pg.A_Expr_Kind_AEXPR_IN:
		l, err := a.phiOperand(e.Lexpr, sc)
		if err != nil {
			return err
		}
		if l.phi() {
			ix, err := a.indexable(l, e.Location, "IN (...)")
			if err != nil {
				return err
			}
			for _, v := range e.Rexpr.GetList().GetItems() {
				if err := a.value(v, role{action: ActionIndex, col: l.col, index: ix}, "IN (...)"); err != nil {
					return err
				}
			}
			return a.toIndex(e.Lexpr.GetColumnRef(), l.col, ix)
		}
		if done, err := a.normalizedIn(e, sc); done || err != nil {
			return err
		}
	case pg.A_Expr_Kind_AEXPR_OP_ANY, pg.A_Expr_Kind_AEXPR_OP_ALL:
		l, err := a.phiOperand(e.Lexpr, sc)
		if err != nil {
			return err
		}
		if l.phi() && eq {
			ix, err := a.indexable(l, e.Location, "operator "+op+" ANY/ALL")
			if err != nil {
				return err
			}
			if arr := e.Rexpr.GetAArrayExpr(); arr != nil {
				for _, v := range arr.Elements {
					if err := a.value(v, role{action: ActionIndex, col: l.col, index: ix}, "= ANY(ARRAY[...])"); err != nil {
						return err
					}
				}
			} else if err := a.value(e.Rexpr, role{action: ActionIndex, col: l.col, index: ix, array: true}, "= ANY(...)"); err != nil {
				return err
			}
			return a.toIndex(e.Lexpr.GetColumnRef(), l.col, ix)
		}
		if l.phi() {
			return a.reject(l.col, e.Location, "operator "+op+" ANY/ALL")
		}
		if eq {
			if done, err := a.normalizedAny(e, sc); done || err != nil {
				return err
			}
		}
	}
	what := describeAExpr(e, op)
	if err := a.expr(e.Lexpr, sc, what); err != nil {
		return err
	}
	if e.Kind == pg.A_Expr_Kind_AEXPR_IN {
		for _, v := range e.Rexpr.GetList().GetItems() {
			if err := a.expr(v, sc, what); err != nil {
				return err
			}
		}
		return nil
	}
	return a.expr(e.Rexpr, sc, what)
}

func describeAExpr(e *pg.A_Expr, op string) string {
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_LIKE:
		return "LIKE"
	case pg.A_Expr_Kind_AEXPR_ILIKE:
		return "ILIKE"
	case pg.A_Expr_Kind_AEXPR_SIMILAR:
		return "SIMILAR TO"
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		return "BETWEEN"
	case pg.A_Expr_Kind_AEXPR_NULLIF:
		return "NULLIF"
	case pg.A_Expr_Kind_AEXPR_IN:
		return "IN (...) with a PHI value in the list"
	case pg.A_Expr_Kind_AEXPR_OP_ANY, pg.A_Expr_Kind_AEXPR_OP_ALL:
		return "operator " + op + " ANY/ALL"
	}
	switch op {
	case "~", "~*", "!~", "!~*":
		return "regular expression match " + op
	case "~~", "~~*", "!~~", "!~~*":
		return "LIKE"
	}
	return "operator " + op
}

// phiOperand resolves n when it is a plain column reference; a blind-index
// column is rejected (phiproxy maintains it).
func (a *analyzer) phiOperand(n *pg.Node, sc *scope) (ref, error) {
	cr := n.GetColumnRef()
	if cr == nil {
		return ref{}, nil
	}
	r, err := a.resolve(cr, sc)
	if err != nil {
		return ref{}, err
	}
	if r.idx != nil {
		return ref{}, a.indexRef(r.idx, cr.Location)
	}
	return r, nil
}

// indexable returns the index that answers an equality comparison (what)
// of r: its exact blind index, when it can answer exactly.
func (a *analyzer) indexable(r ref, loc int32, what string) (*policy.BlindIndex, error) {
	ix, err := a.exactIndex(r.col, loc, what)
	if err != nil {
		return nil, err
	}
	if r.derived {
		return nil, a.errorf(r.col, loc, "comparing PHI column %s through a subquery or CTE output is not supported: compare it in the query that reads the table (%s)", r.col.QualifiedName(), supported)
	}
	return ix, nil
}

// exactIndex returns col's exact blind index when equality on col (what)
// can be answered by it exactly, that is when two values share an index
// value if and only if PostgreSQL's = says they are equal; else a
// refusal that says why.
func (a *analyzer) exactIndex(col *policy.Column, loc int32, what string) (*policy.BlindIndex, error) {
	ix := col.BlindIndex
	if ix == nil {
		for _, v1 := range col.Search {
			if v1.V1 {
				return nil, a.errorf(col, loc, "%s on PHI column %s is refused: its blind index %s is normalized (%s), so it also matches values PostgreSQL does not find equal; declare the exact index blind_index: {} and move the normalizers under search: (see README, exact equality)",
					what, col.QualifiedName(), v1.Column, strings.Join(v1.Normalize, ", "))
			}
		}
		return nil, a.errorf(col, loc, "column %s has no blind index: equality on it cannot be evaluated (add blind_index to its policy; %s)", col.QualifiedName(), supported)
	}
	if ix.Bits < policy.MinExactBits {
		return nil, a.errorf(col, loc, "%s on PHI column %s is refused: its blind index keeps %d bits, so distinct values may share an index value and match rows PostgreSQL would not; use bits of %d or more", what, col.QualifiedName(), ix.Bits, policy.MinExactBits)
	}
	// numeric and jsonb: the proxy indexes an equality key, the same for
	// the values PostgreSQL's = finds equal (1.0 = 1.00).
	if coll, ok := a.collation(col); ok && coll.Nondeterministic {
		return nil, a.errorf(col, loc, "%s on PHI column %s is refused: its collation is nondeterministic, so PostgreSQL finds values with different bytes equal, which a blind index cannot", what, col.QualifiedName())
	}
	return ix, nil
}

// collation returns what the catalog knows of col's collation (col nil:
// the database's default collation).
func (a *analyzer) collation(col *policy.Column) (Collation, bool) {
	cc, ok := a.cat.(Collations)
	if !ok || cc == nil {
		return Collation{}, false
	}
	if col == nil {
		return cc.Collation("", "", "")
	}
	return cc.Collation(col.Table.Schema, col.Table.Name, col.Name)
}

// equality handles l = r, l <> r and IS [NOT] DISTINCT FROM.
func (a *analyzer) equality(l, r *pg.Node, sc *scope, loc int32) error {
	lr, err := a.phiOperand(l, sc)
	if err != nil {
		return err
	}
	rr, err := a.phiOperand(r, sc)
	if err != nil {
		return err
	}
	switch {
	case lr.phi() && rr.phi():
		li, err := a.indexable(lr, loc, "comparing")
		if err != nil {
			return err
		}
		ri, err := a.indexable(rr, loc, "comparing")
		if err != nil {
			return err
		}
		if !lr.col.SameIndex(rr.col) {
			return a.errorf(lr.col, loc, "comparing PHI columns %s and %s needs both in one index_group (their blind indexes use different keys)", lr.col.QualifiedName(), rr.col.QualifiedName())
		}
		if err := a.toIndex(l.GetColumnRef(), lr.col, li); err != nil {
			return err
		}
		a.noteUse(lr.col, ActionIndex)
		a.noteUse(rr.col, ActionIndex)
		return a.toIndex(r.GetColumnRef(), rr.col, ri)
	case rr.phi():
		l, r, lr = r, l, rr
		fallthrough
	case lr.phi():
		ix, err := a.indexable(lr, loc, "=")
		if err != nil {
			return err
		}
		if err := a.value(r, role{action: ActionIndex, col: lr.col, index: ix}, "comparing to an expression"); err != nil {
			if e, ok := err.(*Error); ok && e.Column == "" {
				return err
			}
			if _, isRef := r.Node.(*pg.Node_ColumnRef); isRef {
				return a.errorf(lr.col, loc, "comparing PHI column %s with a non-PHI column is not supported (%s)", lr.col.QualifiedName(), supported)
			}
			if _, isCall := r.Node.(*pg.Node_FuncCall); isCall {
				return a.errorf(lr.col, loc, "comparing PHI column %s with a function of a value is not supported: compare it with the value itself, or apply the same function to both sides when a normalized index answers it (%s)", lr.col.QualifiedName(), supported)
			}
			return err
		}
		return a.toIndex(l.GetColumnRef(), lr.col, ix)
	}
	if done, err := a.normalizedEquality(l, r, sc, loc); done || err != nil {
		return err
	}
	if err := a.expr(l, sc, "operator ="); err != nil {
		return err
	}
	return a.expr(r, sc, "operator =")
}

// toIndex replaces the column name of cr by the column of col's blind
// index ix.
func (a *analyzer) toIndex(cr *pg.ColumnRef, col *policy.Column, ix *policy.BlindIndex) error {
	ts, err := a.tokens()
	if err != nil {
		return err
	}
	i := ts.at(int(cr.Location))
	if i < 0 {
		return a.errorf(col, cr.Location, "cannot locate column reference to %s", col.QualifiedName())
	}
	i += 2 * (len(cr.Fields) - 1)
	if i >= len(ts) || !ts[i].word() {
		return a.errorf(col, cr.Location, "cannot locate column reference to %s", col.QualifiedName())
	}
	a.addEditFor(col, ts[i].start, ts[i].end, text(quoteIdent(ix.Column)))
	return nil
}
