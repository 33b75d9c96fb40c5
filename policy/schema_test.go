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

// TestDiffBlocks: the problems that make the proxy refuse a table (Blocks)
// are a missing table, PHI or blind-index column, a generated PHI column
// and a storage type that cannot hold ciphertext; the others leave it
// served.
func TestDiffBlocks(t *testing.T) {
	p, err := Parse([]byte("tables:\n  - name: public.t\n    columns:\n      a: { type: text, blind_index: {} }\n      b: { type: date }\n"))
	if err != nil {
		t.Fatal(err)
	}
	tab := p.Tables()[0]
	ready := func() *LiveTable {
		return &LiveTable{Schema: "public", Name: "t", Kind: "r", Columns: []LiveColumn{
			{Name: "id", Type: "integer"}, {Name: "a", Type: "text"}, {Name: "a_bidx", Type: "text"}, {Name: "b", Type: "text"},
		}, Indexes: []LiveIndex{{Name: "t_a_bidx_idx", Method: "btree", Keys: []string{"a_bidx"}, Uses: []string{"a_bidx"}, Valid: true}}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*LiveTable) *LiveTable
		block []string // Msg prefixes of the Blocks problems
	}{
		{"ready", func(lt *LiveTable) *LiveTable { return lt }, nil},
		{"missing", func(*LiveTable) *LiveTable { return nil }, []string{"it does not exist"}},
		{"no checks, no index, a default", func(lt *LiveTable) *LiveTable {
			lt.Indexes, lt.Columns[3].HasDefault = nil, true
			return lt
		}, nil},
		{"PHI column missing", func(lt *LiveTable) *LiveTable { lt.Columns = lt.Columns[:3]; return lt }, []string{"PHI column b is missing"}},
		{"storage type", func(lt *LiveTable) *LiveTable { lt.Columns[3].Type = "date"; return lt }, []string{"PHI column b has type date"}},
		{"generated", func(lt *LiveTable) *LiveTable {
			lt.Columns[3].Generated, lt.Columns[3].HasDefault = true, true
			return lt
		}, []string{"PHI column b is generated"}},
		{"blind index missing", func(lt *LiveTable) *LiveTable {
			lt.Columns, lt.Indexes = append(lt.Columns[:2], lt.Columns[3]), nil
			return lt
		}, []string{"blind-index column a_bidx of a is missing"}},
		{"blind index type", func(lt *LiveTable) *LiveTable { lt.Columns[2].Type = "bytea"; return lt }, []string{"blind-index column a_bidx of a has type bytea"}},
	} {
		var got []string
		problems := DiffTable(tab, tc.edit(ready()))
		for _, pr := range problems {
			if pr.Blocks {
				got = append(got, pr.Msg)
			}
			if pr.Step == StepProtect && pr.Blocks {
				t.Errorf("%s: a StepProtect problem blocks: %s", tc.name, pr.Msg)
			}
		}
		if len(got) != len(tc.block) {
			t.Errorf("%s: blocks %q, want %q", tc.name, got, tc.block)
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], tc.block[i]) {
				t.Errorf("%s: blocks %q, want %q", tc.name, got, tc.block)
			}
		}
		if tc.name == "generated" {
			for _, pr := range problems {
				if strings.Contains(pr.Msg, "has a default") {
					t.Errorf("generated: a DROP DEFAULT beside DROP EXPRESSION: %s", pr.Msg)
				}
			}
		}
	}
}
