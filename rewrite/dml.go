package rewrite

import (
	"sort"
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// targetEntry is the scope entry of a DML statement's target table.
func (a *analyzer) targetEntry(rv *pg.RangeVar, sc *scope) (*rangeEntry, error) {
	e := &rangeEntry{name: rv.Relname, schema: rv.Schemaname, rel: rv.Relname}
	if rv.Alias != nil {
		e.name = rv.Alias.Aliasname
	}
	t, err := a.rangeVarTable(rv, nil)
	if err != nil {
		return nil, err
	}
	if t != nil && t.View {
		return nil, a.viewWriteError(t, rv.Location)
	}
	e.table = t
	return e, nil
}

func (a *analyzer) insertStmt(s *pg.InsertStmt, parent *scope) (*derived, error) {
	sc := &scope{parent: parent}
	if err := a.withClause(s.WithClause, sc); err != nil {
		return nil, err
	}
	target, err := a.targetEntry(s.Relation, sc)
	if err != nil {
		return nil, err
	}
	t := target.table
	sel := s.SelectStmt.GetSelectStmt()
	rows := valueRows(sel)
	setWidth := -1
	if t != nil && sel != nil {
		if setWidth, err = a.insertWidth(t, sel, rows); err != nil {
			return nil, err
		}
	}

	// The column list, explicit or expanded from the catalog, and where
	// each PHI column's name ends in it.
	var names []string
	var targets map[string]*assignTarget
	for _, c := range s.Cols {
		rt := c.GetResTarget()
		names = append(names, rt.GetName())
		if t == nil {
			continue
		}
		if err := a.targetColumn(t, rt); err != nil {
			return nil, err
		}
		if idx := t.IndexColumn(rt.GetName()); idx != nil {
			return nil, a.indexRef(idx, rt.GetName(), rt.Location)
		}
		if col := t.Column(rt.GetName()); col != nil && len(rt.Indirection) > 0 {
			return nil, a.reject(col, rt.Location, "assigning to an element or field")
		}
	}
	if t != nil && len(s.Cols) == 0 && sel != nil {
		width := 0
		for _, r := range rows {
			width = max(width, len(r))
		}
		if rows == nil {
			width = len(sel.TargetList)
			if setWidth >= 0 {
				width = setWidth
			}
		}
		if targets, err = a.expandColumns(s.Relation, t, width, &names); err != nil {
			return nil, err
		}
	} else if t != nil {
		if targets, err = a.addIndexColumns(s.Cols, t); err != nil {
			return nil, err
		}
	}

	switch {
	case sel == nil: // DEFAULT VALUES
	case t == nil || (rows == nil && !anyPHI(t, names)):
		d, err := a.selectStmt(sel, sc)
		if err != nil {
			return nil, err
		}
		if col := d.firstPHI(); col != nil {
			return nil, a.reject(col, -1, "INSERT ... SELECT copying it into another table or column")
		}
	case rows == nil:
		for _, n := range names {
			if col := t.Column(n); col != nil {
				return nil, a.reject(col, -1, "INSERT ... SELECT (it would copy plaintext or foreign ciphertext into the column; use VALUES with parameters or literals)")
			}
		}
	default:
		if err := a.withClause(sel.WithClause, sc); err != nil {
			return nil, err
		}
		if len(rows) > 1 && sel.WithClause == nil && a.rawStmt.GetInsertStmt() == s {
			a.noteValues(len(rows))
		}
		for i, row := range rows {
			if err := a.insertRow(row, names, t, sc, i, targets); err != nil {
				return nil, err
			}
		}
	}
	sc.entries = []*rangeEntry{target}
	if oc := s.OnConflictClause; oc != nil {
		if err := a.onConflict(oc, target, sc); err != nil {
			return nil, err
		}
	}
	return a.returning(s.ReturningList, sc, t)
}

// valueRows returns the rows of INSERT ... VALUES, or of INSERT ... SELECT
// v1, v2 with no FROM (the same thing), else nil.
func valueRows(sel *pg.SelectStmt) [][]*pg.Node {
	if sel == nil || sel.Op != pg.SetOperation_SETOP_NONE || len(sel.SortClause) > 0 || sel.LimitCount != nil || sel.LimitOffset != nil {
		return nil
	}
	if len(sel.ValuesLists) > 0 {
		rows := make([][]*pg.Node, len(sel.ValuesLists))
		for i, r := range sel.ValuesLists {
			rows[i] = r.GetList().GetItems()
		}
		return rows
	}
	if len(sel.FromClause) > 0 || sel.WhereClause != nil || len(sel.GroupClause) > 0 || sel.HavingClause != nil ||
		len(sel.DistinctClause) > 0 || len(sel.WindowClause) > 0 || sel.IntoClause != nil || len(sel.LockingClause) > 0 {
		return nil
	}
	row := make([]*pg.Node, 0, len(sel.TargetList))
	for _, n := range sel.TargetList {
		rt := n.GetResTarget()
		if rt == nil || rt.Val.GetColumnRef() != nil {
			return nil
		}
		row = append(row, rt.Val)
	}
	return [][]*pg.Node{row}
}

func anyPHI(t *policy.Table, names []string) bool {
	for _, n := range names {
		if t.Column(n) != nil {
			return true
		}
	}
	return false
}

// insertRow encrypts the PHI values of one row (the index-th) and adds
// their indexes.
func (a *analyzer) insertRow(row []*pg.Node, names []string, t *policy.Table, sc *scope, index int, targets map[string]*assignTarget) error {
	for i, v := range row {
		var col *policy.Column
		if i < len(names) {
			col = t.Column(names[i])
		}
		if col == nil {
			if err := a.expr(v, sc, "a VALUES list"); err != nil {
				return err
			}
			continue
		}
		val, err := a.valueOf(v, col, "INSERT")
		if err != nil {
			return err
		}
		if !a.bareItem(val, i) {
			return a.errorf(col, val.loc, "INSERT: write the value for PHI column %s without extra parentheses", col.QualifiedName())
		}
		a.bind(val, role{action: ActionEncrypt, col: col}, assignAt{target: targets[col.Name], row: index})
		for _, ix := range col.Indexes() {
			a.addEdit(val.end, val.end, text(", "), a.added(val, col, ix))
		}
	}
	return nil
}

// addIndexColumns adds each PHI column's blind-index columns (all of
// them, exact and normalized) right after it in an explicit INSERT column
// list, and returns where each PHI column's name ends.
func (a *analyzer) addIndexColumns(cols []*pg.Node, t *policy.Table) (map[string]*assignTarget, error) {
	targets := map[string]*assignTarget{}
	for _, c := range cols {
		rt := c.GetResTarget()
		col := t.Column(rt.GetName())
		if col == nil {
			continue
		}
		tg, err := a.targetAfter(int(rt.Location), col)
		if err != nil {
			return nil, err
		}
		targets[col.Name] = tg
		if len(col.Indexes()) > 0 {
			a.addEdit(tg.end, tg.end, text(indexList(col)))
		}
	}
	return targets, nil
}

// targetAfter records the place right after the column name that starts
// at byte loc (a SET target, an INSERT column-list entry).
func (a *analyzer) targetAfter(loc int, col *policy.Column) (*assignTarget, error) {
	ts, err := a.tokens()
	if err != nil {
		return nil, err
	}
	i := ts.at(loc)
	if i < 0 {
		return nil, a.errorf(col, int32(loc), "cannot locate column %s in the statement", col.QualifiedName())
	}
	tg := &assignTarget{end: ts[i].end}
	a.addEdit(tg.end, tg.end, piece{target: tg})
	return tg, nil
}

// indexList is ", idx1, idx2" for col's blind-index columns, in the order
// of col.Indexes (the order insertRow adds the values in); "" for none.
func indexList(col *policy.Column) string {
	var b strings.Builder
	for _, ix := range col.Indexes() {
		b.WriteString(", " + quoteIdent(ix.Column))
	}
	return b.String()
}

// expandColumns writes the column list of an INSERT that has none, from the
// catalog: the table's columns in order, without blind-index columns, as
// many as the widest row, each indexed PHI column followed by its indexes.
// It returns where each PHI column's name ends.
func (a *analyzer) expandColumns(rv *pg.RangeVar, t *policy.Table, width int, names *[]string) (map[string]*assignTarget, error) {
	if width == 0 {
		return nil, nil
	}
	cols, ok := a.catalogColumns(t.Schema, t.Name)
	if !ok {
		return nil, a.errorf(t.Columns[0], rv.Location, "INSERT into PHI table %s without a column list needs the table's columns, which phiproxy does not know yet: list the columns", t.QualifiedName())
	}
	list := []piece{text(" (")}
	targets := map[string]*assignTarget{}
	for _, c := range cols {
		if len(*names) == width {
			break
		}
		if t.IsIndexColumn(c) {
			continue
		}
		if len(*names) > 0 {
			list = append(list, text(", "))
		}
		*names = append(*names, c)
		list = append(list, text(quoteIdent(c)))
		if col := t.Column(c); col != nil {
			tg := &assignTarget{}
			targets[col.Name] = tg
			list = append(list, piece{target: tg}, text(indexList(col)))
		}
	}
	if len(*names) < width {
		return nil, a.errorf(nil, rv.Location, "INSERT has more expressions than table %s has columns", t.QualifiedName())
	}
	list = append(list, text(")"))
	ts, err := a.tokens()
	if err != nil {
		return nil, err
	}
	i := ts.at(int(rv.Location))
	if i < 0 {
		return nil, a.errorf(nil, rv.Location, "cannot locate table %s in the INSERT", t.QualifiedName())
	}
	for i+2 < len(ts) && ts[i+1].kind == pg.Token_ASCII_46 {
		i += 2
	}
	if rv.Alias != nil {
		i++
		if i < len(ts) && ts[i].kind == pg.Token_AS {
			i++
		}
	}
	if i >= len(ts) {
		return nil, a.errorf(nil, rv.Location, "cannot locate table %s in the INSERT", t.QualifiedName())
	}
	a.addEdit(ts[i].end, ts[i].end, list...)
	return targets, nil
}

func (a *analyzer) onConflict(oc *pg.OnConflictClause, target *rangeEntry, sc *scope) error {
	t := target.table
	if inf := oc.Infer; inf != nil {
		for _, n := range inf.IndexElems {
			ie := n.GetIndexElem()
			if ie == nil {
				continue
			}
			if ie.Expr != nil {
				if err := a.expr(ie.Expr, sc, "an ON CONFLICT index expression"); err != nil {
					return err
				}
				continue
			}
			if t == nil {
				continue
			}
			if idx := t.IndexColumn(ie.Name); idx != nil {
				return a.indexRef(idx, ie.Name, inf.Location)
			}
			col := t.Column(ie.Name)
			if col == nil {
				continue
			}
			ix, err := a.exactIndex(col, inf.Location, "ON CONFLICT ("+col.Name+")")
			if err != nil {
				return err
			}
			if err := a.replaceName(inf.Location, ie.Name, ix.Column, col); err != nil {
				return err
			}
		}
		if err := a.expr(inf.WhereClause, sc, ""); err != nil {
			return err
		}
	}
	if oc.Action != pg.OnConflictAction_ONCONFLICT_UPDATE {
		return nil
	}
	up := &scope{parent: sc.parent, ctes: sc.ctes, entries: []*rangeEntry{target, {name: "excluded", table: t, rel: target.rel, schema: target.schema}}}
	if err := a.setList(oc.TargetList, t, up); err != nil {
		return err
	}
	return a.expr(oc.WhereClause, up, "")
}

// valuesMarks are the places of an InsertValues, known once the edits
// are applied.
type valuesMarks struct {
	stmt                       int // its statement, in Plan.Statements
	start, insert, values, end *assignTarget
	rows                       [][2]*assignTarget
}

// noteValues records the layout of s, the statement's INSERT … VALUES of
// n rows (n > 1), when its tokens show it plainly: the word INSERT and,
// after it, VALUES and the n rows, outside any parentheses.
func (a *analyzer) noteValues(n int) {
	ts, err := a.tokens()
	if err != nil {
		return
	}
	i := sort.Search(len(ts), func(i int) bool { return ts[i].start >= a.stmtStart })
	insert, values := -1, -1
	for depth := 0; i < len(ts) && ts[i].start < a.stmtEnd && values < 0; i++ {
		switch ts[i].kind {
		case pg.Token_ASCII_40, pg.Token_ASCII_91:
			depth++
		case pg.Token_ASCII_41, pg.Token_ASCII_93:
			depth--
		case pg.Token_INSERT:
			if depth == 0 && insert < 0 {
				insert = i
			}
		case pg.Token_VALUES:
			if depth == 0 && insert >= 0 {
				values = i
			}
		}
	}
	if values < 0 {
		return
	}
	m := &valuesMarks{stmt: a.stmtIndex}
	for i = values + 1; i < len(ts) && ts[i].kind == pg.Token_ASCII_40; i++ {
		j := ts.matching(i)
		if j < 0 {
			return
		}
		m.rows = append(m.rows, [2]*assignTarget{a.markAt(ts[i].start), a.markAt(ts[j].end)})
		if i = j + 1; i >= len(ts) || ts[i].kind != pg.Token_ASCII_44 {
			break
		}
	}
	if len(m.rows) != n {
		return
	}
	// The end is marked by finish, after every other edit: what is
	// inserted at the end of the statement (an index added beside the
	// last value of ON CONFLICT's SET list) comes before it.
	m.start, m.insert, m.values, m.end = a.markAt(a.stmtStart), a.markAt(ts[insert].start), a.markAt(ts[values].end), &assignTarget{end: a.stmtEnd}
	a.values = append(a.values, m)
}

// markAt records the place of byte offset off of the input in the output.
func (a *analyzer) markAt(off int) *assignTarget {
	tg := &assignTarget{end: off}
	a.addEdit(off, off, piece{target: tg})
	return tg
}
