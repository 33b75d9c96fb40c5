package rewrite

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// maxParams is PostgreSQL's limit on the parameters of one statement.
const maxParams = 65535

// slotPlaceholder fills each literal slot of a template. It is a parameter
// that cannot exist, so a template sent without its literals spliced in
// fails at the server ("there is no parameter $0") instead of writing
// anything.
const slotPlaceholder = "$0"

// Analyze turns one SQL text (possibly several statements) into a Plan, or
// rejects it with an *Error. It does no I/O; cat may be nil when nothing is
// known about the database (INSERT without a column list into a PHI table
// is then rejected).
func Analyze(sql string, pol *policy.Policy, cat Catalog) (*Plan, error) {
	if pol.Empty() || !mentionsPolicy(sql, pol) {
		return &Plan{SQL: sql, Passthrough: true}, nil
	}
	tree, err := parse(sql)
	if err != nil {
		return nil, err
	}
	a := &analyzer{sql: sql, pol: pol, cat: cat, version: tree.Version, single: len(tree.Stmts) == 1}
	plan := &Plan{}
	viewsChanged := false
	for i, raw := range tree.Stmts {
		st := Statement{}
		a.stmt, a.stmtIndex = &st, i
		a.stmtStart, a.stmtEnd = int(raw.StmtLocation), int(raw.StmtLocation+raw.StmtLen)
		if raw.StmtLen == 0 {
			a.stmtEnd = len(sql)
		}
		a.mentioned, a.rawStmt = nil, raw.Stmt
		if ex := executeWithArgs(raw.Stmt); ex != nil {
			// The statement may be one the proxy rewrote: its arguments
			// would reach it unencrypted.
			return nil, a.errorf(nil, int32(a.stmtStart), "SQL-level EXECUTE %s(...) with arguments is not supported while a PHI policy is active (the arguments would reach the server unencrypted); use the extended protocol (Bind) or EXECUTE without arguments", ex.Name)
		}
		if err := a.statement(raw.Stmt); err != nil {
			return nil, err
		}
		if viewsChanged && st.Kind != KindTransaction {
			return nil, a.errorf(nil, int32(a.stmtStart), "%s", errAfterViewChange)
		}
		viewsChanged = viewsChanged || st.ChangesViews
		plan.Statements = append(plan.Statements, st)
	}
	touched := false
	for _, st := range plan.Statements {
		if len(st.Tables) > 0 {
			touched = true
		}
	}
	if !touched && len(a.edits) == 0 {
		plan.SQL, plan.Passthrough = sql, true
		plan.ClientParams = a.maxParam
		return plan, nil
	}
	if err := a.finish(plan); err != nil {
		return nil, err
	}
	a.finalizeCopy(plan)
	plan.Fingerprint = fingerprint(sql)
	return plan, nil
}

// role is what one use of a value does: the action, for which column and
// which of its blind indexes (nil: the exact one), and whether the value
// is an array of such values (= ANY($n)).
type role struct {
	action Action
	col    *policy.Column
	index  *policy.BlindIndex
	array  bool
	typ    string // the value's cast type (Param.Type)
	assign bool   // stored rather than compared (Param.Assign)
}

// paramUse is one $n of the input, in walk order.
type paramUse struct {
	num        int
	start, end int // the byte range to replace when renumbering
	recast     bool
	role       role
	at         assignAt // where a stored value goes (Param.Target, Param.Row)
}

// piece is part of an edit's replacement: fixed text, a literal slot or an
// added parameter (numbered when the analysis is done).
type piece struct {
	text  string
	lit   *Literal
	param *addedParam
	// target, alone in a piece, records where the piece sits in the
	// output (after a column name that is assigned to); with lit, the
	// literal's Target is taken from it.
	target *assignTarget
}

// assignTarget is the place after the name of a column that is assigned
// a value (Literal.Target), known once the edits are applied.
type assignTarget struct {
	end int // in the input: the end of the name, when it is the client's
	at  int // in the output
}

// assignAt is where a stored value goes: its column's name and its row of
// INSERT … VALUES (Literal.Target and Literal.Row).
type assignAt struct {
	target *assignTarget
	row    int
}

type addedParam struct {
	source int // 0-based client parameter
	role   role
}

// edit replaces sql[start:end] by its pieces (end == start inserts).
type edit struct {
	start, end int
	pieces     []piece
	seq        int
	col        *policy.Column // the PHI column the edit is for, when known
}

type analyzer struct {
	// stmtIndex is the statement's index in Plan.Statements; values, the
	// layouts of its INSERT … VALUES statements.
	stmtIndex int
	values    []*valuesMarks
	sql       string
	pol       *policy.Policy
	cat       Catalog
	toks      tokens // lazily scanned

	stmt               *Statement
	stmtStart, stmtEnd int

	edits       []edit
	uses        []paramUse
	maxParam    int
	touches     int // policy-table references seen, for "did this part touch PHI"
	badParam    int // a $n out of 1..65535
	hasBadParam bool
	mentioned   []*policy.Table // policy tables named anywhere in the statement, computed lazily
	rawStmt     *pg.Node

	// Code the server runs later (body.go): depth of nesting (0 for the
	// client's text), the parse tree's version (for pg_query Deparse),
	// the body being analysed (nil at the top), and the output of the
	// last statement analysed, to refuse bodies that return PHI.
	depth   int
	version int32
	body    *bodyCtx
	lastOut *derived

	// single: the text is one statement. copy is the COPY being planned
	// (copy.go), copyTail the length of what follows its query's closing
	// parenthesis in the output.
	single   bool
	copy     *Copy
	copyTail int
}

// errorf builds a 0A000 rejection about col (may be nil) at byte offset loc.
func (a *analyzer) errorf(col *policy.Column, loc int32, format string, args ...any) *Error {
	e := &Error{Code: CodeFeatureNotSupported, Message: fmt.Sprintf(format, args...)}
	if col != nil {
		e.Table, e.Column = col.Table.QualifiedName(), col.Name
	}
	if loc >= 0 && int(loc) <= len(a.sql) {
		e.Position = utf8.RuneCountInString(a.sql[:loc]) + 1
	}
	return e
}

// supported lists the forms every rejection of a use of a PHI column
// offers instead: the HINT of the ErrorResponse, so that the message
// stays a short reason.
const supported = "Supported on PHI columns: col = / <> value, col IN (values), col = ANY($n), col IS [NOT] NULL on columns with a blind index, " +
	"joins of two columns in one index_group, count(col), and plain column references in SELECT and RETURNING lists."

func (a *analyzer) reject(col *policy.Column, loc int32, what string) *Error {
	if col.Base != nil {
		return a.viewColumnError(col, loc, what)
	}
	return a.errorf(col, loc, "%s on PHI column %s is not supported: the database holds only its ciphertext", what, col.QualifiedName()).hint(supported)
}

// funcOfValueHint is the way out of comparing a PHI column with a
// function of a value.
const funcOfValueHint = "Compare it with the value itself, or apply the same function to both sides when a normalized index answers it."

// hint sets e's HINT to the sentences of parts, and returns e.
func (e *Error) hint(parts ...string) *Error {
	e.HintText = strings.Join(parts, " ")
	return e
}

func (a *analyzer) tokens() (tokens, error) {
	if a.toks == nil {
		ts, err := scan(a.sql)
		if err != nil {
			return nil, err
		}
		a.toks = ts
	}
	return a.toks, nil
}

func (a *analyzer) addEdit(start, end int, pieces ...piece) {
	a.edits = append(a.edits, edit{start: start, end: end, pieces: pieces, seq: len(a.edits)})
}

// addEditFor is addEdit for an edit about col.
func (a *analyzer) addEditFor(col *policy.Column, start, end int, pieces ...piece) {
	a.addEdit(start, end, pieces...)
	a.edits[len(a.edits)-1].col = col
}

// rewriteMark counts the edits and parameter uses so far: rewrittenSince
// tells whether anything after it needs rewriting.
type rewriteMark struct{ edits, uses int }

func (a *analyzer) mark() rewriteMark { return rewriteMark{len(a.edits), len(a.uses)} }

// rewrittenSince reports whether the analysis since m added an edit or a
// parameter that must be encrypted or indexed, and for which PHI column
// (nil if unknown).
func (a *analyzer) rewrittenSince(m rewriteMark) (*policy.Column, bool) {
	found := false
	var col *policy.Column
	for _, e := range a.edits[m.edits:] {
		found = true
		if col == nil {
			col = e.col
		}
		for _, p := range e.pieces {
			if col == nil && p.lit != nil {
				col = p.lit.Column
			}
			if col == nil && p.param != nil {
				col = p.param.role.col
			}
		}
	}
	for _, u := range a.uses[m.uses:] {
		if u.role.action != ActionNone || u.recast {
			found = true
			if col == nil {
				col = u.role.col
			}
		}
	}
	return col, found
}

func text(s string) piece { return piece{text: s} }

func (a *analyzer) touch(t *policy.Table) {
	a.touches++
	for _, x := range a.stmt.Tables {
		if x == t {
			return
		}
	}
	a.stmt.Tables = append(a.stmt.Tables, t)
}

// noteParam records a $n seen anywhere, whatever its role.
func (a *analyzer) noteParam(n int32) {
	if n < 1 || n > maxParams {
		a.badParam, a.hasBadParam = int(n), true
		return
	}
	if int(n) > a.maxParam {
		a.maxParam = int(n)
	}
}

// useParam records a use of $n in role r. start/end is the range that a
// renumbering replaces; recast is true when that range holds a cast that
// must go (the server sees ciphertext or an index, not the logical type).
func (a *analyzer) useParam(p *pg.ParamRef, r role, start, end int, recast bool, at assignAt) {
	a.noteParam(p.Number)
	if end <= start { // the bare token: $ and digits
		end = start + 1
		for end < len(a.sql) && a.sql[end] >= '0' && a.sql[end] <= '9' {
			end++
		}
	}
	a.uses = append(a.uses, paramUse{num: int(p.Number), start: start, end: end, recast: recast, role: r, at: at})
}

// finish numbers the parameters, applies the edits and fills the plan.
func (a *analyzer) finish(plan *Plan) error {
	if a.hasBadParam {
		// $0 is also the template placeholder: refuse it in the input.
		return &Error{Code: CodeUndefinedParameter, Message: fmt.Sprintf("there is no parameter $%d", a.badParam)}
	}
	plan.ClientParams = a.maxParam
	first := make(map[int]role, a.maxParam)
	firstAt := make(map[int]assignAt)
	for _, u := range a.uses {
		if _, ok := first[u.num]; !ok {
			first[u.num] = u.role
			firstAt[u.num] = u.at
		}
	}
	// A parameter that is a PHI value in one place and a plain value in
	// another would reach the server unencrypted through the plain use.
	for _, u := range a.uses {
		f := first[u.num]
		if (f.action == ActionNone) != (u.role.action == ActionNone) {
			col := f.col
			if col == nil {
				col = u.role.col
			}
			return a.errorf(col, int32(u.start), "parameter $%d is used both for PHI column %s and as a plain value, which would send it unencrypted", u.num, col.QualifiedName()).
				hint("Bind the value twice: a parameter is supported only where every use of it is a PHI column.")
		}
	}
	params := make([]Param, a.maxParam)
	for i := range params {
		r := first[i+1]
		params[i] = Param{Source: i, Action: r.action, Column: r.col, Index: r.index, Array: r.array, Type: r.typ, Assign: r.assign}
	}
	type key struct {
		source int
		role   role
	}
	numbers := map[key]int{}
	number := func(source int, r role) (int, error) {
		if first[source+1] == r {
			return source + 1, nil
		}
		k := key{source, r}
		if n, ok := numbers[k]; ok {
			return n, nil
		}
		if len(params) >= maxParams {
			return 0, a.errorf(r.col, -1, "too many parameters after adding blind-index parameters")
		}
		params = append(params, Param{Source: source, Action: r.action, Column: r.col, Index: r.index, Array: r.array, Type: r.typ, Assign: r.assign})
		numbers[k] = len(params)
		return len(params), nil
	}
	for _, u := range a.uses {
		n, err := number(u.num-1, u.role)
		if err != nil {
			return err
		}
		if n != u.num || u.recast {
			a.addEdit(u.start, u.end, text("$"+strconv.Itoa(n)))
		}
	}
	for _, e := range a.edits {
		for i := range e.pieces {
			if p := e.pieces[i].param; p != nil {
				n, err := number(p.source, p.role)
				if err != nil {
					return err
				}
				e.pieces[i].text = "$" + strconv.Itoa(n)
			}
		}
	}
	if len(a.uses) > 0 || len(params) > 0 {
		plan.Params = params
	}
	for _, m := range a.values {
		a.addEdit(m.end.end, m.end.end, piece{target: m.end})
	}
	// Apply the edits in text order; an insertion at the point where a
	// replacement starts goes first.
	sort.SliceStable(a.edits, func(i, j int) bool {
		x, y := a.edits[i], a.edits[j]
		if x.start != y.start {
			return x.start < y.start
		}
		if (x.start == x.end) != (y.start == y.end) {
			return x.start == x.end
		}
		return x.seq < y.seq
	})
	var b strings.Builder
	b.Grow(len(a.sql) + 64)
	at := 0
	for _, e := range a.edits {
		if e.start < at {
			return a.errorf(nil, int32(e.start), "statement too complex to rewrite safely (overlapping rewrites)")
		}
		plan.Runs = appendRun(plan.Runs, Run{SQL: b.Len(), Text: at, Len: e.start - at})
		b.WriteString(a.sql[at:e.start])
		for _, p := range e.pieces {
			if p.target != nil && p.lit == nil {
				p.target.at = b.Len()
				continue
			}
			if p.lit != nil {
				l := *p.lit
				if p.target != nil {
					l.Target = p.target.at
				}
				l.Start = b.Len()
				b.WriteString(slotPlaceholder)
				l.End = b.Len()
				plan.Literals = append(plan.Literals, l)
				continue
			}
			b.WriteString(p.text)
		}
		at = e.end
	}
	plan.Runs = appendRun(plan.Runs, Run{SQL: b.Len(), Text: at, Len: len(a.sql) - at})
	b.WriteString(a.sql[at:])
	plan.SQL = b.String()
	for _, m := range a.values {
		v := &InsertValues{Start: m.start.at, Insert: m.insert.at, Values: m.values.at, End: m.end.at}
		for _, r := range m.rows {
			v.Rows = append(v.Rows, [2]int{r[0].at, r[1].at})
		}
		plan.Statements[m.stmt].Values = v
	}
	for i := range plan.Params {
		if i < a.maxParam {
			if fa := firstAt[i+1]; fa.target != nil {
				plan.Params[i].Target, plan.Params[i].Row = fa.target.at, fa.row
			}
		}
	}
	return nil
}

// quoteIdent quotes an identifier unless PostgreSQL would read it bare as
// the same name.
func quoteIdent(s string) string {
	bare := s != "" && !reservedWords[s]
	for i := 0; i < len(s) && bare; i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '$')) {
			bare = false
		}
	}
	if bare {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// reservedWords are PostgreSQL's reserved and type/function-name keywords
// (appendix C), which cannot be bare column names.
var reservedWords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`all analyse analyze and any array as asc asymmetric authorization binary both case cast check
		collate collation column concurrently constraint create cross current_catalog current_date current_role
		current_schema current_time current_timestamp current_user default deferrable desc distinct do else end
		except false fetch for foreign freeze from full grant group having ilike in initially inner intersect into is
		isnull join lateral leading left like limit localtime localtimestamp natural not notnull null offset on only
		or order outer overlaps placing primary references returning right select session_user similar some symmetric
		system_user table tablesample then to trailing true union unique user using variadic verbose when where window with`) {
		m[w] = true
	}
	return m
}()
