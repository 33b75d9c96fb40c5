package policy

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite testdata/schema/*.txt with the actual output")

// TestSchemaGolden runs Diff and Script over testdata/schema/*.txt. Each
// case is
//
//	# name
//	policy:
//	  <policy YAML, indented>
//	live:
//	  <LiveCatalog as YAML: a list of tables, indented>
//	----
//	<the script>
//
// separated by a line "====". -update rewrites the expected scripts.
func TestSchemaGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "schema", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		cases := strings.Split(strings.TrimRight(string(data), "\n"), "\n====\n")
		for i, c := range cases {
			input, want, ok := strings.Cut(c+"\n", "\n----\n")
			if !ok {
				t.Fatalf("%s case %d: no ---- line", file, i+1)
			}
			name := strings.TrimPrefix(strings.SplitN(input, "\n", 2)[0], "# ")
			got := runSchemaCase(t, file, name, input)
			if *update {
				cases[i] = input + "\n----\n" + strings.TrimRight(got, "\n")
				continue
			}
			t.Run(filepath.Base(file)+"/"+name, func(t *testing.T) {
				if d := cmp.Diff(strings.TrimRight(want, "\n"), strings.TrimRight(got, "\n")); d != "" {
					t.Errorf("script (-want +got):\n%s", d)
				}
			})
		}
		if *update {
			if err := os.WriteFile(file, []byte(strings.Join(cases, "\n====\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func runSchemaCase(t *testing.T, file, name, input string) string {
	t.Helper()
	var doc struct {
		Policy yaml.Node `yaml:"policy"`
		Live   []any     `yaml:"live"`
	}
	if err := yaml.Unmarshal([]byte(input), &doc); err != nil {
		t.Fatalf("%s %s: %v", file, name, err)
	}
	p, err := Load(&doc.Policy)
	if err != nil {
		t.Fatalf("%s %s: policy: %v", file, name, err)
	}
	var rows [][]byte
	for _, lt := range doc.Live {
		b, err := json.Marshal(lt)
		if err != nil {
			t.Fatalf("%s %s: live: %v", file, name, err)
		}
		rows = append(rows, b)
	}
	live, err := ParseCatalog(rows)
	if err != nil {
		t.Fatalf("%s %s: %v", file, name, err)
	}
	script := Script(Diff(p, live))
	if script == "" {
		return "(no problems)\n"
	}
	return script
}

func TestQuoteIdent(t *testing.T) {
	for in, want := range map[string]string{
		"patients":   "patients",
		"email_bidx": "email_bidx",
		"Patients":   `"Patients"`,
		"select":     `"select"`,
		"user":       `"user"`,
		"name":       "name", // unreserved
		"a$b":        `"a$b"`,
		"1a":         `"1a"`,
		`we"ird`:     `"we""ird"`,
		"":           `""`,
	} {
		if got := QuoteIdent(in); got != want {
			t.Errorf("QuoteIdent(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCheckNameTruncated(t *testing.T) {
	p, err := Parse([]byte("tables:\n  - name: " + strings.Repeat("t", 40) + "\n    columns:\n      " + strings.Repeat("c", 40) + ": { type: text, blind_index: {} }\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := p.Tables()[0].Columns[0]
	if n := c.CheckName(); len(n) != 63 || !strings.HasPrefix(n, strings.Repeat("t", 40)+"_") {
		t.Errorf("CheckName = %q (%d bytes)", n, len(n))
	}
	if n := c.IndexName(); len(n) != 63 {
		t.Errorf("IndexName = %q (%d bytes)", n, len(n))
	}
}

func TestDatabases(t *testing.T) {
	p, err := Parse([]byte("databases: [app, billing]\ntables:\n  - name: public.t\n    columns: { c: { type: text } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"app", "billing"}, p.Databases()); d != "" {
		t.Error(d)
	}
	for doc, want := range map[string]string{
		"databases: app\n":         "line 1: policy.databases must be a list",
		"databases: [a, a]\n":      `line 1: policy.databases: duplicate database "a"`,
		"databases: ['']\n":        "line 1: policy.databases: empty database name",
		"databases: [[a]]\n":       "line 1: database name must be a scalar",
		"databases:\ntables: []\n": "line 1: policy.databases must be a list",
	} {
		_, err := Parse([]byte(doc))
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", doc, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", doc, err, want)
		}
	}
}
