package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// COPY between the client and a policy table. The proxy reads every row
// the client sends (FROM STDIN) or receives (TO STDOUT) in the client's
// format and options, and the server sees the COPY in its default text
// format: so the options never reach the server, and what it parses is
// what the proxy wrote.
//
//	COPY patients (id, email) FROM STDIN (FORMAT csv, HEADER)
//	  → COPY patients (id, email, email_bidx, email_bidx_ci) FROM STDIN
//	COPY patients TO STDOUT (FORMAT csv)
//	  → COPY patients (id, first_name, ..., email, ...) TO STDOUT   (no blind-index column)
//	COPY (SELECT email FROM patients WHERE ssn = '…') TO STDOUT
//	  → COPY (SELECT email FROM patients WHERE ssn_bidx = «index») TO STDOUT
//
// The query of COPY (query) TO goes through the SELECT rules; where its
// columns come from, the proxy learns from the server's description of it.
// Server files and programs, binary format and WHERE are refused on PHI
// tables.

// Copy is a COPY between the client and a policy table, or of a query
// reading one (Plan.Copy).
type Copy struct {
	// From: COPY ... FROM STDIN (the client sends rows); else TO STDOUT.
	From bool
	// Table is the COPY's table; nil for COPY (query) TO STDOUT.
	Table *policy.Table
	// Columns are the columns of the client's rows in order (for a
	// table; a query's are described by the server).
	Columns []CopyColumn
	// Indexes are the blind-index values each row the server gets carries
	// after Columns (FROM only), in order.
	Indexes []CopyIndex
	// QueryStart and QueryEnd are the byte range of the query of COPY
	// (query) TO in Plan.SQL. No literal slot follows QueryEnd.
	QueryStart, QueryEnd int
	// Options are the client's: what its rows are written in.
	Options CopyOptions
}

// CopyColumn is one column of a COPY's rows.
type CopyColumn struct {
	Name   string
	Column *policy.Column // the PHI column; nil for others
	// The column is named by FORCE_QUOTE (or it is *), FORCE_NOT_NULL,
	// FORCE_NULL.
	ForceQuote, ForceNotNull, ForceNull bool
}

// CopyIndex is a blind-index value of a COPY FROM row: Index of the PHI
// column Columns[Of].
type CopyIndex struct {
	Of    int
	Index *policy.BlindIndex
}

// GeneratedColumns is implemented by a Catalog that knows a table's
// generated columns, which COPY without a column list leaves out. Without
// it such a COPY on a policy table is refused.
type GeneratedColumns interface {
	Generated(schema, table string) ([]string, bool)
}

// copyStmt analyzes a COPY.
func (a *analyzer) copyStmt(n *pg.Node, c *pg.CopyStmt) error {
	var t *policy.Table
	if c.Relation != nil {
		var err error
		if t, err = a.rangeVarTable(c.Relation, nil); err != nil {
			return err
		}
		if t != nil && t.View {
			// COPY FROM through a view with an INSTEAD OF trigger would
			// write plaintext; COPY TO a view PostgreSQL refuses anyway.
			return a.tableError(t, c.Relation.Location, "COPY of view %s is not supported: it reads PHI tables; COPY the table itself, or COPY (SELECT ... FROM %s) TO STDOUT", t.QualifiedName(), t.QualifiedName())
		}
	}
	if t == nil && c.Query == nil {
		return a.refuseIfTouching(n, "COPY ... WHERE reading a PHI table is not supported")
	}
	if t == nil {
		tables, err := a.collectTables(c.Query)
		if err != nil {
			return err
		}
		if len(tables) == 0 {
			return a.generic(n)
		}
	}
	what := "the query"
	if t != nil {
		what = t.QualifiedName()
	}
	if c.Filename != "" || c.IsProgram {
		if t != nil {
			a.touch(t)
		}
		return a.refuseIfTouching(n, "COPY to or from a server file or program is not supported on a PHI table (the server would read or write plaintext); use COPY ... FROM STDIN or TO STDOUT (psql \\copy)")
	}
	if !a.single {
		return a.refuseIfTouching(n, "COPY on a PHI table must be the only statement of its text")
	}
	a.stmt.Kind = KindCopy
	opts, err := a.copyOptions(c.Options, c.IsFrom, what)
	if err != nil {
		return err
	}
	if opts.Format == CopyBinary {
		if t != nil {
			a.touch(t)
		}
		return a.refuseIfTouching(n, "COPY in binary format is not supported on a PHI table: phiproxy reads and writes its rows in text or CSV format (pgx CopyFrom uses binary: use a text COPY through pgconn.CopyFrom)")
	}
	cp := &Copy{From: c.IsFrom, Table: t, Options: opts}
	if t == nil {
		return a.copyQuery(n, c, cp)
	}
	a.touch(t)
	if c.WhereClause != nil {
		return a.tableError(t, -1, "COPY ... FROM ... WHERE is not supported on PHI table %s: load the rows, then delete those you do not want", t.QualifiedName())
	}
	if err := a.copyColumns(c, t, cp); err != nil {
		return err
	}
	var sql strings.Builder
	sql.WriteString("COPY ")
	if s := c.Relation.Schemaname; s != "" {
		sql.WriteString(quoteIdent(s) + ".")
	}
	sql.WriteString(quoteIdent(c.Relation.Relname) + " (")
	for i, col := range cp.Columns {
		if i > 0 {
			sql.WriteString(", ")
		}
		sql.WriteString(quoteIdent(col.Name))
	}
	for _, ix := range cp.Indexes {
		sql.WriteString(", " + quoteIdent(ix.Index.Column))
	}
	if cp.From {
		sql.WriteString(") FROM STDIN")
		for _, col := range cp.Columns {
			if col.Column != nil {
				a.stmt.Uses = append(a.stmt.Uses, ColumnUse{Column: col.Column, Action: ActionEncrypt})
			}
		}
	} else {
		sql.WriteString(") TO STDOUT")
	}
	sql.WriteString(serverCopyOptions(opts))
	a.addEdit(a.stmtStart, a.stmtEnd, text(sql.String()))
	a.copy = cp
	return nil
}

// serverCopyOptions are the options the server gets: its default text
// format, with FREEZE and ENCODING kept.
func serverCopyOptions(o CopyOptions) string {
	var opts []string
	if o.Freeze {
		opts = append(opts, "FREEZE")
	}
	if o.EncodingUTF8 {
		opts = append(opts, "ENCODING 'UTF8'")
	}
	if len(opts) == 0 {
		return ""
	}
	return " (" + strings.Join(opts, ", ") + ")"
}

// copyColumns fills cp.Columns from the COPY's column list, or from the
// catalog for a COPY without one, and the blind indexes a FROM adds.
func (a *analyzer) copyColumns(c *pg.CopyStmt, t *policy.Table, cp *Copy) error {
	var names []string
	if len(c.Attlist) > 0 {
		cols, known := a.catalogColumns(t.Schema, t.Name)
		for _, n := range c.Attlist {
			name := n.GetString_().GetSval()
			if idx := t.IndexColumn(name); idx != nil {
				return a.indexRef(idx, name, -1)
			}
			if known && !contains(cols, name) {
				e := a.tableError(t, -1, "column %s of relation %s does not exist", quoteName(name), quoteName(t.Name))
				e.Code = CodeUndefinedColumn
				return e
			}
			if contains(names, name) {
				return a.pgError("42701", -1, "column %s specified more than once", quoteName(name))
			}
			names = append(names, name)
		}
	} else {
		cols, ok := a.catalogColumns(t.Schema, t.Name)
		var gen []string
		if g, isGen := a.cat.(GeneratedColumns); ok && isGen {
			gen, ok = g.Generated(t.Schema, t.Name)
		} else {
			ok = false
		}
		if !ok {
			return a.tableError(t, -1, "COPY of PHI table %s without a column list needs the table's columns, which phiproxy does not know yet: list the columns", t.QualifiedName())
		}
		for _, name := range cols {
			if !t.IsIndexColumn(name) && !contains(gen, name) {
				names = append(names, name)
			}
		}
	}
	for i, name := range names {
		col := t.Column(name)
		cp.Columns = append(cp.Columns, CopyColumn{Name: name, Column: col, ForceQuote: cp.Options.ForceQuoteAll})
		if cp.From && col != nil {
			for _, ix := range col.Indexes() {
				cp.Indexes = append(cp.Indexes, CopyIndex{Of: i, Index: ix})
			}
		}
	}
	for _, f := range []struct {
		option string
		names  []string
		set    func(*CopyColumn)
	}{
		{"FORCE_QUOTE", cp.Options.ForceQuote, func(c *CopyColumn) { c.ForceQuote = true }},
		{"FORCE_NOT_NULL", cp.Options.ForceNotNull, func(c *CopyColumn) { c.ForceNotNull = true }},
		{"FORCE_NULL", cp.Options.ForceNull, func(c *CopyColumn) { c.ForceNull = true }},
	} {
		for _, name := range f.names {
			i := 0
			for i < len(cp.Columns) && cp.Columns[i].Name != name {
				i++
			}
			if i == len(cp.Columns) {
				if cols, ok := a.catalogColumns(t.Schema, t.Name); ok && !contains(cols, name) {
					e := a.tableError(t, -1, "column %s of relation %s does not exist", quoteName(name), quoteName(t.Name))
					e.Code = CodeUndefinedColumn
					return e
				}
				return a.pgError("42P10", -1, "%s column %s not referenced by COPY", f.option, quoteName(name))
			}
			f.set(&cp.Columns[i])
		}
	}
	return nil
}

// copyQuery analyzes COPY (query) TO STDOUT: the query goes through the
// SELECT rules; the suffix after its closing parenthesis becomes the
// server's options, and the query's range in the output is noted.
func (a *analyzer) copyQuery(n *pg.Node, c *pg.CopyStmt, cp *Copy) error {
	kind := a.stmt.Kind
	if err := a.statement(c.Query); err != nil {
		return err
	}
	if a.stmt.Kind != KindSelect {
		return a.opaqueReject(n, "COPY (INSERT, UPDATE or DELETE ... RETURNING) TO on a PHI table is not supported: run the statement, then COPY (SELECT ...)")
	}
	a.stmt.Kind = kind
	ts, err := a.tokens()
	if err != nil {
		return err
	}
	open := ts.at(a.stmtStart) + 1
	for open > 0 && open < len(ts) && isComment(ts[open].kind) {
		open++
	}
	if open <= 0 || open >= len(ts) || ts[open].kind != pg.Token_ASCII_40 {
		return a.opaqueReject(n, "cannot locate the query of COPY (query) TO")
	}
	closing := ts.matching(open)
	if closing < 0 {
		return a.opaqueReject(n, "cannot locate the query of COPY (query) TO")
	}
	suffix := " TO STDOUT" + serverCopyOptions(cp.Options)
	at := ts[closing].end
	a.addEdit(at, a.stmtEnd, text(suffix))
	cp.QueryStart = ts[open].end
	// Every edit but the suffix lies inside the query: QueryEnd is where
	// the closing parenthesis lands once they are applied (a.finalizeCopy).
	cp.QueryEnd = ts[closing].start
	a.copyTail = len(suffix) + len(a.sql) - a.stmtEnd
	a.copy = cp
	return nil
}

// isComment reports whether a token is a comment.
func isComment(k pg.Token) bool { return k == pg.Token_SQL_COMMENT || k == pg.Token_C_COMMENT }

// finalizeCopy places the copy's query range in the finished plan's SQL.
func (a *analyzer) finalizeCopy(plan *Plan) {
	cp := a.copy
	if cp == nil {
		return
	}
	if cp.Table == nil {
		// The text after the query's closing parenthesis is a.copyTail
		// bytes long in the output; the parenthesis precedes it.
		cp.QueryEnd = len(plan.SQL) - a.copyTail - 1
	}
	plan.Copy = cp
}
