package rewrite

import (
	"fmt"
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// This file checks, on the parse tree of a rewritten statement, that no PHI
// column is compared with, assigned, or inserted from a value the plan does
// not encrypt or index. It is deliberately independent of the analyzer: it
// recognizes PHI and blind-index columns by name, which errs towards
// reporting.

const (
	markEncrypt = "'__slot_encrypt__'"
	markIndex   = "'__slot_index__"
)

// indexMark is the mark of a literal indexed for the index column col.
func indexMark(col string) string { return markIndex + ":" + col + "'" }

// indexColumnOf is the column of the index a value is computed for.
func indexColumnOf(c *policy.Column, ix *policy.BlindIndex) string {
	if ix == nil {
		ix = c.BlindIndex
	}
	if ix == nil {
		return ""
	}
	return ix.Column
}

func violations(_ string, plan *Plan, pol *policy.Policy) string {
	if plan.Passthrough {
		return ""
	}
	filled, err := fillTemplate(plan, func(l Literal) string {
		if l.Action == ActionEncrypt {
			return markEncrypt
		}
		return indexMark(indexColumnOf(l.Column, l.Index))
	})
	if err != nil {
		return err.Error()
	}
	tree, err := pg.Parse(filled)
	if err != nil {
		return "rewritten SQL does not parse: " + err.Error()
	}
	for _, raw := range tree.Stmts {
		v := &checker{plan: plan, pol: pol, policyNames: map[string]*policy.Table{}, bare: map[*policy.Table]bool{}, otherNames: map[string]bool{}}
		v.collect(raw.Stmt.ProtoReflect())
		v.walk(raw.Stmt.ProtoReflect())
		if v.err != "" {
			return v.err
		}
	}
	return ""
}

type checker struct {
	plan        *Plan
	pol         *policy.Policy
	policyNames map[string]*policy.Table // alias or name -> policy table
	bare        map[*policy.Table]bool   // unused: see levels
	levels      [][]*policy.Table        // policy tables in scope, per query level
	otherNames  map[string]bool
	err         string
}

func (v *checker) fail(format string, args ...any) {
	if v.err == "" {
		v.err = fmt.Sprintf(format, args...)
	}
}

func each(m protoreflect.Message, fn func(protoreflect.Message)) {
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				fn(l.Get(i).Message())
			}
		} else {
			fn(val.Message())
		}
		return true
	})
}

func (v *checker) collect(m protoreflect.Message) {
	if ins, ok := m.Interface().(*pg.InsertStmt); ok && ins.Relation != nil {
		// An INSERT target is not in scope of its VALUES; only qualified
		// references (ON CONFLICT, RETURNING) reach it here.
		v.register(ins.Relation, false)
		each(m, func(c protoreflect.Message) {
			if c.Interface() != ins.Relation {
				v.collect(c)
			}
		})
		return
	}
	if rv, ok := m.Interface().(*pg.RangeVar); ok {
		v.register(rv, true)
		return
	}
	each(m, v.collect)
}

func (v *checker) register(rv *pg.RangeVar, bare bool) {
	{
		var t *policy.Table
		if rv.Schemaname != "" {
			t = v.pol.Table(rv.Schemaname, rv.Relname)
		} else if ts := v.pol.TablesNamed(rv.Relname); len(ts) > 0 {
			t = ts[0]
		}
		name := rv.Relname
		if rv.Alias != nil {
			name = rv.Alias.Aliasname
		}
		if t != nil {
			v.policyNames[name] = t
			v.policyNames[rv.Relname] = t
			v.policyNames["excluded"] = t
			if bare {
				v.bare[t] = true
			}
		} else {
			v.otherNames[name] = true
		}
	}
}

// classify says whether a column reference may name a PHI column (phi) or
// a blind-index column (idx) of a policy table in this statement.
func (v *checker) classify(cr *pg.ColumnRef) (phi, idx *policy.Column) {
	var names []string
	for _, f := range cr.Fields {
		if s := f.GetString_(); s != nil {
			names = append(names, s.Sval)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	col := names[len(names)-1]
	var tables []*policy.Table
	if len(names) >= 3 {
		if t := v.pol.Table(names[len(names)-3], names[len(names)-2]); t != nil {
			tables = append(tables, t)
		}
	} else if len(names) == 2 {
		q := names[len(names)-2]
		if t := v.policyNames[q]; t != nil && !v.otherNames[q] {
			tables = append(tables, t)
		}
	} else {
		for _, l := range v.levels {
			tables = append(tables, l...)
		}
	}
	for _, t := range tables {
		if c := t.Column(col); c != nil {
			return c, nil
		}
		if c := t.IndexColumn(col); c != nil {
			return nil, c
		}
	}
	return nil, nil
}

func stripCasts(n *pg.Node) *pg.Node {
	for n != nil && n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	return n
}

// valueOK reports whether n is a value the proxy transforms with action (or
// NULL/DEFAULT), so that no plaintext reaches the server. An index value
// must be computed for the index column idxCol it meets ("" when unknown):
// an index of another column, or of another of the column's indexes,
// would compare or store a value of another key or normalization.
func (v *checker) valueOK(n *pg.Node, action Action, array bool, idxCol string) bool {
	n = stripCasts(n)
	if n == nil {
		return true
	}
	switch x := n.Node.(type) {
	case *pg.Node_ParamRef:
		i := int(x.ParamRef.Number) - 1
		if i < 0 || i >= len(v.plan.Params) || v.plan.Params[i].Array != array {
			return false
		}
		p := v.plan.Params[i]
		if action == ActionEncrypt {
			return p.Action == ActionEncrypt
		}
		return (p.Action == ActionIndex || p.Action == ActionIndexNormalized) &&
			(idxCol == "" || indexColumnOf(p.Column, p.Index) == idxCol)
	case *pg.Node_AConst:
		if x.AConst.Isnull {
			return true
		}
		s := x.AConst.GetSval()
		if s == nil {
			return false
		}
		if action == ActionEncrypt {
			return "'"+s.Sval+"'" == markEncrypt
		}
		if idxCol == "" {
			return strings.HasPrefix("'"+s.Sval, markIndex+":")
		}
		return "'"+s.Sval+"'" == indexMark(idxCol)
	case *pg.Node_SetToDefault:
		return true
	case *pg.Node_AArrayExpr:
		for _, e := range x.AArrayExpr.Elements {
			if !v.valueOK(e, action, false, idxCol) {
				return false
			}
		}
		return true
	}
	return false
}

// lastName is the column name of a column reference.
func lastName(cr *pg.ColumnRef) string {
	if len(cr.Fields) == 0 {
		return ""
	}
	if s := cr.Fields[len(cr.Fields)-1].GetString_(); s != nil {
		return s.Sval
	}
	return ""
}

// fromTables returns the policy tables named directly in a FROM list.
func (v *checker) fromTables(list []*pg.Node, extra *pg.RangeVar) []*policy.Table {
	var out []*policy.Table
	add := func(rv *pg.RangeVar) {
		if rv == nil {
			return
		}
		if rv.Schemaname != "" {
			if t := v.pol.Table(rv.Schemaname, rv.Relname); t != nil {
				out = append(out, t)
			}
		} else {
			out = append(out, v.pol.TablesNamed(rv.Relname)...)
		}
	}
	add(extra)
	var from func(n *pg.Node)
	from = func(n *pg.Node) {
		if rv := n.GetRangeVar(); rv != nil {
			add(rv)
		}
		if j := n.GetJoinExpr(); j != nil {
			from(j.Larg)
			from(j.Rarg)
		}
	}
	for _, n := range list {
		from(n)
	}
	return out
}

func (v *checker) walk(m protoreflect.Message) {
	var level []*policy.Table
	pushed := true
	switch x := m.Interface().(type) {
	case *pg.SelectStmt:
		level = v.fromTables(x.FromClause, nil)
	case *pg.UpdateStmt:
		level = v.fromTables(x.FromClause, x.Relation)
	case *pg.DeleteStmt:
		level = v.fromTables(x.UsingClause, x.Relation)
	case *pg.OnConflictClause:
		level = v.fromTables(nil, nil)
	default:
		pushed = false
	}
	if pushed {
		v.levels = append(v.levels, level)
		defer func() { v.levels = v.levels[:len(v.levels)-1] }()
	}
	switch x := m.Interface().(type) {
	case *pg.A_Expr:
		v.aExpr(x)
	case *pg.InsertStmt:
		v.insert(x)
	case *pg.UpdateStmt:
		v.set(x.TargetList)
	case *pg.OnConflictClause:
		v.set(x.TargetList)
	}
	each(m, v.walk)
}

func (v *checker) aExpr(e *pg.A_Expr) {
	var operands []*pg.Node
	for _, side := range []*pg.Node{e.Lexpr, e.Rexpr} {
		if l := side.GetList(); l != nil {
			operands = append(operands, l.Items...)
		} else if side != nil {
			operands = append(operands, side)
		}
	}
	hasIdx := false
	idxCol := ""
	for _, o := range operands {
		if cr := stripCasts(o).GetColumnRef(); cr != nil {
			phi, idx := v.classify(cr)
			if phi != nil {
				v.fail("PHI column %s is compared in the rewritten SQL", phi.QualifiedName())
			}
			if idx != nil {
				if hasIdx && idxCol != lastName(cr) {
					if _, a := idx.Table.Index(idxCol); a != nil {
						_, b := idx.Table.Index(lastName(cr))
						if b != nil && (a.Exact() != b.Exact() || strings.Join(a.Normalize, ",") != strings.Join(b.Normalize, ",")) {
							v.fail("blind-index columns %s and %s of different normalizations are compared", idxCol, lastName(cr))
						}
					}
				}
				hasIdx, idxCol = true, lastName(cr)
			}
		}
	}
	if !hasIdx {
		return
	}
	array := e.Kind == pg.A_Expr_Kind_AEXPR_OP_ANY || e.Kind == pg.A_Expr_Kind_AEXPR_OP_ALL
	for _, o := range operands {
		if stripCasts(o).GetColumnRef() != nil {
			continue
		}
		isArr := array && stripCasts(o).GetAArrayExpr() == nil
		if !v.valueOK(o, ActionIndex, isArr, idxCol) {
			v.fail("a blind-index column is compared with a value the plan does not index")
		}
	}
}

func (v *checker) insert(s *pg.InsertStmt) {
	t := v.policyNames[s.Relation.GetRelname()]
	if t == nil || s.SelectStmt == nil {
		return
	}
	sel := s.SelectStmt.GetSelectStmt()
	rows := valueRows(sel)
	if len(s.Cols) == 0 {
		width := len(sel.GetTargetList())
		for _, r := range rows {
			width = max(width, len(r))
		}
		if width > 0 {
			v.fail("INSERT into %s without a column list", t.QualifiedName())
		}
		return
	}
	for i, c := range s.Cols {
		name := c.GetResTarget().GetName()
		action := ActionNone
		if t.Column(name) != nil {
			action = ActionEncrypt
		} else if t.IsIndexColumn(name) {
			action = ActionIndex
		}
		if action == ActionNone {
			continue
		}
		if rows == nil {
			v.fail("INSERT ... SELECT into %s.%s", t.QualifiedName(), name)
			return
		}
		for _, r := range rows {
			if i < len(r) && !v.valueOK(r[i], action, false, name) {
				v.fail("INSERT writes a value the plan does not %s into %s.%s", actionNames[action], t.QualifiedName(), name)
			}
		}
	}
}

func (v *checker) set(list []*pg.Node) {
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		for _, t := range v.policyNames {
			action := ActionNone
			if t.Column(rt.Name) != nil {
				action = ActionEncrypt
			} else if t.IsIndexColumn(rt.Name) {
				action = ActionIndex
			}
			if action == ActionNone {
				continue
			}
			if cr := rt.Val.GetColumnRef(); cr != nil {
				phi, idx := v.classify(cr)
				if (action == ActionEncrypt && phi != nil && phi.Name == rt.Name) || (action == ActionIndex && idx != nil) {
					continue
				}
			}
			idxCol := ""
			if action == ActionIndex {
				idxCol = rt.Name
			}
			if !v.valueOK(rt.Val, action, false, idxCol) {
				v.fail("SET writes a value the plan does not %s into %s", actionNames[action], rt.Name)
			}
		}
	}
}
