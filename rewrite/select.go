package rewrite

import (
	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// selectStmt analyzes one query level and returns what it outputs.
func (a *analyzer) selectStmt(s *pg.SelectStmt, parent *scope) (*derived, error) {
	sc := &scope{parent: parent}
	if err := a.withClause(s.WithClause, sc); err != nil {
		return nil, err
	}
	if s.Op != pg.SetOperation_SETOP_NONE {
		l, err := a.selectStmt(s.Larg, sc)
		if err != nil {
			return nil, err
		}
		r, err := a.selectStmt(s.Rarg, sc)
		if err != nil {
			return nil, err
		}
		out := &derived{setop: true, stars: append(append([]*policy.Table{}, l.stars...), r.stars...), unknown: l.unknown || r.unknown}
		for i, c := range l.cols {
			c.ref = nil
			if c.col == nil && i < len(r.cols) {
				c.col = r.cols[i].col
			}
			out.cols = append(out.cols, c)
		}
		// A set operation's result columns name no table in RowDescription,
		// so the proxy could not tell them apart from plaintext to decrypt
		// them; without ALL the server would also compare ciphertexts, and a
		// VALUES branch would put a plaintext literal in a PHI column's place.
		// The right branch counts on its own too: a left one whose columns
		// the analysis does not list (VALUES, a function's rows through *)
		// lines up no column with it.
		col := out.firstPHI()
		if col == nil {
			col = r.firstPHI()
		}
		if col != nil {
			return nil, a.reject(col, -1, "UNION, INTERSECT or EXCEPT with a PHI column in the result")
		}
		sc.outputs = out.cols
		if err := a.sortClause(s.SortClause, sc, "ORDER BY"); err != nil {
			return nil, err
		}
		if err := a.limits(s, sc); err != nil {
			return nil, err
		}
		return out, nil
	}
	for _, row := range s.ValuesLists {
		for _, v := range row.GetList().GetItems() {
			if err := a.expr(v, sc, "a VALUES list"); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range s.FromClause {
		if err := a.fromItem(f, sc); err != nil {
			return nil, err
		}
	}
	if err := a.expr(s.WhereClause, sc, ""); err != nil {
		return nil, err
	}
	out, err := a.targets(s.TargetList, sc, "an expression in the SELECT list")
	if err != nil {
		return nil, err
	}
	sc.outputs = out.cols
	for _, g := range s.GroupClause {
		if err := a.sortKey(g, sc, "GROUP BY"); err != nil {
			return nil, err
		}
	}
	if err := a.expr(s.HavingClause, sc, ""); err != nil {
		return nil, err
	}
	for _, w := range s.WindowClause {
		if wd := w.GetWindowDef(); wd != nil {
			if err := a.windowDef(wd, sc); err != nil {
				return nil, err
			}
		}
	}
	if len(s.DistinctClause) > 0 {
		if len(s.DistinctClause) == 1 && s.DistinctClause[0].Node == nil {
			if col := out.firstPHI(); col != nil {
				return nil, a.reject(col, -1, "SELECT DISTINCT (it compares values)")
			}
		} else {
			for _, d := range s.DistinctClause {
				if err := a.sortKey(d, sc, "DISTINCT ON"); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := a.sortClause(s.SortClause, sc, "ORDER BY"); err != nil {
		return nil, err
	}
	if err := a.limits(s, sc); err != nil {
		return nil, err
	}
	return out, nil
}

func (d *derived) firstPHI() *policy.Column {
	for _, c := range d.cols {
		if c.col != nil {
			return c.col
		}
	}
	for _, t := range d.stars {
		if len(t.Columns) > 0 {
			return t.Columns[0]
		}
	}
	return nil
}

func (a *analyzer) limits(s *pg.SelectStmt, sc *scope) error {
	if err := a.expr(s.LimitCount, sc, "LIMIT"); err != nil {
		return err
	}
	return a.expr(s.LimitOffset, sc, "OFFSET")
}

func (a *analyzer) sortClause(list []*pg.Node, sc *scope, what string) error {
	for _, n := range list {
		if sb := n.GetSortBy(); sb != nil {
			n = sb.Node
		}
		if err := a.sortKey(n, sc, what); err != nil {
			return err
		}
	}
	return nil
}

// sortKey checks an ORDER BY / GROUP BY / DISTINCT ON item, which may name an
// output column or give its position.
func (a *analyzer) sortKey(n *pg.Node, sc *scope, what string) error {
	if n == nil {
		return nil
	}
	if c := n.GetAConst(); c != nil && c.GetIval() != nil {
		i := int(c.GetIval().Ival) - 1
		if i < 0 || i >= len(sc.outputs) {
			return nil
		}
		for _, o := range sc.outputs[:i+1] {
			if o.idx != nil {
				// The client does not see this column, so it numbers
				// the columns after it differently from the server.
				return a.errorf(o.idx, c.Location, "%s %d names a column by its position after blind-index column %s of %s, which phiproxy hides from `*`: the server counts it, the client does not",
					what, i+1, quoteIdent(o.name), o.idx.Table.QualifiedName()).hint("Name the column instead of its position.")
			}
		}
		if sc.outputs[i].col != nil {
			return a.reject(sc.outputs[i].col, c.Location, what)
		}
		return nil
	}
	if cr := n.GetColumnRef(); cr != nil && len(cr.Fields) == 1 {
		if s := cr.Fields[0].GetString_(); s != nil {
			for _, o := range sc.outputs {
				if o.name == s.Sval && o.col != nil {
					return a.reject(o.col, cr.Location, what)
				}
			}
		}
	}
	if cr := n.GetColumnRef(); cr != nil {
		r, err := a.resolve(cr, sc)
		if err != nil {
			return err
		}
		if r.idx != nil {
			return a.indexRef(r.idx, refName(cr), cr.Location)
		}
		if r.phi() {
			return a.reject(r.col, cr.Location, what)
		}
		return nil
	}
	return a.expr(n, sc, what)
}

// targets analyzes a SELECT or RETURNING list. Plain references to PHI
// columns are fine there: the proxy decrypts them by the table OID and
// attribute number in RowDescription.
func (a *analyzer) targets(list []*pg.Node, sc *scope, what string) (*derived, error) {
	out := &derived{}
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil {
			r, err := a.resolve(cr, sc)
			if err != nil {
				return nil, err
			}
			if r.star {
				a.star(cr, sc, out)
				continue
			}
			if r.idx != nil {
				return nil, a.indexRef(r.idx, refName(cr), cr.Location)
			}
			name := rt.Name
			if name == "" {
				if s := cr.Fields[len(cr.Fields)-1].GetString_(); s != nil {
					name = s.Sval
				}
			}
			out.cols = append(out.cols, outCol{name: name, col: r.col, idx: r.idx, ref: cr})
			continue
		}
		if err := a.expr(rt.Val, sc, what); err != nil {
			return nil, err
		}
		name := rt.Name
		if name == "" {
			if f := rt.Val.GetFuncCall(); f != nil {
				name = funcName(f)
			}
		}
		out.cols = append(out.cols, outCol{name: name})
	}
	return out, nil
}

// star expands `*` or `t.*` into out, as far as it is known.
func (a *analyzer) star(cr *pg.ColumnRef, sc *scope, out *derived) {
	var qual []string
	for _, f := range cr.Fields {
		if s := f.GetString_(); s != nil {
			qual = append(qual, s.Sval)
		}
	}
	for _, e := range sc.entries {
		if len(qual) > 0 && !entryMatches(e, qual) {
			continue
		}
		switch {
		case e.table != nil:
			cols, ok := a.catalogColumns(e.table.Schema, e.table.Name)
			if !ok {
				out.stars = append(out.stars, e.table)
				continue
			}
			// Expanded in order, so that an alias list over the output
			// can be mapped by position.
			for _, c := range cols {
				out.cols = append(out.cols, outCol{name: e.visible(c), col: e.table.Column(c), idx: e.table.IndexColumn(c)})
			}
		case e.derived != nil:
			out.cols = append(out.cols, e.derived.cols...)
			out.stars = append(out.stars, e.derived.stars...)
			out.unknown = out.unknown || e.derived.unknown
		default:
			if cols, ok := a.catalogColumns(e.schema, e.rel); ok && e.rel != "" {
				for _, c := range cols {
					out.cols = append(out.cols, outCol{name: c})
				}
			} else {
				out.unknown = true
			}
		}
	}
}

func (a *analyzer) withClause(w *pg.WithClause, sc *scope) error {
	if w == nil {
		return nil
	}
	sc.ctes = map[string]*derived{}
	for _, n := range w.Ctes {
		cte := n.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		if w.Recursive {
			sc.ctes[cte.Ctename] = &derived{unknown: true}
		}
		var d *derived
		var err error
		before := a.touches
		switch q := cte.Ctequery.Node.(type) {
		case *pg.Node_SelectStmt:
			d, err = a.selectStmt(q.SelectStmt, sc)
		case *pg.Node_InsertStmt:
			d, err = a.insertStmt(q.InsertStmt, sc)
		case *pg.Node_UpdateStmt:
			d, err = a.updateStmt(q.UpdateStmt, sc)
		case *pg.Node_DeleteStmt:
			d, err = a.deleteStmt(q.DeleteStmt, sc)
		default:
			err = a.expr(cte.Ctequery, sc, "a CTE")
			d = &derived{unknown: true}
		}
		if err != nil {
			return err
		}
		if _, isSelect := cte.Ctequery.Node.(*pg.Node_SelectStmt); !isSelect && a.touches > before {
			return a.errorf(nil, cte.Location, "table %s: a data-modifying CTE (WITH %s AS (INSERT/UPDATE/DELETE ...)) touching a PHI table is not supported; run it as its own statement",
				a.stmt.Tables[len(a.stmt.Tables)-1].QualifiedName(), cte.Ctename)
		}
		if err := a.renameCols(d, cte.Aliascolnames, cte.Location); err != nil {
			return err
		}
		sc.ctes[cte.Ctename] = d
	}
	return nil
}

// renameCols applies a column alias list (AS s(a, b), WITH c(a, b) AS ...)
// to a subquery's output by position. When the output's order is not
// known (a `*` phiproxy could not expand) and it may hold PHI, the names
// cannot be mapped with certainty: refused.
func (a *analyzer) renameCols(d *derived, names []*pg.Node, loc int32) error {
	if len(names) == 0 {
		return nil
	}
	if !d.ordered() && d.carriesPHI() || len(d.stars) > 0 {
		t := d.firstPHI()
		e := a.errorf(nil, loc, "a column alias list over a subquery or CTE whose output includes PHI columns through a `*` phiproxy cannot expand is not supported: list the columns in the subquery")
		if t != nil {
			e.Table, e.Column = t.Table.QualifiedName(), t.Name
		}
		return e
	}
	for i, n := range names {
		if s := n.GetString_(); s != nil && i < len(d.cols) {
			d.cols[i].name = s.Sval
		}
	}
	return nil
}

// aliasColumns maps a column alias list on a policy table (FROM patients
// AS p(i, fn)) to its columns by position, from the Catalog's column order
// (attribute order, as PostgreSQL applies the list). It refuses what it
// cannot map exactly: an unknown column order, a renamed blind-index
// column (rewritten comparisons name it), and names that become ambiguous.
func (a *analyzer) aliasColumns(e *rangeEntry, rv *pg.RangeVar) error {
	names := rv.Alias.Colnames
	t := e.table
	cols, ok := a.catalogColumns(t.Schema, t.Name)
	if !ok {
		return a.tableError(t, rv.Location, "a column alias list on PHI table %s needs its column order, which phiproxy does not know yet: refer to the columns by their names", t.QualifiedName())
	}
	if len(names) > len(cols) {
		return a.tableError(t, rv.Location, "table %s has %d columns but %d column aliases were given", t.QualifiedName(), len(cols), len(names))
	}
	e.colAlias, e.renamed = map[string]string{}, map[string]bool{}
	seen := map[string]bool{}
	for i, c := range cols {
		vis := c
		if i < len(names) {
			if s := names[i].GetString_(); s != nil {
				vis = s.Sval
			}
		}
		if vis != c {
			if idx := t.IndexColumn(c); idx != nil {
				return a.errorf(idx, rv.Location, "a column alias list that renames blind-index column %s of %s is not supported: alias only the columns before it", c, t.QualifiedName())
			}
			e.colAlias[vis] = c
			e.renamed[c] = true
		}
		if seen[vis] {
			return a.tableError(t, rv.Location, "the column alias list on PHI table %s makes the name %q ambiguous", t.QualifiedName(), vis)
		}
		seen[vis] = true
	}
	return nil
}

// visible returns the name a column of e's policy table is known by in the
// query (its alias, if an alias list renamed it).
func (e *rangeEntry) visible(col string) string {
	for vis, real := range e.colAlias {
		if real == col {
			return vis
		}
	}
	return col
}

// tableError is a 0A000 rejection about table t (no particular column).
func (a *analyzer) tableError(t *policy.Table, loc int32, format string, args ...any) *Error {
	e := a.errorf(nil, loc, format, args...)
	e.Table = t.QualifiedName()
	return e
}
