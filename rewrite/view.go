package rewrite

import (
	"fmt"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// Views over policy tables (issue 10 item 5). PostgreSQL names a view's
// columns by the view's OID in RowDescription, so the proxy decrypts them
// only when it knows which PHI column each one copies. It reads a view's
// definition from the catalog (pg_get_viewdef) and asks ViewColumns: a
// view is a decrypting view when the server computes nothing on
// ciphertext to answer it (its PHI columns are plain column references,
// no predicate, join, grouping, ordering, DISTINCT or function touches a
// PHI column, no blind index is exposed), exactly the rules of a SELECT
// through the proxy, and nothing in it needs rewriting. The proxy then
// adds it to the policy (policy.WithViews) as a read-only table whose
// PHI columns have no blind index.

// ViewColumns analyzes a view's definition, a single SELECT as
// pg_get_viewdef prints it, and returns, for each of its output columns
// in order, the PHI column (of a policy table, or of a view already in
// pol) that it copies unchanged, nil for the others. It fails when the
// view is not a decrypting view, saying why.
func ViewColumns(def string, pol *policy.Policy, cat Catalog) ([]*policy.Column, error) {
	tree, err := parse(def)
	if err != nil {
		return nil, err
	}
	if len(tree.Stmts) != 1 || tree.Stmts[0].Stmt.GetSelectStmt() == nil {
		return nil, &Error{Code: CodeFeatureNotSupported, Message: "a view's definition must be one SELECT"}
	}
	a := &analyzer{sql: def, pol: pol, cat: cat, version: tree.Version, stmt: &Statement{Kind: KindSelect}, stmtEnd: len(def)}
	a.rawStmt = tree.Stmts[0].Stmt
	return a.viewColumns(tree.Stmts[0].Stmt.GetSelectStmt())
}

// viewColumns analyzes the query of a view (ViewColumns; CREATE VIEW).
func (a *analyzer) viewColumns(s *pg.SelectStmt) ([]*policy.Column, error) {
	if hasInto(s) || len(s.LockingClause) > 0 {
		return nil, a.errorf(nil, -1, "a view's query cannot have INTO or FOR UPDATE")
	}
	m := a.mark()
	out, err := a.selectStmt(s, nil)
	if err != nil {
		return nil, err
	}
	if col, ok := a.rewrittenSince(m); ok || a.maxParam > 0 {
		name := "a PHI column"
		if col != nil {
			name = "PHI column " + col.QualifiedName()
		}
		return nil, a.errorf(col, -1, "the view compares %s with a value or another column: the server would evaluate it on ciphertext", name)
	}
	if len(out.stars) > 0 || out.unknown {
		return nil, a.errorf(nil, -1, "the view's columns cannot all be resolved (a * over a relation whose columns are unknown)")
	}
	cols := make([]*policy.Column, len(out.cols))
	for i, c := range out.cols {
		if c.idx != nil {
			return nil, a.errorf(c.idx, -1, "the view returns a blind-index column of PHI column %s, which phiproxy maintains and never returns", c.idx.QualifiedName())
		}
		cols[i] = c.col
	}
	return cols, nil
}

// createView checks CREATE [OR REPLACE] VIEW: over policy tables (or
// views over them) it is allowed when it makes a decrypting view; any
// other view over them would be a second name phiproxy does not govern.
func (a *analyzer) createView(v *pg.ViewStmt, n *pg.Node) error {
	tables, err := a.collectTables(n)
	if err != nil {
		return err
	}
	if len(tables) == 0 {
		return a.generic(n)
	}
	for _, t := range tables {
		a.touch(t)
	}
	sel := v.Query.GetSelectStmt()
	if sel == nil {
		return a.opaqueReject(n, "a view over PHI tables must be a SELECT")
	}
	if _, err := a.viewColumns(sel); err != nil {
		var e *Error
		msg := err.Error()
		if ae, ok := err.(*Error); ok {
			e, msg = ae, ae.Message
		}
		out := a.errorf(nil, int32(a.stmtStart), "a view over PHI tables may only select PHI columns as plain column references, which phiproxy decrypts: %s", msg)
		if e != nil {
			out.Table, out.Column = e.Table, e.Column
		}
		return out
	}
	return a.viewChanged()
}

// errAfterViewChange refuses a statement that follows, in the same text, one
// that creates or changes a view over policy tables (Statement.ChangesViews).
const errAfterViewChange = "a statement after one that creates, replaces, renames or moves a view over PHI tables, in the same text, is not supported: " +
	"phiproxy reads what the view's columns are once that statement has run; send the statements after it in a text of their own"

// TransactionControl reports whether sql holds transaction control
// statements only (BEGIN, COMMIT, ROLLBACK, SAVEPOINT...), one at least:
// what the proxy still lets through while it waits to read a view that a
// statement in flight changes (Statement.ChangesViews).
func TransactionControl(sql string) bool {
	tree, err := parse(sql)
	if err != nil || len(tree.Stmts) == 0 {
		return false
	}
	for _, raw := range tree.Stmts {
		if raw.Stmt.GetTransactionStmt() == nil {
			return false
		}
	}
	return true
}

// viewChanged marks the statement as one that creates, replaces, renames
// or moves a view over policy tables. In a function or DO body it is
// refused: the proxy must read the view's definition before the next
// statement is planned, and cannot tell when the server runs the body.
func (a *analyzer) viewChanged() error {
	if a.depth > 0 {
		return a.errorf(nil, -1, "creating, replacing, renaming or moving a view over PHI tables inside a function or DO block is not supported: "+
			"phiproxy reads the view's definition after the statement that changes it, which it cannot see there; run it as a statement of its own")
	}
	a.stmt.ChangesViews = true
	return nil
}

// viewColumnError refuses what (a comparison, ORDER BY, a function...) on
// a column of a view over a policy table: it has no blind index, and the
// view cannot be rewritten into the table.
func (a *analyzer) viewColumnError(col *policy.Column, loc int32, what string) *Error {
	b := col.Root()
	return a.errorf(col, loc, "%s on column %s of view %s is not supported: it returns PHI column %s, which the database holds only as ciphertext; a view's PHI columns can only be selected (compare, order or compute on %s in table %s itself)",
		what, col.Name, col.Table.QualifiedName(), b.QualifiedName(), b.Name, b.Table.QualifiedName())
}

// viewWriteError refuses INSERT, UPDATE and DELETE through a view over
// policy tables: PostgreSQL would write the values through it unencrypted.
func (a *analyzer) viewWriteError(t *policy.Table, loc int32) *Error {
	return a.tableError(t, loc, "%s", fmt.Sprintf("writing through view %s is not supported: it reads PHI tables, and PostgreSQL would store the values through it without phiproxy; write to the table itself", t.QualifiedName()))
}

// onlyViews reports whether every table of ts is a view (Table.View).
func onlyViews(ts []*policy.Table) bool {
	for _, t := range ts {
		if !t.View {
			return false
		}
	}
	return true
}
