package rewrite

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestAnalyzeSimpleScratchMatchesAnalyzeSimple: for every golden input,
// as written and with its $n turned into literals, the plan
// AnalyzeSimpleScratch hands out and the plan its scratch renders send
// exactly what AnalyzeSimple's plan sends (the same text once every slot
// is filled, the same statements, the same COPY query), on a miss and on a
// hit of the shape, with one scratch reused for every text.
func TestAnalyzeSimpleScratchMatchesAnalyzeSimple(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	seed, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	var sc SimpleScratch
	shaped := 0
	for _, f := range files {
		cases, _ := readGolden(t, f)
		policies := map[string]*policy.Policy{"seed": seed}
		for _, c := range cases {
			fields := strings.Fields(c.cmd)
			args := map[string]string{}
			for _, f := range fields[1:] {
				k, v, _ := strings.Cut(f, "=")
				args[k] = v
			}
			if fields[0] == "policy" {
				if p, err := policy.Parse([]byte(c.input)); err == nil {
					policies[args["name"]] = p
				}
				continue
			}
			pol := policies[args["policy"]]
			if args["policy"] == "" {
				pol = seed
			}
			var cat Catalog = seedCatalog
			if args["catalog"] == "none" {
				cat = nil
			}
			for _, in := range []string{c.input, paramsToLiterals(c.input)} {
				ref := NewCache(100, pol, cat)
				ref.AnalyzeSimple(in)
				want, wantErr := ref.AnalyzeSimple(in)
				cache := NewCache(100, pol, cat)
				for _, pass := range []string{"miss", "hit"} {
					got, gotErr := cache.AnalyzeSimpleScratch(&sc, in, LexOptions{})
					if fmt.Sprint(wantErr) != fmt.Sprint(gotErr) {
						t.Errorf("%s:%d (%s): %s\nAnalyzeSimple error: %v\nAnalyzeSimpleScratch error: %v", f, c.line, pass, in, wantErr, gotErr)
						continue
					}
					if wantErr != nil {
						continue
					}
					render := sc.Render(got, in)
					if w, g := placed(t, want), placed(t, render); w != g {
						t.Errorf("%s:%d (%s): %s\nAnalyzeSimple places:\n%s\nAnalyzeSimpleScratch places:\n%s\n%+v\n%+v", f, c.line, pass, in, w, g, want.Literals, render.Literals)
					}
					if render == got {
						if w, g := renderPlan(want), renderPlan(got); w != g {
							t.Errorf("%s:%d (%s): %s\nAnalyzeSimple:\n%s\nAnalyzeSimpleScratch:\n%s", f, c.line, pass, in, w, g)
						}
						continue
					}
					shaped++
					if got.Passthrough || len(got.Params) > 0 || got.ClientParams > 0 || len(got.Literals) > 0 {
						t.Errorf("%s:%d (%s): %s: the shared plan says what to send: %+v", f, c.line, pass, in, got)
					}
					if w, g := sendable(t, want), sendable(t, render); w != g {
						t.Errorf("%s:%d (%s): %s\nAnalyzeSimple sends:\n%s\nAnalyzeSimpleScratch sends:\n%s", f, c.line, pass, in, w, g)
					}
					wantRest, gotRest := renderPlan(&Plan{Statements: want.Statements}), renderPlan(&Plan{Statements: got.Statements})
					if wantRest != gotRest || want.Fingerprint != got.Fingerprint {
						t.Errorf("%s:%d (%s): %s\nstatements %s, want %s", f, c.line, pass, in, gotRest, wantRest)
					}
					if (want.Copy == nil) != (got.Copy == nil) || want.Copy != nil && copyQuery(t, want, want) != copyQuery(t, got, render) {
						t.Errorf("%s:%d (%s): %s: COPY %+v, want %+v", f, c.line, pass, in, got.Copy, want.Copy)
					}
				}
			}
		}
	}
	if shaped < 150 {
		t.Errorf("only %d golden inputs went through a shape; the test proves little", shaped)
	}
	t.Logf("%d golden inputs compared through a shape", shaped)
}

// sendable is the text the proxy sends for p, each slot filled as
// renderPlan fills it, a literal to forward (ActionNone) as written.
func sendable(t *testing.T, p *Plan) string {
	t.Helper()
	var b strings.Builder
	at := 0
	for _, l := range p.Literals {
		if l.Start < at || l.End > len(p.SQL) || p.SQL[l.Start] != '$' {
			t.Fatalf("bad literal slot [%d,%d) in %q", l.Start, l.End, p.SQL)
		}
		b.WriteString(p.SQL[at:l.Start])
		if l.Action == ActionNone {
			b.WriteString(l.Value)
		} else {
			fmt.Fprintf(&b, "«%s %s %q»", actionNames[l.Action], indexedName(l.Column, l.Action, l.Index), l.Value)
		}
		at = l.End
	}
	b.WriteString(p.SQL[at:])
	return b.String()
}

// placed tells where the parts of the text the proxy sends for p are in
// the client's text and in the text sent: for each byte sent, the byte of
// the client's text it is a copy of (Plan.Runs, or the Loc of a literal
// forwarded as written), "-" for none; for each literal slot, where it is
// sent, its Loc and Row, and where its Target is sent; where the parts of
// each INSERT … VALUES are sent.
func placed(t *testing.T, p *Plan) string {
	t.Helper()
	var b strings.Builder
	sent := func(off int) int { // p.SQL's offset off in the text sent
		out := off
		for _, l := range p.Literals {
			if l.End > off {
				break
			}
			n := len(l.Value)
			if l.Action != ActionNone {
				n = len(fmt.Sprintf("«%s %s %q»", actionNames[l.Action], indexedName(l.Column, l.Action, l.Index), l.Value))
			}
			out += n - (l.End - l.Start)
		}
		return out
	}
	text := func(off int) string {
		for _, r := range p.Runs {
			if off >= r.SQL && off < r.SQL+r.Len {
				return fmt.Sprint(r.Text + off - r.SQL)
			}
		}
		return "-"
	}
	at := 0
	for _, l := range p.Literals {
		for ; at < l.Start; at++ {
			b.WriteString(text(at) + " ")
		}
		if l.Action == ActionNone {
			for i := range len(l.Value) {
				fmt.Fprintf(&b, "%d ", l.Loc+i)
			}
		} else {
			fmt.Fprintf(&b, "[slot at %d loc %d row %d", sent(l.Start), l.Loc, l.Row)
			if l.Target > 0 {
				fmt.Fprintf(&b, " target %d", sent(l.Target))
			}
			b.WriteString("] ")
		}
		at = l.End
	}
	for ; at < len(p.SQL); at++ {
		b.WriteString(text(at) + " ")
	}
	for i, st := range p.Statements {
		if v := st.Values; v != nil {
			fmt.Fprintf(&b, "\nvalues of %d: %d %d %d %d", i, sent(v.Start), sent(v.Insert), sent(v.Values), sent(v.End))
			for _, r := range v.Rows {
				fmt.Fprintf(&b, " (%d %d)", sent(r[0]), sent(r[1]))
			}
		}
	}
	return b.String()
}

// copyQuery is the query of a COPY (query) TO as the proxy finds it in the
// text it sends, rendered from render (describeQuery): from QueryStart to
// as far from the end as Copy.QueryEnd is from the end of p's SQL.
func copyQuery(t *testing.T, p, render *Plan) string {
	if p.Copy.Table != nil {
		return fmt.Sprintf("%+v", *p.Copy)
	}
	text := sendable(t, render)
	return text[p.Copy.QueryStart : len(text)-(len(p.SQL)-p.Copy.QueryEnd)]
}

// TestAnalyzeSimpleScratchAllocs: a text whose shape is cached costs no
// allocation, its literals found in a reused scratch.
func TestAnalyzeSimpleScratchAllocs(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"insert13", "selectByEmail"} {
		texts := simpleTexts(name, 64)
		c := NewCache(128, pol, seedCatalog)
		var sc SimpleScratch
		if _, err := c.AnalyzeSimpleScratch(&sc, texts[0], LexOptions{}); err != nil {
			t.Fatal(err)
		}
		i := 0
		allocs := testing.AllocsPerRun(100, func() {
			sql := texts[i%len(texts)]
			i++
			p, err := c.AnalyzeSimpleScratch(&sc, sql, LexOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if sc.Render(p, sql) == p {
				t.Fatal("not made from its shape")
			}
		})
		// insert13 has one literal with a doubled quote: its value is
		// a new string.
		if want := map[string]float64{"insert13": 1, "selectByEmail": 0}[name]; allocs != want {
			t.Errorf("%s: %v allocations, want %v", name, allocs, want)
		}
	}
}

// FuzzSimpleTemplate: a text made from another by changing what is
// between the quotes of its replaced literals (into anything: quotes,
// newlines, comments, NUL, bytes that are not UTF8) gets through a
// scratch that holds the first text's template exactly the plan, the
// text to send and the error that AnalyzeSimple gives it. The seeds are
// the golden inputs with their $n turned into literals.
func FuzzSimpleTemplate(f *testing.F) {
	golden, _ := filepath.Glob("testdata/*.txt")
	repls := []string{"x", "O''Brien", "a'b", "'", "''", "\n", "' \n'", "--", "/*", "\x00", "\xff", "é", "patients",
		"$1", "' || 'x", "a' , 'b", "', '", "'::text, '", "'.f, '"}
	for _, file := range golden {
		cases, _ := readGolden(f, file)
		for i, c := range cases {
			if strings.Contains(c.cmd, "policy=") || strings.Contains(c.cmd, "catalog=") {
				continue
			}
			f.Add(paramsToLiterals(c.input), repls[i%len(repls)])
		}
	}
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sql, repl string) {
		_, values, ok := shapeOf(sql)
		if !ok {
			return
		}
		// sql2 is sql with each replaced literal's body repl.
		var b strings.Builder
		at := 0
		for _, v := range values {
			b.WriteString(sql[at : v.start+1])
			b.WriteString(repl)
			at = v.start + len(v.raw) - 1
		}
		b.WriteString(sql[at:])
		sql2 := b.String()

		ref := NewCache(100, pol, seedCatalog)
		ref.AnalyzeSimple(sql2)
		want, wantErr := ref.AnalyzeSimple(sql2)

		cache := NewCache(100, pol, seedCatalog)
		var sc SimpleScratch
		for range 2 { // a miss, then a hit that keeps the template
			if _, err := cache.AnalyzeSimpleScratch(&sc, sql, LexOptions{}); err != nil {
				return
			}
		}
		got, gotErr := cache.AnalyzeSimpleScratch(&sc, sql2, LexOptions{})
		if fmt.Sprint(wantErr) != fmt.Sprint(gotErr) {
			t.Fatalf("%q after %q\nAnalyzeSimple error: %v\nAnalyzeSimpleScratch error: %v", sql2, sql, wantErr, gotErr)
		}
		if wantErr != nil {
			return
		}
		render := sc.Render(got, sql2)
		if render == got {
			if w, g := renderPlan(want), renderPlan(got); w != g {
				t.Fatalf("%q after %q\nAnalyzeSimple:\n%s\nAnalyzeSimpleScratch:\n%s", sql2, sql, w, g)
			}
			return
		}
		if w, g := sendable(t, want), sendable(t, render); w != g {
			t.Fatalf("%q after %q\nAnalyzeSimple sends:\n%s\nAnalyzeSimpleScratch sends:\n%s", sql2, sql, w, g)
		}
		if w, g := renderPlan(&Plan{Statements: want.Statements}), renderPlan(&Plan{Statements: got.Statements}); w != g {
			t.Fatalf("%q after %q\nstatements %s, want %s", sql2, sql, g, w)
		}
	})
}

// TestSimpleTemplate: texts of the shapes a session sent last (up to
// maxTemplates) match their templates, whatever plain constants they
// hold; texts whose constants would be lexed otherwise do not.
func TestSimpleTemplate(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(100, pol, seedCatalog)
	var sc SimpleScratch
	shapes := []string{
		"SELECT id FROM patients WHERE email = '%s'",
		"SELECT id FROM patients WHERE ssn = '%s'",
		"INSERT INTO patients (first_name, email) VALUES ('%s', 'x@y')",
		"UPDATE patients SET city = '%s' WHERE email = 'a@b'",
		"DELETE FROM patients WHERE phone = '%s'",
	}
	for _, s := range shapes {
		for range 2 { // a miss, then a hit that keeps the template
			if _, err := c.AnalyzeSimpleScratch(&sc, fmt.Sprintf(s, "v"), LexOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		sql   string
		match bool
	}{
		{fmt.Sprintf(shapes[4], "O''Brien"), true},
		{fmt.Sprintf(shapes[1], "123"), true},
		{fmt.Sprintf(shapes[2], ""), true},
		{fmt.Sprintf(shapes[3], "é -- /* $1"), true},
		{fmt.Sprintf(shapes[0], "a@b"), false}, // the oldest, dropped
		{fmt.Sprintf(shapes[1], "a'\n'b"), false},
		{fmt.Sprintf(shapes[1], "a'\n-- c\n'b"), false},
		{fmt.Sprintf(shapes[1], "a' 'b"), false},
		{fmt.Sprintf(shapes[1], "a\x00"), false},
		{fmt.Sprintf(shapes[1], "\xff"), false},
		{fmt.Sprintf(shapes[1], "x' AND ssn = 'y"), false},
		{fmt.Sprintf(shapes[1], "x'"), false},
		{fmt.Sprintf(shapes[1], "") + " ", false},
	} {
		if got := sc.matchTemplate(c, tc.sql) != nil; got != tc.match {
			t.Errorf("%q: template match %v, want %v", tc.sql, got, tc.match)
		}
	}
	other := NewCache(100, pol, seedCatalog)
	if sc.matchTemplate(other, fmt.Sprintf(shapes[4], "x")) != nil {
		t.Error("a template of one cache matched for another")
	}
}
