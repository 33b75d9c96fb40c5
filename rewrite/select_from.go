package rewrite

import (
	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// The FROM clause of a SELECT (select.go): its items, joins and the
// relations they name, added to the query's scope.

// fromItem adds one FROM item (and what it joins) to sc.
func (a *analyzer) fromItem(n *pg.Node, sc *scope) error {
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		e, err := a.relationEntry(x.RangeVar, sc)
		if err != nil {
			return err
		}
		sc.entries = append(sc.entries, e)
		return nil
	case *pg.Node_RangeSubselect:
		rs := x.RangeSubselect
		inner := &scope{parent: sc.parent, ctes: sc.ctes}
		if rs.Lateral {
			inner = sc
		}
		sel := rs.Subquery.GetSelectStmt()
		if sel == nil {
			return a.expr(rs.Subquery, sc, "a subquery in FROM")
		}
		d, err := a.selectStmt(sel, inner)
		if err != nil {
			return err
		}
		e := &rangeEntry{derived: d}
		if rs.Alias != nil {
			e.name = rs.Alias.Aliasname
			if err := a.renameCols(d, rs.Alias.Colnames, nodeLocation(rs.Subquery)); err != nil {
				return err
			}
		}
		sc.entries = append(sc.entries, e)
		return nil
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		before := len(sc.entries)
		if err := a.fromItem(j.Larg, sc); err != nil {
			return err
		}
		if err := a.fromItem(j.Rarg, sc); err != nil {
			return err
		}
		joined := sc.entries[before:]
		if j.IsNatural {
			for _, e := range joined {
				if e.table != nil || (e.derived != nil && e.derived.firstPHI() != nil) {
					return a.errorf(nil, -1, "NATURAL JOIN with PHI table %s is not supported: write the join condition with ON", entryName(e))
				}
			}
		}
		for _, u := range j.UsingClause {
			s := u.GetString_()
			if s == nil {
				continue
			}
			for _, e := range joined {
				if _, col, idx := a.entryHas(e, s.Sval); col != nil || idx != nil {
					if col == nil {
						col = idx
					}
					return a.reject(col, -1, "JOIN ... USING (write the join condition with ON, comparing the columns)")
				}
			}
		}
		if err := a.expr(j.Quals, sc, ""); err != nil {
			return err
		}
		if j.Alias != nil && len(j.Alias.Colnames) > 0 {
			// (a JOIN b) AS j(c1, c2): the join's output order (USING
			// columns first, then each side's) is not mapped; refused when
			// it may hold PHI.
			for _, e := range joined {
				if e.carriesPHI() {
					var t *policy.Table
					if e.table != nil {
						t = e.table
					} else if c := e.derived.firstPHI(); c != nil {
						t = c.Table
					}
					err := a.errorf(nil, -1, "a column alias list on a join of PHI table %s is not supported: refer to the columns through the joined tables' names", entryName(e))
					if t != nil {
						err.Table = t.QualifiedName()
					}
					return err
				}
			}
		}
		// JOIN ... USING (col) AS j names only the USING columns, which
		// are never PHI columns (refused above): unresolved references
		// through j fail closed in resolve.
		if j.Alias != nil {
			d := &derived{unknown: true}
			for _, e := range joined {
				if e.colAlias != nil {
					return a.tableError(e.table, -1, "a column alias list on PHI table %s inside an aliased join is not supported: alias the join's columns by name", e.table.QualifiedName())
				}
				if e.table != nil {
					d.stars = append(d.stars, e.table)
				} else if e.derived != nil {
					d.cols = append(d.cols, e.derived.cols...)
					d.stars = append(d.stars, e.derived.stars...)
				}
			}
			sc.entries = append(sc.entries, &rangeEntry{name: j.Alias.Aliasname, derived: d})
		}
		return nil
	case *pg.Node_RangeFunction:
		rf := x.RangeFunction
		if err := a.children(n, sc, "a function in FROM"); err != nil {
			return err
		}
		e := &rangeEntry{opaque: true}
		if rf.Alias != nil {
			e.name = rf.Alias.Aliasname
		}
		sc.entries = append(sc.entries, e)
		return nil
	case *pg.Node_RangeTableSample:
		if err := a.fromItem(x.RangeTableSample.Relation, sc); err != nil {
			return err
		}
		for _, arg := range x.RangeTableSample.Args {
			if err := a.expr(arg, sc, "TABLESAMPLE"); err != nil {
				return err
			}
		}
		return a.expr(x.RangeTableSample.Repeatable, sc, "TABLESAMPLE")
	}
	if err := a.children(n, sc, describe(n)); err != nil {
		return err
	}
	sc.entries = append(sc.entries, &rangeEntry{opaque: true})
	return nil
}

func entryName(e *rangeEntry) string {
	if e.table != nil {
		return e.table.QualifiedName()
	}
	return e.name
}

func (a *analyzer) relationEntry(rv *pg.RangeVar, sc *scope) (*rangeEntry, error) {
	e := &rangeEntry{name: rv.Relname, schema: rv.Schemaname, rel: rv.Relname}
	if rv.Alias != nil {
		e.name = rv.Alias.Aliasname
	}
	if rv.Schemaname == "" {
		if d, ok := sc.cte(rv.Relname); ok {
			e.derived, e.rel = d, ""
			return e, nil
		}
	}
	t, err := a.rangeVarTable(rv, sc)
	if err != nil {
		return nil, err
	}
	e.table = t
	if t != nil && rv.Alias != nil && len(rv.Alias.Colnames) > 0 {
		if err := a.aliasColumns(e, rv); err != nil {
			return nil, err
		}
	}
	return e, nil
}
