package rewrite

import (
	"encoding/json"
	"strings"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// PL/pgSQL bodies (body.go): the function pg_query's PL/pgSQL parser
// returns, its variables (datums), and the walk over its statements.

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
