package rewrite

import (
	"fmt"
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
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
