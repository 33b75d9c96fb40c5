package rewrite

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// The PL/pgSQL statements one by one (body_plpgsql.go walks to them): their
// expressions, INTO targets, cursors, RETURN and dynamic SQL.

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
