package rewrite

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

// seedPolicy is the first customer's schema (config.example.yaml) plus a few
// tables for joins, groups and bytea storage.
const seedPolicy = `
tables:
  - name: public.patients
    columns:
      first_name:      { type: text }
      last_name:       { type: text }
      date_of_birth:   { type: date }
      ssn:             { type: text, blind_index: { index_group: ssn }, search: { digits: { normalize: [digits] } } }
      email:           { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }
      phone:           { type: text, blind_index: {}, search: { digits: { normalize: [digits] } } }
      address_line1:   { type: text }
      address_line2:   { type: text }
      city:            { type: text }
      state:           { type: text }
      postal_code:     { type: text }
      country:         { type: text }
      additional_info: { type: jsonb }
  - name: clinical_notes
    columns:
      diagnosis:       { type: text }
      medication:      { type: text }
      treatment_notes: { type: text }
  - name: billing.accounts
    columns:
      holder_ssn:      { type: text, blind_index: { index_group: ssn, column: ssn_hash }, search: { digits: { normalize: [digits], column: ssn_hash_digits } } }
      card:            { type: bytea, storage: bytea }
      SecretName:      { type: text, blind_index: {} }
`

// testCatalog knows the policy tables and a few plain ones.
type testCatalog map[string][]string

func (c testCatalog) Columns(schema, table string) ([]string, bool) {
	if schema == "" {
		schema = "public"
	}
	cols, ok := c[schema+"."+table]
	return cols, ok
}

// Generated implements GeneratedColumns: public.patients's created_at is
// taken for a generated column.
func (c testCatalog) Generated(schema, table string) ([]string, bool) {
	if _, ok := c[schema+"."+table]; !ok {
		return nil, false
	}
	if schema+"."+table == "public.patients" {
		return []string{"created_at"}, true
	}
	return nil, true
}

// collCatalog is a testCatalog that also knows collations: every column
// and the default share coll.
type collCatalog struct {
	testCatalog
	coll Collation
}

func (c collCatalog) Collation(schema, table, column string) (Collation, bool) { return c.coll, true }

var seedCatalog = testCatalog{
	"public.patients": {"id", "first_name", "last_name", "date_of_birth", "ssn", "ssn_bidx", "email", "email_bidx", "phone", "phone_bidx",
		"address_line1", "address_line2", "city", "state", "postal_code", "country", "additional_info", "created_at",
		// The normalized indexes, added when the policy gained them.
		"ssn_bidx_digits", "email_bidx_ci", "phone_bidx_digits"},
	"public.clinical_notes": {"id", "patient_id", "diagnosis", "medication", "treatment_notes", "created_at"},
	"public.orders":         {"id", "patient_id", "total", "status"},
	"billing.accounts":      {"id", "patient_id", "holder_ssn", "ssn_hash", "ssn_hash_digits", "card", "SecretName", "SecretName_bidx"},
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	total := 0
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { total += runGolden(t, f) })
	}
	t.Logf("%d golden cases", total)
}

type gcase struct {
	pre      []string // comments and blank lines before the case
	cmd      string
	input    string
	expected string
	line     int
}

func readGolden(t testing.TB, path string) ([]gcase, []string) {
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cases []gcase
	var pre []string
	n := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		n++
		return sc.Text(), true
	}
	for {
		line, ok := next()
		if !ok {
			return cases, pre
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			pre = append(pre, line)
			continue
		}
		c := gcase{pre: pre, cmd: line, line: n}
		pre = nil
		var in []string
		for {
			l, ok := next()
			if !ok {
				t.Fatalf("%s:%d: missing ----", path, c.line)
			}
			if l == "----" {
				break
			}
			in = append(in, l)
		}
		c.input = strings.Join(in, "\n")
		var out []string
		for {
			l, ok := next()
			if !ok || strings.TrimSpace(l) == "" {
				if ok {
					pre = append(pre, l)
				}
				break
			}
			out = append(out, l)
		}
		c.expected = strings.Join(out, "\n")
		cases = append(cases, c)
	}
}

func runGolden(t *testing.T, path string) int {
	cases, trailer := readGolden(t, path)
	policies := map[string]*policy.Policy{}
	seed, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	policies["seed"] = seed
	var out strings.Builder
	for i := range cases {
		c := &cases[i]
		got := runCommand(t, c, policies)
		if *update {
			c.expected = got
		} else if got != c.expected {
			t.Errorf("%s:%d: %s\n%s\n---- want:\n%s\n---- got:\n%s", path, c.line, c.cmd, c.input, c.expected, got)
		}
		for _, p := range c.pre {
			out.WriteString(p + "\n")
		}
		fmt.Fprintf(&out, "%s\n%s\n----\n%s\n", c.cmd, c.input, c.expected)
	}
	for _, p := range trailer {
		out.WriteString(p + "\n")
	}
	if *update {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return len(cases)
}

func runCommand(t *testing.T, c *gcase, policies map[string]*policy.Policy) string {
	fields := strings.Fields(c.cmd)
	args := map[string]string{}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		args[k] = v
	}
	switch fields[0] {
	case "policy":
		p, err := policy.Parse([]byte(c.input))
		if err != nil {
			return "error: " + err.Error()
		}
		policies[args["name"]] = p
		return "ok"
	case "analyze":
		name := args["policy"]
		if name == "" {
			name = "seed"
		}
		pol := policies[name]
		if pol == nil {
			t.Fatalf("line %d: unknown policy %q", c.line, name)
		}
		// The seed catalog's collations have ctype C (as the test
		// clusters' --locale=C); catalog=libc knows a locale-aware
		// ctype, catalog=nondeterministic an ICU case-insensitive
		// collation, catalog=plain knows no collation, catalog=none
		// nothing.
		var cat Catalog = collCatalog{seedCatalog, Collation{CTypeC: true}}
		switch args["catalog"] {
		case "none":
			cat = nil
		case "plain":
			cat = seedCatalog
		case "libc":
			cat = collCatalog{seedCatalog, Collation{}}
		case "nondeterministic":
			cat = collCatalog{seedCatalog, Collation{Nondeterministic: true}}
		}
		plan, err := Analyze(c.input, pol, cat)
		if err != nil {
			checkError(t, c, err, pol)
			e, ok := err.(*Error)
			if !ok {
				return "unexpected error: " + err.Error()
			}
			s := fmt.Sprintf("error %s: %s", e.Code, e.Message)
			if e.HintText != "" {
				s += "\nhint: " + e.HintText
			}
			if e.Exact != "" {
				// A parser error: PostgreSQL's words and position.
				s += fmt.Sprintf("\nexact: %s\nposition: %d", e.Exact, e.Position)
			}
			if e.Column != "" {
				s += fmt.Sprintf("\ncolumn: %s.%s", e.Table, e.Column)
			}
			return s
		}
		checkPlan(t, c.line, c.input, plan, pol)
		return renderPlan(plan)
	case "cursors":
		uses, err := Cursors(c.input)
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, u := range uses {
			out = append(out, renderCursor(u))
		}
		if len(out) == 0 {
			return "none"
		}
		return strings.Join(out, "\n")
	}
	t.Fatalf("line %d: unknown command %q", c.line, fields[0])
	return ""
}

// checkError asserts that a rejection never echoes a string literal of the
// input. A literal that is a policy table's or schema's name (a foreign
// table's table_name option) is a name the message may give.
func checkError(t *testing.T, c *gcase, err error, pol *policy.Policy) {
	t.Helper()
	res, serr := pg.Scan(c.input)
	if serr != nil {
		return
	}
	names := map[string]bool{}
	for _, tb := range pol.Tables() {
		names[tb.Name], names[tb.Schema] = true, true
	}
	for _, tok := range res.Tokens {
		if tok.Token != pg.Token_SCONST {
			continue
		}
		v := strings.Trim(c.input[tok.Start:tok.End], "'")
		if len(v) >= 3 && !names[v] && strings.Contains(err.Error(), v) {
			t.Errorf("line %d: error %q echoes literal %q", c.line, err, v)
		}
	}
}

// checkPlan asserts the plan's invariants: the SQL (with dummy literals
// spliced in) parses, slots are in order and hold the placeholder, and
// every parameter is described.
func checkPlan(t *testing.T, line int, input string, plan *Plan, pol *policy.Policy) {
	t.Helper()
	if plan.Passthrough {
		if plan.SQL != input || len(plan.Literals) > 0 {
			t.Errorf("line %d: passthrough plan changed the text", line)
		}
		return
	}
	filled, err := fillTemplate(plan, func(Literal) string { return "'dummy'" })
	if err != nil {
		t.Errorf("line %d: %v", line, err)
		return
	}
	if _, err := pg.Parse(filled); err != nil {
		t.Errorf("line %d: rewritten SQL does not parse: %v\n%s", line, err, filled)
	}
	if plan.ClientParams > 0 && len(plan.Params) < plan.ClientParams {
		t.Errorf("line %d: %d params described, client binds %d", line, len(plan.Params), plan.ClientParams)
	}
	for i, p := range plan.Params {
		if p.Source < 0 || p.Source >= plan.ClientParams {
			t.Errorf("line %d: $%d has source %d of %d", line, i+1, p.Source, plan.ClientParams)
		}
		if (p.Action == ActionNone) != (p.Column == nil) {
			t.Errorf("line %d: $%d action/column mismatch", line, i+1)
		}
	}
	if v := violations(filled, plan, pol); v != "" {
		t.Errorf("line %d: %s\n%s", line, v, filled)
	}
}

// fillTemplate splices a replacement for each literal slot into plan.SQL.
func fillTemplate(plan *Plan, fill func(Literal) string) (string, error) {
	var b strings.Builder
	at := 0
	for _, l := range plan.Literals {
		if l.Start < at || l.End > len(plan.SQL) || plan.SQL[l.Start:l.End] != slotPlaceholder {
			return "", fmt.Errorf("bad literal slot [%d,%d) in %q", l.Start, l.End, plan.SQL)
		}
		b.WriteString(plan.SQL[at:l.Start])
		b.WriteString(fill(l))
		at = l.End
	}
	b.WriteString(plan.SQL[at:])
	return b.String(), nil
}

var actionNames = map[Action]string{ActionNone: "none", ActionEncrypt: "encrypt", ActionIndex: "index", ActionIndexNormalized: "index-as-is"}

// indexedName is "col" for a value of col or its exact index, "col.name"
// for its normalized index name.
func indexedName(col *policy.Column, a Action, ix *policy.BlindIndex) string {
	if a == ActionEncrypt || ix == nil || ix.Exact() {
		return col.Name
	}
	return col.Name + "." + ix.Name
}

var kindNames = map[Kind]string{KindOther: "other", KindSelect: "select", KindInsert: "insert", KindUpdate: "update", KindDelete: "delete", KindDDL: "ddl", KindTransaction: "transaction", KindCopy: "copy"}

func renderPlan(p *Plan) string {
	var b strings.Builder
	if p.Passthrough {
		b.WriteString("passthrough")
	} else {
		sql, _ := fillTemplate(p, func(l Literal) string {
			return fmt.Sprintf("«%s %s %q»", actionNames[l.Action], indexedName(l.Column, l.Action, l.Index), l.Value)
		})
		b.WriteString("sql: " + sql)
	}
	if len(p.Params) > 0 {
		var ps []string
		for i, pr := range p.Params {
			s := fmt.Sprintf("$%d=$%d", i+1, pr.Source+1)
			if pr.Action != ActionNone {
				s += " " + actionNames[pr.Action] + " " + indexedName(pr.Column, pr.Action, pr.Index)
			}
			if pr.Array {
				s += "[]"
			}
			ps = append(ps, s)
		}
		fmt.Fprintf(&b, "\nparams(%d): %s", p.ClientParams, strings.Join(ps, ", "))
	}
	for _, st := range p.Statements {
		var tables []string
		for _, t := range st.Tables {
			tables = append(tables, t.QualifiedName())
		}
		sort.Strings(tables)
		fmt.Fprintf(&b, "\nstatement: %s", kindNames[st.Kind])
		if len(tables) > 0 {
			fmt.Fprintf(&b, " tables=%s", strings.Join(tables, ","))
		}
		for _, r := range st.Returning {
			fmt.Fprintf(&b, " returning[%d]=%s", r.Index, r.Column.Name)
		}
		if st.Cursor != nil {
			b.WriteString(" cursor=" + renderCursor(*st.Cursor))
		}
	}
	if c := p.Copy; c != nil {
		b.WriteString("\n" + renderCopy(c, p.SQL))
	}
	return b.String()
}

// renderCopy shows a plan's Copy: direction, options, the columns of the
// client's rows (PHI ones marked, with their force flags) and the blind
// indexes added, or the query's text.
func renderCopy(c *Copy, sql string) string {
	var b strings.Builder
	dir := "to"
	if c.From {
		dir = "from"
	}
	fmt.Fprintf(&b, "copy %s: %s", dir, c.Options)
	if c.Table == nil {
		fmt.Fprintf(&b, "\nquery: %s", sql[c.QueryStart:c.QueryEnd])
		return b.String()
	}
	var cols []string
	for _, col := range c.Columns {
		s := col.Name
		if col.Column != nil {
			s += "*"
		}
		for _, f := range []struct {
			on   bool
			name string
		}{{col.ForceQuote, "q"}, {col.ForceNotNull, "nn"}, {col.ForceNull, "n"}} {
			if f.on {
				s += "+" + f.name
			}
		}
		cols = append(cols, s)
	}
	fmt.Fprintf(&b, "\ncolumns: %s", strings.Join(cols, " "))
	if len(c.Indexes) > 0 {
		var ixs []string
		for _, ix := range c.Indexes {
			ixs = append(ixs, fmt.Sprintf("%s=%s", ix.Index.Column, c.Columns[ix.Of].Name))
		}
		fmt.Fprintf(&b, "\nindexes: %s", strings.Join(ixs, " "))
	}
	return b.String()
}

var cursorOpNames = map[CursorOp]string{CursorDeclare: "declare", CursorFetch: "fetch", CursorMove: "move", CursorClose: "close", CursorCloseAll: "close-all"}

// renderCursor is "op name options" of a cursor use.
func renderCursor(u CursorUse) string {
	s := cursorOpNames[u.Op]
	if u.Name != "" {
		s += fmt.Sprintf("(%q", u.Name)
		for _, o := range []struct {
			on   bool
			name string
		}{{u.Hold, "hold"}, {u.Binary, "binary"}, {u.Scroll, "scroll"}} {
			if o.on {
				s += "," + o.name
			}
		}
		s += ")"
	}
	return s
}
