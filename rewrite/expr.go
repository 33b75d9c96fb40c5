package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// expr checks and rewrites one expression. what names the construct that
// computes on the expression's value ("" at the top of a predicate or a
// target); a PHI column found under a non-empty what is rejected.
func (a *analyzer) expr(n *pg.Node, sc *scope, what string) error {
	if n == nil || n.Node == nil {
		return nil
	}
	switch x := n.Node.(type) {
	case *pg.Node_ColumnRef:
		r, err := a.resolve(x.ColumnRef, sc)
		if err != nil {
			return err
		}
		if r.star {
			return a.starInExpr(x.ColumnRef, sc)
		}
		if r.idx != nil && what != "" {
			return a.indexRef(r.idx, x.ColumnRef.Location)
		}
		if r.phi() && what != "" {
			return a.reject(r.col, x.ColumnRef.Location, what)
		}
		if r.phi() && what == "" {
			return a.reject(r.col, x.ColumnRef.Location, "using the value as a boolean")
		}
		return nil
	case *pg.Node_ParamRef:
		a.useParam(x.ParamRef, role{}, int(x.ParamRef.Location), 0, false)
		return nil
	case *pg.Node_BoolExpr:
		for _, arg := range x.BoolExpr.Args {
			if err := a.expr(arg, sc, ""); err != nil {
				return err
			}
		}
		return nil
	case *pg.Node_AExpr:
		return a.aExpr(x.AExpr, sc)
	case *pg.Node_NullTest:
		if cr := x.NullTest.Arg.GetColumnRef(); cr != nil {
			r, err := a.resolve(cr, sc)
			if err != nil {
				return err
			}
			if r.phi() || r.idx != nil {
				return nil // NULL stays NULL: ciphertext of a NULL is NULL
			}
		}
		return a.expr(x.NullTest.Arg, sc, "IS NULL on an expression")
	case *pg.Node_FuncCall:
		return a.funcCall(x.FuncCall, sc)
	case *pg.Node_TypeCast:
		return a.expr(x.TypeCast.Arg, sc, "a cast")
	case *pg.Node_SubLink:
		return a.subLink(x.SubLink, sc, what)
	case *pg.Node_SelectStmt:
		_, err := a.selectStmt(x.SelectStmt, sc)
		return err
	case *pg.Node_AConst:
		return nil
	case *pg.Node_RangeVar:
		_, err := a.rangeVarTable(x.RangeVar, sc)
		return err
	}
	return a.children(n, sc, describe(n))
}

// starInExpr rejects p.* (or *) inside an expression, ROW(p.*), f(p.*),
// (p.*).col: it is a whole-row value of p. Only a top-level target list
// expands a `*` column by column (targets, returning).
func (a *analyzer) starInExpr(cr *pg.ColumnRef, sc *scope) error {
	var qual []string
	for _, f := range cr.Fields {
		if s := f.GetString_(); s != nil {
			qual = append(qual, s.Sval)
		}
	}
	if len(qual) == 0 {
		if sc != nil {
			for _, e := range sc.entries {
				if e.carriesPHI() {
					return a.wholeRow(e, cr.Location)
				}
			}
		}
		return nil
	}
	if e := wholeRowEntry(sc, qual); e != nil {
		return a.wholeRow(e, cr.Location)
	}
	return nil
}

func (a *analyzer) indexRef(idx *policy.Column, loc int32) error {
	var names []string
	for _, ix := range idx.Indexes() {
		names = append(names, ix.Column)
	}
	if len(names) > 1 {
		return a.errorf(idx, loc, "blind-index columns %s of %s are maintained by phiproxy: compare, write or compute on %s itself (%s)",
			strings.Join(names, ", "), idx.QualifiedName(), idx.Name, supported)
	}
	return a.errorf(idx, loc, "blind-index column %s of %s is maintained by phiproxy: compare, write or compute on %s itself (%s)",
		strings.Join(names, ", "), idx.QualifiedName(), idx.Name, supported)
}

// children walks every node below n that expr has no rule for, so a new or
// rare node type can never hide a PHI column: it is found and rejected.
func (a *analyzer) children(n *pg.Node, sc *scope, what string) error {
	var err error
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if err != nil {
				return false
			}
			if fd.Kind() != protoreflect.MessageKind {
				return true
			}
			each := func(mv protoreflect.Message) {
				if node, ok := mv.Interface().(*pg.Node); ok {
					err = a.expr(node, sc, what)
					return
				}
				visit(mv)
			}
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len() && err == nil; i++ {
					each(l.Get(i).Message())
				}
			} else if !fd.IsMap() {
				each(v.Message())
			}
			return err == nil
		})
	}
	inner := n.ProtoReflect().WhichOneof(n.ProtoReflect().Descriptor().Oneofs().Get(0))
	if inner == nil {
		return nil
	}
	visit(n.ProtoReflect().Get(inner).Message())
	return err
}

// describe names a node for a rejection message.
func describe(n *pg.Node) string {
	switch x := n.Node.(type) {
	case *pg.Node_CaseExpr:
		return "CASE"
	case *pg.Node_CoalesceExpr:
		return "COALESCE"
	case *pg.Node_MinMaxExpr:
		return "GREATEST/LEAST"
	case *pg.Node_RowExpr:
		return "a row comparison"
	case *pg.Node_AIndirection:
		return "subscripting"
	case *pg.Node_CollateClause:
		return "COLLATE"
	case *pg.Node_BooleanTest:
		return "IS TRUE/FALSE"
	case *pg.Node_AArrayExpr:
		return "ARRAY[...]"
	case *pg.Node_SortBy:
		return "ORDER BY"
	case *pg.Node_FuncCall:
		return "function " + funcName(x.FuncCall) + "()"
	}
	return "an expression (" + oneofName(n) + ")"
}

func funcName(f *pg.FuncCall) string {
	var parts []string
	for _, n := range f.Funcname {
		if s := n.GetString_(); s != nil {
			parts = append(parts, s.Sval)
		}
	}
	return strings.Join(parts, ".")
}

func opName(names []*pg.Node) string {
	if len(names) == 0 {
		return ""
	}
	if s := names[len(names)-1].GetString_(); s != nil {
		return s.Sval
	}
	return ""
}

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
	if col.Base != nil {
		return nil, a.viewColumnError(col, loc, what)
	}
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

func (a *analyzer) funcCall(f *pg.FuncCall, sc *scope) error {
	if err := a.sqlFunction(f); err != nil {
		return err
	}
	name := strings.ToLower(funcName(f))
	if (name == "count" || name == "pg_catalog.count") && len(f.Args) == 1 && !f.AggDistinct && f.Over == nil && len(f.AggOrder) == 0 {
		if cr := f.Args[0].GetColumnRef(); cr != nil {
			r, err := a.resolve(cr, sc)
			if err != nil {
				return err
			}
			if r.phi() || r.idx != nil {
				// count(col) counts non-NULL values: the same on ciphertext.
				return a.expr(f.AggFilter, sc, "")
			}
		}
	}
	what := "function " + funcName(f) + "()"
	if f.AggDistinct {
		what = "DISTINCT in " + what
	}
	for _, arg := range f.Args {
		if err := a.expr(arg, sc, what); err != nil {
			return err
		}
	}
	for _, o := range f.AggOrder {
		if err := a.expr(o, sc, "ORDER BY in "+what); err != nil {
			return err
		}
	}
	if err := a.expr(f.AggFilter, sc, ""); err != nil {
		return err
	}
	if f.Over != nil {
		return a.windowDef(f.Over, sc)
	}
	return nil
}

func (a *analyzer) windowDef(w *pg.WindowDef, sc *scope) error {
	for _, p := range w.PartitionClause {
		if err := a.expr(p, sc, "window PARTITION BY"); err != nil {
			return err
		}
	}
	for _, o := range w.OrderClause {
		if err := a.expr(o, sc, "window ORDER BY"); err != nil {
			return err
		}
	}
	if err := a.expr(w.StartOffset, sc, "window frame"); err != nil {
		return err
	}
	return a.expr(w.EndOffset, sc, "window frame")
}

// subLink handles EXISTS, IN/ANY/ALL (SELECT ...) and scalar subqueries.
func (a *analyzer) subLink(s *pg.SubLink, sc *scope, what string) error {
	sel := s.Subselect.GetSelectStmt()
	if sel == nil {
		return a.children(&pg.Node{Node: &pg.Node_SubLink{SubLink: s}}, sc, "a subquery")
	}
	out, err := a.selectStmt(sel, sc)
	if err != nil {
		return err
	}
	switch s.SubLinkType {
	case pg.SubLinkType_EXISTS_SUBLINK:
		return nil
	case pg.SubLinkType_ANY_SUBLINK, pg.SubLinkType_ALL_SUBLINK:
		op := opName(s.OperName)
		if op == "" {
			op = "="
		}
		l, err := a.phiOperand(s.Testexpr, sc)
		if err != nil {
			return err
		}
		var rcol *policy.Column
		var rref *pg.ColumnRef
		if len(out.cols) == 1 && len(out.stars) == 0 {
			rcol, rref = out.cols[0].col, out.cols[0].ref
		} else if col := out.firstPHI(); col != nil {
			return a.reject(col, s.Location, "a multi-column or * IN (SELECT ...)")
		}
		for _, o := range out.cols {
			if o.col != nil && o.col != rcol {
				return a.reject(o.col, s.Location, "a multi-column IN (SELECT ...)")
			}
		}
		if !l.phi() && rcol == nil {
			return a.expr(s.Testexpr, sc, "IN (SELECT ...)")
		}
		if !l.phi() {
			return a.errorf(rcol, s.Location, "comparing PHI column %s with a non-PHI value is not supported (%s)", rcol.QualifiedName(), supported)
		}
		if rcol == nil {
			return a.errorf(l.col, s.Location, "comparing PHI column %s with a non-PHI subquery output is not supported (%s)", l.col.QualifiedName(), supported)
		}
		if op != "=" && op != "<>" && op != "!=" {
			return a.reject(l.col, s.Location, "operator "+op+" with a subquery")
		}
		li, err := a.indexable(l, s.Location, "IN (SELECT ...)")
		if err != nil {
			return err
		}
		if rref == nil || !l.col.SameIndex(rcol) {
			return a.errorf(l.col, s.Location, "IN (SELECT ...) between %s and %s needs both in one index_group, selected directly from the table", l.col.QualifiedName(), rcol.QualifiedName())
		}
		ri, err := a.exactIndex(rcol, s.Location, "IN (SELECT ...)")
		if err != nil {
			return err
		}
		if err := a.toIndex(s.Testexpr.GetColumnRef(), l.col, li); err != nil {
			return err
		}
		a.noteUse(l.col, ActionIndex)
		a.noteUse(rcol, ActionIndex)
		return a.toIndex(rref, rcol, ri)
	}
	if col := out.firstPHI(); col != nil {
		return a.reject(col, s.Location, "returning it from a scalar or ARRAY subquery")
	}
	return a.expr(s.Testexpr, sc, "a subquery comparison")
}
