package rewrite

import (
	"fmt"
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// One SQL statement of a body (body.go), checked with the top-level rules,
// and what is unsafe only inside a body: record references, changes of the
// settings that steer the lexer, string constants with a backslash, and
// functions that run SQL given to them as a string.

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
