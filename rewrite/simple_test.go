package rewrite

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/novamind/phiproxy/policy"
)

// TestAnalyzeSimpleMatchesAnalyze: for every golden input, the plan that
// AnalyzeSimple builds from a cached shape renders exactly like Analyze's
// plan of the text itself (same SQL, same slots, same statements), and
// rejections are the same.
func TestAnalyzeSimpleMatchesAnalyze(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	seed, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
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
			// The input as written, and with each $n turned into a
			// literal, as a simple-protocol client would send it.
			for _, in := range []string{c.input, paramsToLiterals(c.input)} {
				want, wantErr := Analyze(in, pol, cat)
				// Twice: the second instantiates from the cached shape.
				cache := NewCache(100, pol, cat)
				cache.AnalyzeSimple(in)
				got, gotErr := cache.AnalyzeSimple(in)
				if _, _, ok := shapeOf(in); ok && mentionsPolicy(in, pol) {
					shaped++
				}
				if fmt.Sprint(wantErr) != fmt.Sprint(gotErr) {
					t.Errorf("%s:%d: %s\nAnalyze error: %v\nAnalyzeSimple error: %v", f, c.line, in, wantErr, gotErr)
					continue
				}
				if wantErr != nil {
					continue
				}
				if w, g := renderPlan(want), renderPlan(got); w != g {
					t.Errorf("%s:%d: %s\nAnalyze:\n%s\nAnalyzeSimple:\n%s", f, c.line, in, w, g)
				}
				if w, g := placed(t, want), placed(t, got); w != g && !want.Passthrough {
					t.Errorf("%s:%d: %s\nAnalyze places:\n%s\nAnalyzeSimple places:\n%s", f, c.line, in, w, g)
				}
			}
		}
	}
	if shaped < 150 {
		t.Errorf("only %d golden inputs went through a shape; the test proves little", shaped)
	}
	t.Logf("%d golden inputs compared through a shape", shaped)
}

// paramsToLiterals replaces each $n of sql by the string literal 'v<n>'.
func paramsToLiterals(sql string) string {
	toks, err := scan(sql)
	if err != nil {
		return sql
	}
	var b strings.Builder
	at := 0
	for _, t := range toks {
		if t.kind == pg.Token_PARAM {
			b.WriteString(sql[at:t.start])
			b.WriteString("'v" + sql[t.start+1:t.end] + "'")
			at = t.end
		}
	}
	b.WriteString(sql[at:])
	return b.String()
}

func TestShapeOf(t *testing.T) {
	for _, tc := range []struct{ in, key string }{
		{"INSERT INTO p (a, b) VALUES ('x', 'O''Brien')", "INSERT INTO p (a, b) VALUES ($1, $2)"},
		{"SELECT * FROM p WHERE a = 'x' AND b IN ('y', 'z')", "SELECT * FROM p WHERE a = $1 AND b IN ($2, $3)"},
		{"SELECT * FROM p WHERE d = DATE '2020-01-01' AND e LIKE 'a%'", ""},
		{"SELECT * FROM p WHERE a = E'x\\'y'", ""},
		{"SELECT * FROM p WHERE a = $1 AND b = 'x'", ""},
		{"UPDATE p SET a = 'x'::text WHERE id = 3", "UPDATE p SET a = $1::text WHERE id = 3"},
	} {
		key, _, ok := shapeOf(tc.in)
		if !ok {
			key = ""
		}
		if key != tc.key {
			t.Errorf("shapeOf(%q) = %q, want %q", tc.in, key, tc.key)
		}
	}
}

func BenchmarkAnalyzeSimple(b *testing.B) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		b.Fatal(err)
	}
	cache := NewCache(1000, pol, seedCatalog)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		sql := fmt.Sprintf(`INSERT INTO patients (first_name, last_name, date_of_birth, ssn, email, phone, address_line1, address_line2, city, state, postal_code, country, additional_info) VALUES ('Ann%d', 'Smith', '1980-01-02', '123-45-%04d', 'ann%d@example.org', '555-1234', '1 Main St', NULL, 'Springfield', 'IL', '62701', 'US', '{"a":1}')`, n, n%10000, n)
		if _, err := cache.AnalyzeSimple(sql); err != nil {
			b.Fatal(err)
		}
	}
}
