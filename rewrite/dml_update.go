package rewrite

import (
	"slices"
	"sort"
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// UPDATE and DELETE, and what INSERT shares with them (dml.go): SET lists
// (also ON CONFLICT DO UPDATE SET) and a PHI column set from another,
// RETURNING, and the target columns of a statement.

// replaceName replaces the first identifier token equal to name, inside the
// parentheses that start at or after byte offset from, by repl.
func (a *analyzer) replaceName(from int32, name, repl string, col *policy.Column) error {
	ts, err := a.tokens()
	if err != nil {
		return err
	}
	depth := 0
	for i := range ts {
		if ts[i].start < int(from) {
			continue
		}
		switch ts[i].kind {
		case pg.Token_ASCII_40:
			depth++
			continue
		case pg.Token_ASCII_41:
			depth--
			if depth <= 0 {
				return a.errorf(col, from, "cannot locate %s in ON CONFLICT", col.QualifiedName())
			}
			continue
		}
		if depth > 0 && ts[i].word() && identText(a.sql[ts[i].start:ts[i].end]) == name {
			a.addEditFor(col, ts[i].start, ts[i].end, text(quoteIdent(repl)))
			return nil
		}
	}
	return a.errorf(col, from, "cannot locate %s in ON CONFLICT", col.QualifiedName())
}

// identText returns the name an identifier token stands for.
func identText(tok string) string {
	if strings.HasPrefix(tok, `"`) && strings.HasSuffix(tok, `"`) && len(tok) >= 2 {
		return strings.ReplaceAll(tok[1:len(tok)-1], `""`, `"`)
	}
	return strings.ToLower(tok)
}

// setList handles UPDATE SET and ON CONFLICT DO UPDATE SET: PHI values are
// encrypted and the blind index is assigned in step.
func (a *analyzer) setList(list []*pg.Node, t *policy.Table, sc *scope) error {
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if t != nil {
			if err := a.targetColumn(t, rt); err != nil {
				return err
			}
			if idx := t.IndexColumn(rt.Name); idx != nil {
				return a.indexRef(idx, rt.Name, rt.Location)
			}
		}
		col := t.Column(rt.Name)
		if mar := rt.Val.GetMultiAssignRef(); mar != nil {
			if col != nil {
				return a.reject(col, rt.Location, "SET (a, b) = (...)")
			}
			if mar.Colno == 1 {
				if err := a.expr(mar.Source, sc, "a multiple-column assignment"); err != nil {
					return err
				}
			}
			continue
		}
		if col == nil {
			if err := a.expr(rt.Val, sc, "copying it into non-PHI column "+rt.Name); err != nil {
				return err
			}
			continue
		}
		if len(rt.Indirection) > 0 {
			return a.reject(col, rt.Location, "assigning to an element or field")
		}
		if cr := rt.Val.GetColumnRef(); cr != nil {
			if err := a.copyColumn(cr, col, sc); err != nil {
				return err
			}
			continue
		}
		v, err := a.valueOf(rt.Val, col, "SET")
		if err != nil {
			return err
		}
		tg, err := a.targetAfter(int(rt.Location), col)
		if err != nil {
			return err
		}
		a.bind(v, role{action: ActionEncrypt, col: col}, assignAt{target: tg})
		// Every index of the column follows the value, after the
		// parentheses around it, if any: the slot of a literal value
		// itself ends inside them.
		end := a.unparen(v.start, v.end)
		for _, ix := range col.Indexes() {
			a.addEdit(end, end, text(", "+quoteIdent(ix.Column)+" = "), a.added(v, col, ix))
		}
	}
	return nil
}

// copyColumn handles SET col = other where other is a PHI column bound to
// the same associated data (EXCLUDED.col, or the column itself): the
// ciphertext moves unchanged and the index follows.
func (a *analyzer) copyColumn(cr *pg.ColumnRef, col *policy.Column, sc *scope) error {
	r, err := a.resolve(cr, sc)
	if err != nil {
		return err
	}
	if r.idx != nil {
		return a.indexRef(r.idx, refName(cr), cr.Location)
	}
	if r.col == nil || r.derived || r.col.AssociatedData != col.AssociatedData || !sameIndexes(col, r.col) {
		return a.errorf(col, cr.Location, "assigning another column's value to PHI column %s is not supported: only a parameter, a literal, NULL, DEFAULT or the same column (EXCLUDED.%s) can be assigned", col.QualifiedName(), col.Name)
	}
	if len(col.Indexes()) == 0 {
		return nil
	}
	ts, err := a.tokens()
	if err != nil {
		return err
	}
	i := ts.at(int(cr.Location))
	last := i + 2*(len(cr.Fields)-1)
	if i < 0 || last >= len(ts) {
		return a.errorf(col, cr.Location, "cannot locate the column reference")
	}
	qual := a.sql[ts[i].start:ts[last].start]
	end := a.unparen(ts[i].start, ts[last].end)
	from := r.col.Indexes()
	for k, ix := range col.Indexes() {
		a.addEdit(end, end, text(", "+quoteIdent(ix.Column)+" = "+qual+quoteIdent(from[k].Column)))
	}
	return nil
}

// sameIndexes reports whether a and b have the same blind indexes, in the
// same order, computing the same values (same key: group, normalizers,
// bits and v1 form), so that copying b's index columns into a's keeps a's
// indexes right.
func sameIndexes(a, b *policy.Column) bool {
	x, y := a.Indexes(), b.Indexes()
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i].Group != y[i].Group || x[i].Bits != y[i].Bits || x[i].V1 != y[i].V1 || !slices.Equal(x[i].Normalize, y[i].Normalize) {
			return false
		}
	}
	return true
}

// returning analyzes a RETURNING list and records its PHI columns.
func (a *analyzer) returning(list []*pg.Node, sc *scope, t *policy.Table) (*derived, error) {
	d, err := a.targets(list, sc, "an expression in RETURNING")
	if err != nil {
		return nil, err
	}
	idx := 0
	for _, n := range list {
		if idx < 0 {
			break
		}
		rt := n.GetResTarget()
		cr := rt.GetVal().GetColumnRef()
		if cr == nil {
			idx++
			continue
		}
		r, err := a.resolve(cr, sc)
		if err != nil {
			return nil, err
		}
		if !r.star {
			if r.col != nil {
				a.stmt.Returning = append(a.stmt.Returning, ResultColumn{Index: idx, Column: r.col})
			}
			idx++
			continue
		}
		if t == nil {
			idx = -1
			continue
		}
		cols, ok := a.catalogColumns(t.Schema, t.Name)
		if !ok {
			idx = -1
			continue
		}
		for _, c := range cols {
			if col := t.Column(c); col != nil {
				a.stmt.Returning = append(a.stmt.Returning, ResultColumn{Index: idx, Column: col})
			}
			idx++
		}
	}
	return d, nil
}

func (a *analyzer) updateStmt(s *pg.UpdateStmt, parent *scope) (*derived, error) {
	sc, target, err := a.dmlScope(s.WithClause, s.Relation, s.FromClause, parent)
	if err != nil {
		return nil, err
	}
	if err := a.setList(s.TargetList, target.table, sc); err != nil {
		return nil, err
	}
	if err := a.expr(s.WhereClause, sc, ""); err != nil {
		return nil, err
	}
	return a.returning(s.ReturningList, sc, target.table)
}

func (a *analyzer) deleteStmt(s *pg.DeleteStmt, parent *scope) (*derived, error) {
	sc, target, err := a.dmlScope(s.WithClause, s.Relation, s.UsingClause, parent)
	if err != nil {
		return nil, err
	}
	if err := a.expr(s.WhereClause, sc, ""); err != nil {
		return nil, err
	}
	return a.returning(s.ReturningList, sc, target.table)
}

// dmlScope is the scope of an UPDATE or DELETE: its CTEs, its target table
// and the tables of its FROM (USING) list.
func (a *analyzer) dmlScope(with *pg.WithClause, rel *pg.RangeVar, from []*pg.Node, parent *scope) (*scope, *rangeEntry, error) {
	sc := &scope{parent: parent}
	if err := a.withClause(with, sc); err != nil {
		return nil, nil, err
	}
	target, err := a.targetEntry(rel, sc)
	if err != nil {
		return nil, nil, err
	}
	sc.entries = append(sc.entries, target)
	for _, f := range from {
		if err := a.fromItem(f, sc); err != nil {
			return nil, nil, err
		}
	}
	return sc, target, nil
}

// bareItem reports whether the value of item i of a VALUES row or SELECT
// list is written without parentheses of its own, so that text inserted
// after it lands in the row, not inside the value.
func (a *analyzer) bareItem(v val, i int) bool {
	ts := a.toks
	j := ts.at(v.start)
	if j < 1 {
		return false
	}
	prev := ts[j-1].kind
	if i > 0 {
		return prev == pg.Token_ASCII_44
	}
	if prev == pg.Token_SELECT {
		return true
	}
	return prev == pg.Token_ASCII_40 && j >= 2 && (ts[j-2].kind == pg.Token_VALUES || ts[j-2].kind == pg.Token_ASCII_44)
}

// unparen returns the end of the value [start,end) including parentheses
// that enclose exactly it: SET col = ((x)).
func (a *analyzer) unparen(start, end int) int {
	ts := a.toks
	i := ts.at(start)
	j := sort.Search(len(ts), func(k int) bool { return ts[k].start >= end })
	for i > 0 && j < len(ts) && ts[i-1].kind == pg.Token_ASCII_40 && ts[j].kind == pg.Token_ASCII_41 && ts.matching(i-1) == j {
		end = ts[j].end
		i, j = i-1, j+1
	}
	return end
}

// targetColumn refuses an INSERT or UPDATE target column of policy table t
// that phiproxy cannot place: a name the table does not have (a typo,
// "City", MySQL-style patients.city or p.city, which PostgreSQL reads as
// column patients or p with a field), or a field or element of a PHI
// column. PostgreSQL would reject the statement too, but only after
// log_statement had logged its text with the plaintext value: the refusal
// comes before anything is sent, as 42703 with PostgreSQL's message when
// the Catalog lists the table's columns. Without the Catalog a target
// whose field is named like a PHI column, or whose name is a PHI column's
// in other letter case, is refused (0A000).
func (a *analyzer) targetColumn(t *policy.Table, rt *pg.ResTarget) error {
	name := rt.GetName()
	if col := t.Column(name); col != nil && len(rt.Indirection) > 0 {
		return a.reject(col, rt.Location, "assigning to an element or field")
	}
	if cols, ok := a.catalogColumns(t.Schema, t.Name); ok {
		if contains(cols, name) {
			return nil
		}
		e := a.tableError(t, rt.Location, "column %s of relation %s does not exist", quoteName(name), quoteName(t.Name))
		e.Code = CodeUndefinedColumn
		return e
	}
	for _, n := range rt.Indirection {
		if f := n.GetString_(); f != nil {
			if pc, ok := columnOf(t, f.Sval); ok {
				return a.errorf(pc.col, rt.Location, "target column %s with field %s of PHI table %s is not supported: write %s by its name alone, unqualified (SET col = ..., INSERT INTO t (col))", name, f.Sval, t.QualifiedName(), pc)
			}
		}
	}
	for _, c := range t.Columns {
		if c.Name != name && strings.EqualFold(c.Name, name) {
			return a.errorf(c, rt.Location, "target column %s of PHI table %s is not a column phiproxy knows (PHI column %s is spelled %s): write the column's exact name", quoteName(name), t.QualifiedName(), c.QualifiedName(), c.Name)
		}
	}
	return nil
}

// quoteName is name in double quotes, as PostgreSQL's messages write it.
func quoteName(name string) string {
	return `"` + name + `"`
}
