package rewrite

import (
	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// The width of what an INSERT into a policy table writes. The rewriter
// pairs each value with its column by position: the column list (written
// out from the catalog when the INSERT has none) against the items of each
// row. PostgreSQL expands a row expansion (v.*, (expr).*, a bare * in a
// SELECT list) into as many columns as the row has, so an item that is one
// to the rewriter may be several to the server, each landing in a column
// the rewriter paired with nothing: INSERT INTO patients (id, first_name)
// VALUES ((ROW(1, 'Ada')).*) stored 'Ada' in plaintext. And a set
// operation (INSERT INTO patients SELECT … UNION ALL SELECT …, or VALUES …
// UNION VALUES …) has its rows in its branches, not in its own SELECT
// list, which the rewriter took for empty: no column list was written out,
// and the server put the values in the table's columns in order, PHI
// columns included, in plaintext.

// insertWidth refuses, for an INSERT into policy table t from sel, the
// row expansions whose width the rewriter cannot know, and returns the
// width of the rows of a set operation (the left-most branch's, as the
// server takes it; -1 for a plain SELECT or VALUES).
func (a *analyzer) insertWidth(t *policy.Table, sel *pg.SelectStmt, rows [][]*pg.Node) (int, error) {
	for _, row := range rows {
		for _, v := range row {
			if rowExpansion(v) {
				return 0, a.expansionError(t, v)
			}
		}
	}
	if rows != nil {
		return -1, nil
	}
	arm := sel
	for arm.Op != pg.SetOperation_SETOP_NONE && arm.Larg != nil {
		arm = arm.Larg
	}
	for _, n := range arm.TargetList {
		if rt := n.GetResTarget(); rt != nil && rowExpansion(rt.Val) {
			return 0, a.expansionError(t, rt.Val)
		}
	}
	if arm == sel {
		return -1, nil
	}
	if len(arm.ValuesLists) > 0 {
		items := arm.ValuesLists[0].GetList().GetItems()
		for _, v := range items {
			if rowExpansion(v) {
				return 0, a.expansionError(t, v)
			}
		}
		return len(items), nil
	}
	return len(arm.TargetList), nil
}

// rowExpansion reports whether n is v.*, (expr).* or *: one item that the
// server expands into the columns of a row.
func rowExpansion(n *pg.Node) bool {
	if cr := n.GetColumnRef(); cr != nil {
		f := cr.Fields
		return len(f) > 0 && f[len(f)-1].GetAStar() != nil
	}
	if ind := n.GetAIndirection(); ind != nil {
		f := ind.Indirection
		return len(f) > 0 && f[len(f)-1].GetAStar() != nil
	}
	return false
}

func (a *analyzer) expansionError(t *policy.Table, n *pg.Node) *Error {
	loc := nodeLocation(n)
	if ind := n.GetAIndirection(); ind != nil {
		loc = nodeLocation(ind.Arg)
	}
	return a.errorf(nil, loc, "INSERT into PHI table %s with a row expansion (.*, or * in the SELECT list) is not supported: phiproxy cannot tell which value goes to which column; list the values (and the columns)", t.QualifiedName())
}
