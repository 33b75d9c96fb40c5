package rewrite

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// This file analyses code the server keeps and runs later (issue 9, item
// 7): DO blocks, CREATE FUNCTION / PROCEDURE bodies in LANGUAGE plpgsql and
// sql, and CREATE TRIGGER. phiproxy rewrites statements as they pass; it
// cannot rewrite a statement the server runs later from a function body.
// So every SQL statement and expression in a body goes through the same
// rules as a top-level statement, and one that would need rewriting (a PHI
// value to encrypt or index, a comparison to move onto a blind index) is
// refused, as is everything it cannot see through:
//
//   - dynamic SQL: PL/pgSQL EXECUTE, FOR ... IN EXECUTE, RETURN QUERY
//     EXECUTE, OPEN ... FOR EXECUTE of anything but a string constant (a
//     constant is analysed as SQL, with the same rules);
//   - bodies in other languages (plpython, plperl, C, ...): they can build
//     and run any SQL at run time;
//   - record variables (NEW, OLD, RECORD, %ROWTYPE of a policy table): a
//     field of one named like a PHI column, or the whole record, may hold
//     ciphertext, and a trigger function that writes NEW.<phi column> or
//     returns anything but NEW, OLD or NULL could store plaintext;
//   - a PHI column read into a plain variable (SELECT email INTO v, v :=
//     email FROM ..., FETCH, FOR a, b IN, RETURNING ... INTO): phiproxy does
//     not follow the ciphertext to what the body compares it with;
//   - functions that take or return rows of a policy table, or return PHI
//     columns (RETURN QUERY, a SQL function's result): a second name for
//     the table's rows, which phiproxy neither decrypts nor protects;
//   - a body pg_query cannot parse (fail closed).
//
// CREATE TRIGGER is allowed on any table: a trigger calls a function, and a
// function created through phiproxy was checked here (one defined outside
// phiproxy is the operator's, as issue 9 says). On a policy table its WHEN
// condition is checked like a stored definition, and transition tables
// (REFERENCING NEW TABLE AS t), second names for the table's rows, are
// refused.
//
// Function bodies are read as the server reads them with
// standard_conforming_strings on; a string constant with a backslash is
// refused, since its meaning at run time depends on that setting.

// maxNesting bounds EXECUTE 'DO ...' inside DO inside EXECUTE ...
const maxNesting = 8

// bodyCtx is what the analysis of one body knows.
type bodyCtx struct {
	where   string          // "function f", "DO block", for messages
	records map[string]bool // record variables (new, old, RECORD, %ROWTYPE of a policy table)
	vars    map[string]bool // every variable and parameter name: var.<phi name> is a field of a composite
	trigger bool            // a trigger function: NEW / OLD are the table's row
}

// nestOpts are the extra rules for one statement of a body.
type nestOpts struct {
	output     bool // its result leaves the function: refuse PHI columns in it
	recordExpr bool // "SELECT rec": the whole record is the value (RETURN r)
	// readsPHI, when set, is set to the first PHI column in the result of
	// a statement, for the caller to decide about the variables it fills.
	readsPHI **policy.Column
}

// bodyError wraps err, found in a body, with where it was found; the
// position is that of the statement that creates the body (none inside
// nested code, whose text is not the client's).
func (a *analyzer) bodyError(ctx *bodyCtx, err error) error {
	e, ok := err.(*Error)
	if !ok {
		return err
	}
	out := &Error{Code: CodeFeatureNotSupported, Message: ctx.where + ": " + e.Message, Table: e.Table, Column: e.Column}
	if a.depth == 0 {
		out.Position = a.errorf(nil, int32(a.stmtStart), "").Position
	}
	return out
}

// refuseBody is a 0A000 rejection of the body as a whole.
func (a *analyzer) refuseBody(ctx *bodyCtx, col *policy.Column, format string, args ...any) error {
	loc := int32(a.stmtStart)
	if a.depth > 0 {
		loc = -1
	}
	return a.errorf(col, loc, "%s: %s", ctx.where, fmt.Sprintf(format, args...))
}

// sub returns an analyzer for SQL text that the server runs later.
func (a *analyzer) sub(sql string, ctx *bodyCtx) *analyzer {
	return &analyzer{sql: sql, pol: a.pol, cat: a.cat, depth: a.depth + 1, version: a.version, body: ctx}
}

// createFunction checks CREATE [OR REPLACE] FUNCTION / PROCEDURE.
func (a *analyzer) createFunction(s *pg.CreateFunctionStmt) error {
	kind := "function"
	if s.IsProcedure {
		kind = "procedure"
	}
	ctx := &bodyCtx{where: kind + " " + strings.Join(typeNames(s.Funcname), "."), records: map[string]bool{}, vars: map[string]bool{}}
	lang, body, asItems := "", "", -1
	for _, n := range s.Options {
		d := n.GetDefElem()
		if d == nil {
			continue
		}
		switch d.Defname {
		case "language":
			if v := d.Arg.GetString_(); v != nil {
				lang = v.Sval
			}
		case "as":
			items := d.Arg.GetList().GetItems()
			asItems = len(items)
			if len(items) > 0 {
				if v := items[len(items)-1].GetString_(); v != nil {
					body = v.Sval
				}
			}
		}
	}
	if lang == "" && s.SqlBody != nil {
		lang = "sql"
	}
	if rt := s.ReturnType; rt != nil {
		if t := a.rowTypeOf(rt); t != nil {
			return a.refuseBody(ctx, nil, "returning rows of PHI table %s is not supported: the rows would leave under another name, their PHI columns neither decrypted nor protected", t.QualifiedName())
		}
		if names := typeNames(rt.Names); len(names) > 0 && names[len(names)-1] == "trigger" {
			ctx.trigger = true
			ctx.records["new"], ctx.records["old"] = true, true
		}
	}
	for _, n := range s.Parameters {
		if p := n.GetFunctionParameter(); p != nil {
			if p.Name != "" {
				ctx.vars[p.Name] = true
			}
			if t := a.rowTypeOf(p.ArgType); t != nil {
				return a.refuseBody(ctx, nil, "a parameter of the row type of PHI table %s is not supported: the function would compute on ciphertext", t.QualifiedName())
			}
		}
	}
	switch lang {
	case "sql":
		if s.SqlBody != nil {
			return a.sqlBody(s.SqlBody, ctx)
		}
		if asItems != 1 {
			return a.refuseBody(ctx, nil, "a LANGUAGE sql function needs exactly one body string")
		}
		return a.nested(body, ctx, nestOpts{output: true})
	case "plpgsql":
		if s.SqlBody != nil || asItems != 1 {
			return a.refuseBody(ctx, nil, "a LANGUAGE plpgsql function needs exactly one body string")
		}
		// Only the shape the PL/pgSQL parser needs: the name, parameters
		// (without defaults) and return type, the body and its language.
		// pg_query aborts the process on a CREATE FUNCTION without a body
		// string, so nothing else is ever given to it.
		params := make([]*pg.Node, 0, len(s.Parameters))
		for _, n := range s.Parameters {
			if p := n.GetFunctionParameter(); p != nil {
				params = append(params, &pg.Node{Node: &pg.Node_FunctionParameter{FunctionParameter: &pg.FunctionParameter{Name: p.Name, ArgType: p.ArgType, Mode: p.Mode}}})
			}
		}
		fn := &pg.CreateFunctionStmt{
			IsProcedure: s.IsProcedure,
			Funcname:    []*pg.Node{pg.MakeStrNode("phiproxy_check")},
			Parameters:  params,
			ReturnType:  s.ReturnType,
			Options: []*pg.Node{
				pg.MakeSimpleDefElemNode("as", pg.MakeListNode([]*pg.Node{pg.MakeStrNode(body)}), -1),
				pg.MakeSimpleDefElemNode("language", pg.MakeStrNode("plpgsql"), -1),
			},
		}
		return a.plpgsql(&pg.Node{Node: &pg.Node_CreateFunctionStmt{CreateFunctionStmt: fn}}, ctx)
	case "":
		return a.refuseBody(ctx, nil, "a function without LANGUAGE cannot be checked")
	}
	return a.otherLanguage(ctx, lang)
}

// otherLanguage refuses a body phiproxy cannot read.
func (a *analyzer) otherLanguage(ctx *bodyCtx, lang string) error {
	return a.refuseBody(ctx, nil, "LANGUAGE %s is not supported while a PHI policy is active: phiproxy cannot check what its body runs (it can build SQL at run time); use LANGUAGE plpgsql or sql, or create it directly on the server", quoteIdent(lang))
}

// doStmt checks a DO block.
func (a *analyzer) doStmt(s *pg.DoStmt) error {
	ctx := &bodyCtx{where: "DO block", records: map[string]bool{}, vars: map[string]bool{}}
	lang, body, ok := "plpgsql", "", false
	for _, n := range s.Args {
		d := n.GetDefElem()
		if d == nil {
			continue
		}
		if v := d.Arg.GetString_(); v != nil {
			switch d.Defname {
			case "language":
				lang = v.Sval
			case "as":
				body, ok = v.Sval, true
			}
		}
	}
	if lang != "plpgsql" {
		return a.otherLanguage(ctx, lang)
	}
	if !ok {
		return a.refuseBody(ctx, nil, "a DO block without a body cannot be checked")
	}
	do := &pg.DoStmt{Args: []*pg.Node{pg.MakeSimpleDefElemNode("as", pg.MakeStrNode(body), -1)}}
	return a.plpgsql(&pg.Node{Node: &pg.Node_DoStmt{DoStmt: do}}, ctx)
}

// rowTypeOf returns the policy table whose row type tn names (patients,
// public.patients, SETOF patients, patients[]), nil otherwise. A %TYPE
// names a column's type, not a row.
func (a *analyzer) rowTypeOf(tn *pg.TypeName) *policy.Table {
	if tn == nil || tn.PctType {
		return nil
	}
	names := typeNames(tn.Names)
	switch len(names) {
	case 1:
		if ts := a.pol.TablesNamed(names[0]); len(ts) > 0 {
			return ts[0]
		}
	case 2, 3:
		return a.pol.Table(names[len(names)-2], names[len(names)-1])
	}
	return nil
}

// sqlBody checks a BEGIN ATOMIC ... END or RETURN body of a LANGUAGE sql
// function: nodes of the outer parse tree, so their locations are in a.sql.
func (a *analyzer) sqlBody(n *pg.Node, ctx *bodyCtx) error {
	var stmts []*pg.Node
	switch x := n.Node.(type) {
	case *pg.Node_ReturnStmt:
		rt := &pg.ResTarget{Val: x.ReturnStmt.Returnval}
		stmts = append(stmts, &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{TargetList: []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: rt}}}, Op: pg.SetOperation_SETOP_NONE, LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT}}})
	case *pg.Node_List:
		for _, l := range x.List.Items {
			stmts = append(stmts, l.GetList().GetItems()...)
		}
	default:
		return a.refuseBody(ctx, nil, "cannot read the function body")
	}
	for _, st := range stmts {
		sub := a.sub(a.sql, ctx)
		sub.stmtStart, sub.stmtEnd = a.stmtStart, a.stmtEnd
		if err := sub.bodyStatement(st, ctx, nestOpts{output: true}); err != nil {
			return a.bodyError(ctx, err)
		}
	}
	return nil
}

// nested analyzes SQL text the server will run later (a body statement, a
// PL/pgSQL expression as SELECT <expr>, a constant EXECUTE string).
func (a *analyzer) nested(sql string, ctx *bodyCtx, opts nestOpts) error {
	if a.depth >= maxNesting {
		return a.refuseBody(ctx, nil, "code nested too deeply to check")
	}
	tree, err := parse(sql)
	if err != nil {
		msg := "syntax error"
		if e, ok := err.(*Error); ok {
			msg = e.Message
		}
		return a.refuseBody(ctx, nil, "a statement of the body cannot be parsed (%s), so it cannot be checked", msg)
	}
	if err := backslashInString(sql); err != nil {
		return a.refuseBody(ctx, nil, "%s", err.Error())
	}
	for _, raw := range tree.Stmts {
		sub := a.sub(sql, ctx)
		sub.version = tree.Version
		sub.stmtStart, sub.stmtEnd = int(raw.StmtLocation), int(raw.StmtLocation+raw.StmtLen)
		if raw.StmtLen == 0 {
			sub.stmtEnd = len(sql)
		}
		if err := sub.bodyStatement(raw.Stmt, ctx, opts); err != nil {
			return a.bodyError(ctx, err)
		}
	}
	return nil
}

// bodyStatement applies the top-level rules to one statement of a body,
// and refuses it if it would need rewriting.
func (a *analyzer) bodyStatement(n *pg.Node, ctx *bodyCtx, opts nestOpts) error {
	a.stmt = &Statement{}
	a.rawStmt, a.mentioned = n, nil
	if ex := executeWithArgs(n); ex != nil {
		return a.errorf(nil, int32(a.stmtStart), "SQL-level EXECUTE %s(...) with arguments is not supported", ex.Name)
	}
	if err := a.recordRefs(n, ctx, opts); err != nil {
		return err
	}
	if err := a.lexerSettings(n); err != nil {
		return err
	}
	m := a.mark()
	if err := a.statement(n); err != nil {
		return err
	}
	if col, ok := a.rewrittenSince(m); ok {
		what := "a PHI column"
		if col != nil {
			what = "PHI column " + col.QualifiedName()
		}
		return a.errorf(col, int32(a.stmtStart), "a statement that writes or compares %s with a value is not supported here: phiproxy would have to rewrite it, and the server runs it later, unrewritten (run such statements through phiproxy directly)", what)
	}
	if opts.readsPHI != nil && *opts.readsPHI == nil && a.lastOut != nil && (a.lastOut.carriesPHI() || len(a.lastOut.stars) > 0) {
		col := a.lastOut.firstPHI()
		for _, c := range a.lastOut.cols {
			if col == nil && c.idx != nil {
				col = c.idx
			}
		}
		if col == nil && len(a.lastOut.stars) > 0 && len(a.lastOut.stars[0].Columns) > 0 {
			col = a.lastOut.stars[0].Columns[0]
		}
		*opts.readsPHI = col
	}
	if opts.output && a.lastOut != nil && (a.lastOut.carriesPHI() || len(a.lastOut.stars) > 0) {
		col := a.lastOut.firstPHI()
		name := "PHI columns"
		if col != nil {
			name = "PHI column " + col.QualifiedName()
		}
		return a.errorf(col, int32(a.stmtStart), "returning %s from a function is not supported: its result would carry ciphertext under another name, neither decrypted nor protected (select them in the query that calls it)", name)
	}
	return nil
}

// recordRefs refuses, in a body statement, a field named like a PHI or
// blind-index column of any variable (NEW.email, r.ssn, blk.r.ssn,
// (v).email, $1.email: a composite that may hold a policy table's row, its
// field ciphertext), and a whole record variable (NEW, r, r.*) unless opts
// allow the statement to be just that record.
func (a *analyzer) recordRefs(n *pg.Node, ctx *bodyCtx, opts nestOpts) error {
	if opts.recordExpr && isRecordSelect(n, ctx) {
		return nil
	}
	var err error
	field := func(v, name string, loc int32) bool {
		if col := a.phiNamed(name); col != nil {
			err = a.errorf(col, loc, "field %s.%s may be PHI column %s: phiproxy cannot check what the body writes into it or compares it with", v, name, col.QualifiedName())
			return true
		}
		return false
	}
	eachMessage(n, func(m protoreflect.Message) bool {
		if err != nil {
			return false
		}
		switch x := m.Interface().(type) {
		case *pg.ColumnRef:
			for i, f := range x.Fields {
				s := f.GetString_()
				if s == nil || !ctx.records[s.Sval] && !ctx.vars[s.Sval] {
					continue
				}
				rest := x.Fields[i+1:]
				if ctx.records[s.Sval] && (len(rest) == 0 || rest[len(rest)-1].GetAStar() != nil) {
					err = a.errorf(nil, x.Location, "the whole record %s may hold a row of a PHI table, and its fields ciphertext: use its fields by name", s.Sval)
					return false
				}
				for _, r := range rest {
					if rs := r.GetString_(); rs != nil && field(s.Sval, rs.Sval, x.Location) {
						return false
					}
				}
			}
		case *pg.A_Indirection:
			v := ""
			switch {
			case x.Arg.GetParamRef() != nil:
				v = fmt.Sprintf("$%d", x.Arg.GetParamRef().Number)
			case x.Arg.GetColumnRef() != nil && len(x.Arg.GetColumnRef().Fields) > 0:
				fs := x.Arg.GetColumnRef().Fields
				if s := fs[len(fs)-1].GetString_(); s != nil && (ctx.vars[s.Sval] || ctx.records[s.Sval]) {
					v = s.Sval
				}
			}
			if v == "" {
				return true
			}
			for _, ind := range x.Indirection {
				if s := ind.GetString_(); s != nil && field(v, s.Sval, nodeLocation(x.Arg)) {
					return false
				}
			}
		}
		return true
	})
	return err
}

// lexerSettings are the settings that change how the server reads string
// literals (issue 9, item 1). phiproxy follows a change the client makes
// at the top level; one made inside a body, at a moment only the server
// knows, would leave phiproxy reading later statements differently.
var lexerSettings = map[string]bool{"standard_conforming_strings": true, "client_encoding": true}

// lexerSettings refuses, in a body, SET / RESET (ALL) of those settings
// and set_config() of them or of a name built at run time.
func (a *analyzer) lexerSettings(n *pg.Node) error {
	var err error
	eachMessage(n, func(m protoreflect.Message) bool {
		if err != nil {
			return false
		}
		switch x := m.Interface().(type) {
		case *pg.VariableSetStmt:
			if x.Kind == pg.VariableSetKind_VAR_RESET_ALL || lexerSettings[strings.ToLower(x.Name)] {
				err = a.errorf(nil, int32(a.stmtStart), "SET or RESET of standard_conforming_strings or client_encoding (or RESET ALL) in a body is not supported: phiproxy would not know when it takes effect")
			}
		case *pg.FuncCall:
			names := typeNames(x.Funcname)
			if len(names) == 0 || strings.ToLower(names[len(names)-1]) != "set_config" || len(x.Args) == 0 {
				return true
			}
			name, ok := constantArg(x.Args[0])
			if !ok || lexerSettings[strings.ToLower(name)] {
				err = a.errorf(nil, x.Location, "set_config() of standard_conforming_strings, client_encoding or a name built at run time in a body is not supported: phiproxy would not know when it takes effect")
			}
		}
		return err == nil
	})
	return err
}

// constantArg returns the value of a string constant argument (possibly
// cast to text).
func constantArg(n *pg.Node) (string, bool) {
	for n.GetTypeCast() != nil && (isType(n.GetTypeCast().TypeName, "text") || isType(n.GetTypeCast().TypeName, "varchar")) {
		n = n.GetTypeCast().Arg
	}
	c := n.GetAConst()
	if c == nil || c.GetSval() == nil {
		return "", false
	}
	return c.GetSval().Sval, true
}

// isRecordSelect reports whether n is SELECT rec (or NULL), nothing else.
func isRecordSelect(n *pg.Node, ctx *bodyCtx) bool {
	s := n.GetSelectStmt()
	if s == nil || len(s.TargetList) != 1 || len(s.FromClause) > 0 || s.WhereClause != nil {
		return false
	}
	v := s.TargetList[0].GetResTarget().GetVal()
	if c := v.GetAConst(); c != nil && c.Isnull {
		return true
	}
	cr := v.GetColumnRef()
	if cr == nil || len(cr.Fields) != 1 {
		return false
	}
	f := cr.Fields[0].GetString_()
	return f != nil && ctx.records[f.Sval]
}

// phiNamed returns a PHI column (or the column whose blind index it is)
// named name in any policy table, or nil.
func (a *analyzer) phiNamed(name string) *policy.Column {
	for _, t := range a.pol.Tables() {
		if c := t.Column(name); c != nil {
			return c
		}
		if c := t.IndexColumn(name); c != nil {
			return c
		}
	}
	return nil
}

// backslashInString refuses a standard string constant with a backslash:
// it reads differently with standard_conforming_strings off, and the
// server reads a function body with the setting of the session that runs
// it.
func backslashInString(sql string) error {
	ts, err := scan(sql)
	if err != nil {
		return err
	}
	for _, t := range ts {
		raw := sql[t.start:t.end]
		if t.kind == pg.Token_SCONST && strings.HasPrefix(raw, "'") && strings.Contains(raw, `\`) {
			return fmt.Errorf("a string constant with a backslash is not supported in a body: its meaning depends on standard_conforming_strings when the body runs (write it with E'' or without backslashes)")
		}
	}
	return nil
}

// plpgsqlStatements are the PL/pgSQL statement kinds (PostgreSQL 17's
// PLPGSQL_STMT_*), and which of their expressions hold dynamic SQL. An
// unknown kind is refused.
var plpgsqlStatements = map[string][]string{
	"PLpgSQL_stmt_block": nil, "PLpgSQL_stmt_assign": nil, "PLpgSQL_stmt_if": nil, "PLpgSQL_stmt_case": nil,
	"PLpgSQL_stmt_loop": nil, "PLpgSQL_stmt_while": nil, "PLpgSQL_stmt_fori": nil, "PLpgSQL_stmt_fors": nil,
	"PLpgSQL_stmt_forc": nil, "PLpgSQL_stmt_foreach_a": nil, "PLpgSQL_stmt_exit": nil, "PLpgSQL_stmt_return": nil,
	"PLpgSQL_stmt_return_next": nil, "PLpgSQL_stmt_return_query": {"dynquery"}, "PLpgSQL_stmt_raise": nil,
	"PLpgSQL_stmt_assert": nil, "PLpgSQL_stmt_execsql": nil, "PLpgSQL_stmt_dynexecute": {"query"},
	"PLpgSQL_stmt_dynfors": {"query"}, "PLpgSQL_stmt_getdiag": nil, "PLpgSQL_stmt_open": {"dynquery"},
	"PLpgSQL_stmt_fetch": nil, "PLpgSQL_stmt_close": nil, "PLpgSQL_stmt_perform": nil, "PLpgSQL_stmt_call": nil,
	"PLpgSQL_stmt_commit": nil, "PLpgSQL_stmt_rollback": nil,
}

// sqlStringFunctions run the SQL text given as their argument number n
// (query_to_xml('SELECT ...', ...)); ts_rewrite only in its two-argument
// form. A constant is analysed like a body; anything else is refused.
var sqlStringFunctions = map[string]int{
	"query_to_xml": 0, "query_to_xmlschema": 0, "query_to_xml_and_xmlschema": 0, "ts_stat": 0, "ts_rewrite": 1,
}

// relationXMLFunctions start the names of the functions that read a
// relation, schema, database or cursor named by their argument
// (table_to_xml, table_to_xmlschema, table_to_xml_and_xmlschema, and the
// schema_, database_ and cursor_ ones): nothing in their result tells
// which values are ciphertext, so they are refused whatever they name.
var relationXMLFunctions = []string{"table_to_xml", "schema_to_xml", "database_to_xml", "cursor_to_xml"}

// sqlFunction checks a call of a function that runs SQL it is given as a
// string, which phiproxy would otherwise never see: dblink's functions
// (any of them: they open a second connection, around phiproxy) are
// refused; the query of the others must be a string constant, analysed
// like a function body.
func (a *analyzer) sqlFunction(f *pg.FuncCall) error {
	names := typeNames(f.Funcname)
	if len(names) == 0 {
		return nil
	}
	name := strings.ToLower(names[len(names)-1])
	if strings.HasPrefix(name, "dblink") {
		return a.errorf(nil, f.Location, "function %s() is not supported while a PHI policy is active: it runs SQL on a second connection that bypasses phiproxy", name)
	}
	for _, p := range relationXMLFunctions {
		if strings.HasPrefix(name, p) {
			return a.errorf(nil, f.Location, "function %s() is not supported while a PHI policy is active: it reads a whole table, schema, database or cursor by name, and would return the stored ciphertext of PHI columns as their values (select the columns instead)", name)
		}
	}
	i, ok := sqlStringFunctions[name]
	if !ok || name == "ts_rewrite" && len(f.Args) != 2 {
		return nil
	}
	ctx := &bodyCtx{where: "the query of " + name + "()", records: map[string]bool{}, vars: map[string]bool{}}
	if i >= len(f.Args) {
		return nil
	}
	query, ok := constantArg(f.Args[i])
	if !ok {
		return a.errorf(nil, f.Location, "%s() of a query built at run time is not supported while a PHI policy is active: phiproxy cannot check what it runs (a string constant is)", name)
	}
	return a.nested(query, ctx, nestOpts{})
}

// plFunc is one parsed PL/pgSQL function or DO block.
type plFunc struct {
	a      *analyzer
	ctx    *bodyCtx
	datums []plDatum
	newNo  int // datum numbers of NEW and OLD, -1 if none
	oldNo  int
	// phiCursors are the cursor variables (datum numbers) whose query
	// returns PHI columns, and the first such column.
	phiCursors map[int]*policy.Column
}

type plDatum struct {
	kind string         // PLpgSQL_var, PLpgSQL_rec, PLpgSQL_row, PLpgSQL_recfield, ...
	body map[string]any // its fields
}

// plpgsql parses a DO or CREATE FUNCTION statement built by the caller
// with pg_query's PL/pgSQL parser and checks every statement, expression
// and write target in it.
func (a *analyzer) plpgsql(stmt *pg.Node, ctx *bodyCtx) error {
	if a.depth >= maxNesting {
		return a.refuseBody(ctx, nil, "code nested too deeply to check")
	}
	version := a.version
	if version == 0 {
		version = 170007 // pg_query_go v6: PostgreSQL 17
	}
	text, err := pg.Deparse(&pg.ParseResult{Version: version, Stmts: []*pg.RawStmt{{Stmt: stmt}}})
	if err != nil {
		return a.refuseBody(ctx, nil, "the body cannot be checked")
	}
	out, err := pg.ParsePlPgSqlToJSON(text)
	if err != nil {
		return a.refuseBody(ctx, nil, "the PL/pgSQL body cannot be parsed (%s), so it cannot be checked", plpgsqlMessage(err))
	}
	var funcs []map[string]map[string]any
	if err := json.Unmarshal([]byte(out), &funcs); err != nil || len(funcs) != 1 || funcs[0]["PLpgSQL_function"] == nil {
		return a.refuseBody(ctx, nil, "the PL/pgSQL body cannot be read, so it cannot be checked")
	}
	fn := funcs[0]["PLpgSQL_function"]
	f := &plFunc{a: a, ctx: ctx, newNo: -1, oldNo: -1, phiCursors: map[int]*policy.Column{}}
	if v, ok := fn["new_varno"].(float64); ok {
		f.newNo = int(v)
	}
	if v, ok := fn["old_varno"].(float64); ok {
		f.oldNo = int(v)
	}
	if ctx.trigger && (f.newNo < 0 || f.oldNo < 0) {
		return a.refuseBody(ctx, nil, "the trigger function's NEW and OLD cannot be found, so it cannot be checked")
	}
	datums, _ := fn["datums"].([]any)
	for _, d := range datums {
		m, _ := d.(map[string]any)
		var pd plDatum
		for k, v := range m {
			pd.kind, pd.body = k, asMap(v)
		}
		f.datums = append(f.datums, pd)
	}
	if err := f.checkDatums(); err != nil {
		return err
	}
	if fn["action"] == nil {
		return a.refuseBody(ctx, nil, "the PL/pgSQL body cannot be read, so it cannot be checked")
	}
	return f.visit(fn["action"])
}

// plpgsqlMessage keeps the PL/pgSQL parser's message without the token it
// quotes (it may be a value).
func plpgsqlMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, " at or near "); i >= 0 {
		msg = msg[:i]
	}
	if strings.ContainsAny(msg, `"'$`) {
		return "syntax error"
	}
	return msg
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func (f *plFunc) datum(no int) (plDatum, bool) {
	if no < 0 || no >= len(f.datums) {
		return plDatum{}, false
	}
	return f.datums[no], true
}

// checkDatums records the record variables and refuses writes to fields
// named like PHI columns (NEW.email := ..., SELECT ... INTO r.ssn).
func (f *plFunc) checkDatums() error {
	for _, d := range f.datums {
		name, _ := d.body["refname"].(string)
		if d.kind != "PLpgSQL_row" && name != "" {
			f.ctx.vars[name] = true
		}
		switch d.kind {
		case "PLpgSQL_rec":
			f.ctx.records[name] = true
		case "PLpgSQL_var":
			if dt := asMap(asMap(d.body["datatype"])["PLpgSQL_type"]); dt != nil {
				if typ, _ := dt["typname"].(string); f.rowTypeName(typ) != nil {
					f.ctx.records[name] = true
				}
			}
		}
	}
	for i, d := range f.datums {
		switch d.kind {
		case "PLpgSQL_recfield":
			field, _ := d.body["fieldname"].(string)
			parent, _ := d.body["recparentno"].(float64)
			p, _ := f.datum(int(parent))
			pname, _ := p.body["refname"].(string)
			// The parser makes one for each rec.field the body reads or
			// writes: writing NEW.email would store plaintext, reading it
			// gets ciphertext the body may compare with a value.
			if col := f.a.phiNamed(field); col != nil {
				return f.a.refuseBody(f.ctx, col, "field %s.%s may be PHI column %s: phiproxy cannot check what the body writes into it or compares it with", pname, field, col.QualifiedName())
			}
		case "PLpgSQL_var":
			if e := asMap(asMap(d.body["default_val"])["PLpgSQL_expr"]); e != nil {
				if err := f.into(e, true, nestOpts{}); err != nil {
					return err
				}
			}
			if e := asMap(asMap(d.body["cursor_explicit_expr"])["PLpgSQL_expr"]); e != nil {
				if err := f.cursor(i, e); err != nil {
					return err
				}
			}
		case "PLpgSQL_rec", "PLpgSQL_row":
		default:
			return f.a.refuseBody(f.ctx, nil, "a PL/pgSQL variable of kind %s cannot be checked", strings.TrimPrefix(d.kind, "PLpgSQL_"))
		}
	}
	return nil
}

// rowTypeName returns the policy table whose row type a PL/pgSQL type name
// ("patients", "public.patients%ROWTYPE") names; nil for "t.col%TYPE".
func (f *plFunc) rowTypeName(typ string) *policy.Table {
	typ = strings.TrimSpace(typ)
	l := strings.ToLower(typ)
	if strings.HasSuffix(l, "%type") {
		return nil
	}
	l = strings.TrimSuffix(l, "%rowtype")
	l = strings.TrimSuffix(l, "[]")
	parts := strings.Split(l, ".")
	name := strings.Trim(parts[len(parts)-1], `"`)
	if ts := f.a.pol.TablesNamed(name); len(ts) > 0 {
		return ts[0]
	}
	return nil
}

// visit walks the statement tree.
func (f *plFunc) visit(v any) error {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if err := f.visit(e); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, body := range x {
			switch {
			case strings.HasPrefix(k, "PLpgSQL_stmt_"):
				if err := f.stmt(k, asMap(body)); err != nil {
					return err
				}
			case k == "PLpgSQL_expr":
				if err := f.expr(asMap(body), nestOpts{}); err != nil {
					return err
				}
			case k == "PLpgSQL_rec":
				// In the statement tree a record is a write target: INTO,
				// FOR ... IN, FETCH ... INTO.
				if err := f.target(asMap(body)["dno"]); err != nil {
					return err
				}
			default:
				if err := f.visit(body); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// target refuses writing a whole row into NEW or OLD (the row a BEFORE
// trigger stores).
func (f *plFunc) target(no any) error {
	n, ok := no.(float64)
	if !ok || !f.ctx.trigger {
		return nil
	}
	if int(n) == f.newNo || int(n) == f.oldNo {
		return f.a.refuseBody(f.ctx, nil, "writing into the trigger's NEW or OLD record is not supported: the server could store the values in plaintext (assign non-PHI fields one by one)")
	}
	return nil
}

func (f *plFunc) stmt(kind string, body map[string]any) error {
	dynamic, known := plpgsqlStatements[kind]
	if !known {
		return f.a.refuseBody(f.ctx, nil, "the PL/pgSQL statement %s cannot be checked", strings.TrimPrefix(kind, "PLpgSQL_stmt_"))
	}
	skip := map[string]bool{}
	// Whether the statement's result fills plain variables: INTO a, b /
	// FOR a, b IN.
	into, _ := body["into"].(bool)
	fills := into && scalarTarget(body["target"]) || scalarTarget(body["var"])
	for _, key := range dynamic {
		e := asMap(asMap(body[key])["PLpgSQL_expr"])
		if e == nil {
			continue
		}
		skip[key] = true
		if err := f.dynamic(e, kind == "PLpgSQL_stmt_return_query", fills); err != nil {
			return err
		}
	}
	switch kind {
	case "PLpgSQL_stmt_assign":
		if err := f.target(body["varno"]); err != nil {
			return err
		}
		skip["expr"] = true
		if e := asMap(asMap(body["expr"])["PLpgSQL_expr"]); e != nil {
			if err := f.into(e, true, nestOpts{}); err != nil {
				return err
			}
		}
	case "PLpgSQL_stmt_execsql":
		if e := asMap(asMap(body["sqlstmt"])["PLpgSQL_expr"]); e != nil {
			skip["sqlstmt"] = true
			if err := f.into(e, fills, nestOpts{}); err != nil {
				return err
			}
		}
	case "PLpgSQL_stmt_fors":
		if e := asMap(asMap(body["query"])["PLpgSQL_expr"]); e != nil {
			skip["query"] = true
			if err := f.into(e, fills, nestOpts{}); err != nil {
				return err
			}
		}
	case "PLpgSQL_stmt_open":
		if e := asMap(asMap(body["query"])["PLpgSQL_expr"]); e != nil {
			skip["query"] = true
			no, _ := body["curvar"].(float64)
			if err := f.cursor(int(no), e); err != nil {
				return err
			}
		}
	case "PLpgSQL_stmt_fetch":
		no, _ := body["curvar"].(float64)
		if col := f.phiCursors[int(no)]; col != nil && scalarTarget(body["target"]) {
			return f.readIntoVariable(col)
		}
	case "PLpgSQL_stmt_foreach_a":
		if err := f.target(body["varno"]); err != nil {
			return err
		}
	case "PLpgSQL_stmt_getdiag":
		for _, it := range asSlice(body["diag_items"]) {
			if err := f.target(asMap(asMap(it)["PLpgSQL_diag_item"])["target"]); err != nil {
				return err
			}
		}
	case "PLpgSQL_stmt_return", "PLpgSQL_stmt_return_next":
		e := asMap(asMap(body["expr"])["PLpgSQL_expr"])
		skip["expr"] = true
		if e == nil {
			break
		}
		if f.ctx.trigger && kind == "PLpgSQL_stmt_return" {
			q, _ := e["query"].(string)
			if !f.returnsRow(q) {
				return f.a.refuseBody(f.ctx, nil, "a trigger function may only RETURN NEW, OLD or NULL through phiproxy: a BEFORE trigger stores the row it returns")
			}
			break
		}
		if err := f.expr(e, nestOpts{recordExpr: true}); err != nil {
			return err
		}
	case "PLpgSQL_stmt_return_query":
		if e := asMap(asMap(body["query"])["PLpgSQL_expr"]); e != nil {
			skip["query"] = true
			if err := f.expr(e, nestOpts{output: true}); err != nil {
				return err
			}
		}
	}
	for k, v := range body {
		if !skip[k] {
			if err := f.visit(v); err != nil {
				return err
			}
		}
	}
	return nil
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// scalarTarget reports whether an INTO / FETCH target is a list of plain
// variables (a PLpgSQL_row) rather than a record, whose fields the record
// rules follow.
func scalarTarget(t any) bool {
	_, row := asMap(t)["PLpgSQL_row"]
	return row
}

// into analyses e, whose result fills variables when fills is true: a
// PHI column read into a plain variable is refused, since phiproxy does not
// follow the variable to what the body compares it with (v = 'x').
func (f *plFunc) into(e map[string]any, fills bool, opts nestOpts) error {
	if !fills {
		return f.expr(e, opts)
	}
	var col *policy.Column
	opts.readsPHI = &col
	if err := f.expr(e, opts); err != nil {
		return err
	}
	if col != nil {
		return f.readIntoVariable(col)
	}
	return nil
}

func (f *plFunc) readIntoVariable(col *policy.Column) error {
	return f.a.refuseBody(f.ctx, col, "reading PHI column %s into a variable is not supported: phiproxy cannot follow what the body compares the ciphertext with (a record variable's fields are checked by name)", col.QualifiedName())
}

// cursor analyses a cursor's query (DECLARE c CURSOR FOR, OPEN c FOR) and
// remembers whether it returns PHI, for FETCH ... INTO.
func (f *plFunc) cursor(no int, e map[string]any) error {
	var col *policy.Column
	if err := f.expr(e, nestOpts{readsPHI: &col}); err != nil {
		return err
	}
	if col != nil {
		f.phiCursors[no] = col
	}
	return nil
}

// returnsRow reports whether a trigger's RETURN expression is NEW, OLD or
// NULL.
func (f *plFunc) returnsRow(q string) bool {
	tree, err := pg.Parse("SELECT " + q)
	if err != nil || len(tree.Stmts) != 1 {
		return false
	}
	s := tree.Stmts[0].Stmt.GetSelectStmt()
	if s == nil || len(s.TargetList) != 1 || len(s.FromClause) > 0 || s.WhereClause != nil {
		return false
	}
	v := s.TargetList[0].GetResTarget().GetVal()
	if c := v.GetAConst(); c != nil && c.Isnull {
		return true
	}
	cr := v.GetColumnRef()
	if cr == nil || len(cr.Fields) != 1 {
		return false
	}
	name := cr.Fields[0].GetString_()
	return name != nil && (name.Sval == "new" || name.Sval == "old")
}

// expr analyses one PL/pgSQL expression or SQL statement: parse mode 0 is
// a statement, 2 an expression (read by the server as SELECT <expr>, FROM
// and WHERE included), 3-5 an assignment target := expression.
func (f *plFunc) expr(e map[string]any, opts nestOpts) error {
	q, ok := e["query"].(string)
	if !ok {
		return f.a.refuseBody(f.ctx, nil, "a PL/pgSQL expression cannot be read")
	}
	mode, _ := e["parseMode"].(float64)
	var sql string
	switch int(mode) {
	case 0:
		sql = q
	case 2:
		sql = "SELECT " + q
	case 3, 4, 5:
		rest, ok := assignedExpr(q)
		if !ok {
			return f.a.refuseBody(f.ctx, nil, "a PL/pgSQL assignment cannot be read")
		}
		sql = "SELECT " + rest
	default:
		return f.a.refuseBody(f.ctx, nil, "a PL/pgSQL expression of parse mode %d cannot be checked", int(mode))
	}
	return f.a.nested(sql, f.ctx, opts)
}

// assignedExpr returns the expression of "target := expr" (or "target =
// expr"): what follows the first := or = outside brackets.
func assignedExpr(q string) (string, bool) {
	ts, err := scan(q)
	if err != nil {
		return "", false
	}
	depth := 0
	for _, t := range ts {
		switch t.kind {
		case pg.Token_ASCII_40, pg.Token_ASCII_91:
			depth++
		case pg.Token_ASCII_41, pg.Token_ASCII_93:
			depth--
		case pg.Token_COLON_EQUALS, pg.Token_ASCII_61:
			if depth == 0 {
				return q[t.end:], true
			}
		}
	}
	return "", false
}

// dynamic checks the query of EXECUTE, FOR ... IN EXECUTE, RETURN QUERY
// EXECUTE and OPEN ... FOR EXECUTE: it must be one string constant, which
// is analysed as SQL with the same rules.
func (f *plFunc) dynamic(e map[string]any, output, fills bool) error {
	q, _ := e["query"].(string)
	sql, ok := constantString("SELECT " + q)
	if !ok {
		return f.a.refuseBody(f.ctx, nil, "dynamic SQL (EXECUTE of a string built at run time) is not supported while a PHI policy is active: phiproxy cannot check what it runs (EXECUTE of a string constant is)")
	}
	var col *policy.Column
	opts := nestOpts{output: output}
	if fills {
		opts.readsPHI = &col
	}
	if err := f.a.nested(sql, f.ctx, opts); err != nil {
		return err
	}
	if col != nil {
		return f.readIntoVariable(col)
	}
	return nil
}

// constantString returns the value of SELECT '<constant>' (possibly cast to
// text), false for anything else.
func constantString(sql string) (string, bool) {
	tree, err := pg.Parse(sql)
	if err != nil || len(tree.Stmts) != 1 {
		return "", false
	}
	s := tree.Stmts[0].Stmt.GetSelectStmt()
	if s == nil || len(s.TargetList) != 1 || len(s.FromClause) > 0 || s.WhereClause != nil || s.Op != pg.SetOperation_SETOP_NONE {
		return "", false
	}
	v := s.TargetList[0].GetResTarget().GetVal()
	for v.GetTypeCast() != nil {
		tn := v.GetTypeCast().TypeName
		if !isType(tn, "text") && !isType(tn, "varchar") {
			return "", false
		}
		v = v.GetTypeCast().Arg
	}
	c := v.GetAConst()
	if c == nil || c.GetSval() == nil {
		return "", false
	}
	return c.GetSval().Sval, true
}

// createTrigger checks CREATE TRIGGER: allowed on any table (the function
// is checked where it is created), except what gives a policy table's rows
// a second name or stores a comparison with a value.
func (a *analyzer) createTrigger(s *pg.CreateTrigStmt) error {
	t, err := a.rangeVarTable(s.Relation, nil)
	if err != nil {
		return err
	}
	if t != nil && len(s.TransitionRels) > 0 {
		return a.tableError(t, s.Relation.Location, "a trigger on PHI table %s with transition tables (REFERENCING ... TABLE AS) is not supported: they are second names for the table's rows, which a function could compare with values phiproxy never sees", t.QualifiedName())
	}
	if s.WhenClause == nil {
		return nil
	}
	sc := &scope{}
	if t != nil {
		sc.entries = []*rangeEntry{
			{name: "new", table: t, schema: t.Schema, rel: t.Name},
			{name: "old", table: t, schema: t.Schema, rel: t.Name},
		}
	} else if rv := s.Relation; rv != nil {
		sc.entries = []*rangeEntry{{name: "new", schema: rv.Schemaname, rel: rv.Relname}, {name: "old", schema: rv.Schemaname, rel: rv.Relname}}
	}
	m := a.mark()
	if err := a.expr(s.WhenClause, sc, ""); err != nil {
		return err
	}
	if col, ok := a.rewrittenSince(m); ok {
		return a.errorf(col, int32(a.stmtStart), "a trigger WHEN condition that compares a PHI column with a value is not supported: the server keeps it and evaluates it later, on ciphertext")
	}
	return nil
}
