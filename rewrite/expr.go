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
			return a.indexRef(r.idx, refName(x.ColumnRef), x.ColumnRef.Location)
		}
		if r.phi() && what != "" {
			return a.reject(r.col, x.ColumnRef.Location, what)
		}
		if r.phi() && what == "" {
			return a.reject(r.col, x.ColumnRef.Location, "using the value as a boolean")
		}
		return nil
	case *pg.Node_ParamRef:
		a.useParam(x.ParamRef, role{}, int(x.ParamRef.Location), 0, false, assignAt{})
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
			if r.idx != nil {
				// The client names no internal column, even where it
				// would reveal nothing: col IS NULL says the same.
				return a.indexRef(r.idx, refName(cr), cr.Location)
			}
			if r.phi() {
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

// indexRef refuses a client's use of name, a blind-index column of PHI
// column idx, anywhere (a select list, RETURNING, WHERE, SET, an INSERT
// column list): its values are phiproxy's, computed from the PHI value,
// so a client may neither read them (they are hidden from SELECT *) nor
// write or compare them (a forged index value would match rows the
// client never named). 0A000 like every use of a PHI column the proxy
// does not support: no privilege would make it allowed.
func (a *analyzer) indexRef(idx *policy.Column, name string, loc int32) error {
	if name == "" {
		name = idx.Indexes()[0].Column
	}
	e := a.errorf(idx, loc, "column %s is internal to phiproxy: it holds a blind index of PHI column %s",
		quoteIdent(name), idx.QualifiedName())
	e.HintText = "Select, compare and write " + quoteIdent(idx.Name) + " itself: phiproxy computes its blind indexes."
	return e
}

// refName is the column name a reference ends with ("" for a star).
func refName(cr *pg.ColumnRef) string {
	if len(cr.Fields) == 0 {
		return ""
	}
	if s := cr.Fields[len(cr.Fields)-1].GetString_(); s != nil {
		return s.Sval
	}
	return ""
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
			if r.idx != nil {
				return a.indexRef(r.idx, refName(cr), cr.Location)
			}
			if r.phi() {
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
			return a.errorf(rcol, s.Location, "comparing PHI column %s with a non-PHI value is not supported", rcol.QualifiedName()).hint(supported)
		}
		if rcol == nil {
			return a.errorf(l.col, s.Location, "comparing PHI column %s with a non-PHI subquery output is not supported", l.col.QualifiedName()).hint(supported)
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
