package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

const seed = `
tables:
  - name: public.patients
    columns:
      first_name:      { type: text }
      last_name:       { type: text }
      date_of_birth:   { type: date }
      ssn:             { type: text, blind_index: {}, search: { digits: { normalize: [digits] } } }
      email:           { type: text, blind_index: {}, search: { ci: { normalize: [btrim, ascii_lower] }, lower: { normalize: [ascii_lower], column: email_lc } } }
      phone:           { type: text, blind_index: { bits: 64, column: phone_hash, index_group: phone }, search: { digits: { normalize: [digits] } } }
      photo:           { type: bytea, storage: bytea }
      old_name:        { type: text, associated_data: public.patients.previous_name }
  - name: clinical_notes
    columns:
      diagnosis: { type: text }
`

func TestParseSeed(t *testing.T) {
	p, err := Parse([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.Tables()); got != 2 {
		t.Fatalf("tables = %d, want 2", got)
	}
	pt := p.Table("public", "patients")
	if pt == nil {
		t.Fatal("public.patients not found")
	}
	if cn := p.Table("public", "clinical_notes"); cn == nil || cn.Schema != "public" {
		t.Fatalf("clinical_notes default schema: %+v", cn)
	}
	type view struct {
		Type    LogicalType
		Storage Storage
		AD      string
		Indexes []*BlindIndex
	}
	got := map[string]view{}
	for _, c := range pt.Columns {
		if c.Table != pt {
			t.Errorf("%s: back pointer wrong", c.Name)
		}
		got[c.Name] = view{c.Type, c.Storage, c.AssociatedData, c.Indexes()}
		if c.BlindIndex != nil && c.Indexes()[0] != c.BlindIndex {
			t.Errorf("%s: Indexes()[0] is not the exact index", c.Name)
		}
	}
	want := map[string]view{
		"first_name":    {TypeText, StorageText, "public.patients.first_name", nil},
		"last_name":     {TypeText, StorageText, "public.patients.last_name", nil},
		"date_of_birth": {TypeDate, StorageText, "public.patients.date_of_birth", nil},
		"ssn": {TypeText, StorageText, "public.patients.ssn", []*BlindIndex{
			{Column: "ssn_bidx", Bits: 128, Group: "public.patients.ssn"},
			{Name: "digits", Column: "ssn_bidx_digits", Normalize: []string{"digits"}, Bits: 128, Group: "public.patients.ssn"},
		}},
		"email": {TypeText, StorageText, "public.patients.email", []*BlindIndex{
			{Column: "email_bidx", Bits: 128, Group: "public.patients.email"},
			{Name: "ci", Column: "email_bidx_ci", Normalize: []string{"btrim", "ascii_lower"}, Bits: 128, Group: "public.patients.email"},
			{Name: "lower", Column: "email_lc", Normalize: []string{"ascii_lower"}, Bits: 128, Group: "public.patients.email"},
		}},
		"phone": {TypeText, StorageText, "public.patients.phone", []*BlindIndex{
			{Column: "phone_hash", Bits: 64, Group: "phone"},
			{Name: "digits", Column: "phone_bidx_digits", Normalize: []string{"digits"}, Bits: 128, Group: "phone"},
		}},
		"photo":    {TypeBytea, StorageBytea, "public.patients.photo", nil},
		"old_name": {TypeText, StorageText, "public.patients.previous_name", nil},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("columns (-want +got):\n%s", d)
	}
	if c := pt.IndexColumn("phone_hash"); c == nil || c.Name != "phone" {
		t.Errorf("IndexColumn(phone_hash) = %v", c)
	}
	if c, ix := pt.Index("email_bidx_ci"); c == nil || c.Name != "email" || ix.Name != "ci" {
		t.Errorf("Index(email_bidx_ci) = %v, %v", c, ix)
	}
	if pt.IsIndexColumn("email") || !pt.IsIndexColumn("email_bidx") || !pt.IsIndexColumn("email_lc") {
		t.Error("IsIndexColumn wrong")
	}
	if ix := pt.Column("email").SearchIndex("ci"); ix == nil || ix.Exact() || ix.GroupKeyed() || !pt.Column("email").BlindIndex.GroupKeyed() {
		t.Errorf("SearchIndex(ci) = %+v", ix)
	}
	if n := p.TablesNamed("patients"); len(n) != 1 || n[0] != pt {
		t.Errorf("TablesNamed = %v", n)
	}
	if !pt.Column("email").SameIndex(pt.Column("email")) || pt.Column("email").SameIndex(pt.Column("ssn")) {
		t.Error("SameIndex wrong")
	}
	if got := pt.Column("email").QualifiedName(); got != "public.patients.email" {
		t.Errorf("QualifiedName = %q", got)
	}
}

func TestLoadSectionNode(t *testing.T) {
	var cfg struct {
		Policy yaml.Node `yaml:"policy"`
	}
	if err := yaml.Unmarshal([]byte("listen: {}\npolicy:\n  tables:\n    - name: s.t\n      columns:\n        c: { type: uuid }\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	p, err := Load(&cfg.Policy)
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Table("s", "t").Column("c"); c == nil || c.Type != TypeUUID {
		t.Fatalf("column = %+v", c)
	}
}

func TestEmpty(t *testing.T) {
	for _, doc := range []string{"", "tables: []\n", "tables:\n"} {
		p, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if !p.Empty() {
			t.Errorf("%q: not empty", doc)
		}
	}
	if p, err := Load(nil); err != nil || !p.Empty() {
		t.Errorf("Load(nil) = %v, %v", p, err)
	}
	var nilp *Policy
	if nilp.Table("a", "b") != nil || nilp.Tables() != nil || !nilp.Empty() {
		t.Error("nil policy lookups")
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string // each a substring of the error, with its line
	}{
		{"unknown top field", "tables: []\nextra: 1\n", []string{`line 2: unknown field "extra" in policy`}},
		{"unknown table field", "tables:\n  - name: t\n    colums: {}\n", []string{`line 3: unknown field "colums" in table`, "line 2: table public.t needs a non-empty columns mapping"}},
		{"unknown column field", "tables:\n  - name: t\n    columns:\n      a: { type: text, index: true }\n", []string{`line 4: unknown field "index" in column public.t.a`}},
		{"unknown blind_index field", "tables:\n  - name: t\n    columns:\n      a:\n        type: text\n        blind_index: { norm: [trim] }\n", []string{`line 6: unknown field "norm" in blind_index of public.t.a`}},
		{"duplicate table", "tables:\n  - name: t\n    columns: { a: { type: text } }\n  - name: public.t\n    columns: { b: { type: text } }\n", []string{"line 4: duplicate table public.t (first at line 2)"}},
		{"duplicate column", "tables:\n  - name: t\n    columns:\n      a: { type: text }\n      a: { type: int4 }\n", []string{"line 5: duplicate column public.t.a"}},
		{"bad type", "tables:\n  - name: t\n    columns:\n      a: { type: string }\n", []string{`line 4: column public.t.a: unknown type "string"`}},
		{"missing type", "tables:\n  - name: t\n    columns:\n      a: { storage: text }\n", []string{"line 4: column public.t.a needs a type"}},
		{"bad storage", "tables:\n  - name: t\n    columns:\n      a: { type: text, storage: blob }\n", []string{`line 4: column public.t.a: unknown storage "blob"`}},
		{"bad normalizer", "tables:\n  - name: t\n    columns:\n      a:\n        type: text\n        blind_index:\n          normalize: [trim, upper]\n", []string{`line 7: blind_index of public.t.a: unknown normalizer "upper"`}},
		{"bits not multiple of 8", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { bits: 100 } }\n", []string{"line 4: blind_index of public.t.a: bits 100 must be a multiple of 8 between 32 and 256"}},
		{"bits too small", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { bits: 16 } }\n", []string{"bits 16 must be"}},
		{"bits too large", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { bits: 264 } }\n", []string{"bits 264 must be"}},
		{"bits not int", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { bits: many } }\n", []string{"line 4: blind_index of public.t.a: bits must be an integer"}},
		{"index collides with phi column", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { column: b } }\n      b: { type: text }\n", []string{`line 4: blind-index column "b" of public.t.a collides with PHI column public.t.b`}},
		{"index collides with index", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { column: h } }\n      b: { type: text, blind_index: { column: h } }\n", []string{`line 5: blind-index column "h" of public.t.b is also the blind-index column of public.t.a`}},
		{"default index collides", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: {} }\n      a_bidx: { type: text }\n", []string{`line 4: blind-index column "a_bidx" of public.t.a collides with PHI column`}},
		{"bad table identifier", "tables:\n  - name: 1t\n    columns: { a: { type: text } }\n", []string{`line 2: table name "1t": identifiers may hold`}},
		{"too many dots", "tables:\n  - name: a.b.c\n    columns: { a: { type: text } }\n", []string{`line 2: table name "a.b.c" must be table or schema.table`}},
		{"bad column identifier", "tables:\n  - name: t\n    columns:\n      \"a-b\": { type: text }\n", []string{`line 4: column name "a-b"`}},
		{"bad index identifier", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { column: \"x y\" } }\n", []string{`line 4: blind_index of public.t.a: column "x y"`}},
		{"no name", "tables:\n  - columns: { a: { type: text } }\n", []string{"line 2: table needs a name"}},
		{"tables not list", "tables: { a: 1 }\n", []string{"line 1: policy.tables must be a list"}},
		{"duplicate associated data", "tables:\n  - name: t\n    columns:\n      a: { type: text }\n      b: { type: text, associated_data: public.t.a }\n", []string{`line 5: associated data "public.t.a" of public.t.b is already used by public.t.a`}},
		{"search without normalize", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: {}, search: { ci: {} } }\n", []string{`line 4: search of public.t.a.ci needs normalize`}},
		{"search empty normalize", "tables:\n  - name: t\n    columns:\n      a: { type: text, search: { ci: { normalize: [] } } }\n", []string{`search of public.t.a.ci: normalize must not be empty`}},
		{"search unicode lower", "tables:\n  - name: t\n    columns:\n      a: { type: text, search: { ci: { normalize: [trim, lower] } } }\n", []string{`normalizer "trim" cannot be used under search`, `normalizer "lower" cannot be used under search`}},
		{"search bad name", "tables:\n  - name: t\n    columns:\n      a: { type: text, search: { Ci: { normalize: [digits] } } }\n", []string{`line 4: search of public.t.a: index name "Ci" must be lower-case`}},
		{"search on a date", "tables:\n  - name: t\n    columns:\n      a: { type: date, search: { d: { normalize: [digits] } } }\n", []string{`line 4: column public.t.a: search indexes answer functions of text`}},
		{"search not mapping", "tables:\n  - name: t\n    columns:\n      a: { type: text, search: [digits] }\n", []string{`search of public.t.a must be a non-empty mapping`}},
		{"search unknown field", "tables:\n  - name: t\n    columns:\n      a: { type: text, search: { d: { normalize: [digits], index_group: g } } }\n", []string{`unknown field "index_group" in search of public.t.a.d`}},
		{"v1 form with search", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { normalize: [digits] }, search: { d: { normalize: [digits] } } }\n", []string{`line 4: column public.t.a: blind_index with normalize is the v1 form`}},
		{"search collides with exact", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: {}, search: { d: { normalize: [digits], column: a_bidx } } }\n", []string{`blind-index column "a_bidx" of public.t.a is also the blind-index column of public.t.a`}},
		{"search name too long", "tables:\n  - name: t\n    columns:\n      a: { type: text, search: { " + strings.Repeat("n", 60) + ": { normalize: [digits] } } }\n", []string{`identifier longer than 63 bytes (set column:)`}},
		{"normalized group bits disagree", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { index_group: g }, search: { d: { normalize: [digits] } } }\n  - name: u\n    columns:\n      b: { type: text, blind_index: { index_group: g }, search: { d: { normalize: [digits], bits: 64 } } }\n", []string{`line 7: index group "g": the normalized indexes (digits) of public.t.a and public.u.b must use the same bits`}},
		{"v1 and exact share a group key", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { normalize: [digits], index_group: g } }\n  - name: u\n    columns:\n      b: { type: text, blind_index: { index_group: g } }\n", []string{`line 7: index group "g": public.t.a and public.u.b must use the same normalize and bits`}},
		{"group with control character", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { index_group: \"a\\0b\" } }\n", []string{`index_group must not be empty or hold control characters`}},
		{"group disagrees", "tables:\n  - name: t\n    columns:\n      a: { type: text, blind_index: { normalize: [trim], index_group: g } }\n  - name: u\n    columns:\n      b: { type: text, blind_index: { normalize: [lower], index_group: g } }\n", []string{`line 7: index group "g": public.t.a and public.u.b must use the same normalize and bits`}},
		{"databases not a list", "databases: clinic\ntables:\n  - name: t\n    columns: { a: { type: text } }\n", []string{"line 1: policy.databases must be a list of database names"}},
		{"databases empty", "databases: []\ntables:\n  - name: t\n    columns: { a: { type: text } }\n", []string{"line 1: policy.databases must name at least one database (leave it out to govern every database)"}},
		{"database empty name", "databases: [\"\"]\ntables:\n  - name: t\n    columns: { a: { type: text } }\n", []string{"line 1: policy.databases: empty database name"}},
		{"database duplicate", "databases:\n  - clinic\n  - clinic\ntables:\n  - name: t\n    columns: { a: { type: text } }\n", []string{`line 3: policy.databases: duplicate database "clinic"`}},
		{"database too long", "databases: [" + strings.Repeat("d", 64) + "]\ntables:\n  - name: t\n    columns: { a: { type: text } }\n", []string{"is longer than 63 bytes"}},
		{"database not scalar", "databases: [[a]]\ntables:\n  - name: t\n    columns: { a: { type: text } }\n", []string{"line 1: database name must be a scalar"}},
		{"databases without tables", "databases: [clinic]\n", []string{"line 1: policy.databases lists databases but policy.tables names no table"}},
		{"databases with empty tables", "databases: [clinic]\ntables: []\n", []string{"line 1: policy.databases lists databases but policy.tables names no table"}},
		{"several errors at once", "tables:\n  - name: t\n    columns:\n      a: { type: nope }\n      b: { type: text, blind_index: { bits: 7 } }\n", []string{"line 4:", "line 5:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("no error, policy %+v", p)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// TestV1Form: a v1 policy (blind_index with normalize) keeps loading. Its
// index becomes the column's one normalized index, named v1, stored where
// it was (<column>_bidx) and keyed by its group as before; the column has
// no exact index, so = on it is refused until the operator adds one.
func TestV1Form(t *testing.T) {
	p, err := Parse([]byte("tables:\n  - name: t\n    columns:\n      email: { type: text, blind_index: { normalize: [trim, lower] } }\n      ssn: { type: text, blind_index: { normalize: [digits], index_group: ssn, column: ssn_h } }\n      code: { type: text, blind_index: { normalize: [] } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	tb := p.Table("public", "t")
	email, ssn, code := tb.Column("email"), tb.Column("ssn"), tb.Column("code")
	want := []*BlindIndex{{Name: "v1", Column: "email_bidx", Normalize: []string{"trim", "lower"}, Bits: 128, Group: "public.t.email", V1: true}}
	if d := cmp.Diff(want, email.Indexes()); d != "" || email.Indexed() || email.BlindIndex != nil {
		t.Errorf("email (-want +got):\n%s", d)
	}
	if ix := ssn.SearchIndex("v1"); ix == nil || ix.Column != "ssn_h" || ix.Group != "ssn" || !ix.GroupKeyed() || ssn.Indexed() {
		t.Errorf("ssn: %+v", ix)
	}
	if !code.Indexed() || !code.BlindIndex.Exact() || len(code.Search) != 0 {
		t.Errorf("an empty normalize list is the exact index: %+v", code.Indexes())
	}
	if c := tb.IndexColumn("email_bidx"); c != email {
		t.Errorf("IndexColumn(email_bidx) = %v", c)
	}
}

func TestGroupShared(t *testing.T) {
	p, err := Parse([]byte("tables:\n  - name: a\n    columns: { ssn: { type: text, blind_index: { index_group: ssn }, search: { d: { normalize: [digits] } } } }\n  - name: b\n    columns: { ssn: { type: text, blind_index: { index_group: ssn } } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := p.Table("public", "a").Column("ssn"), p.Table("public", "b").Column("ssn")
	if !a.SameIndex(b) {
		t.Error("shared group not SameIndex")
	}
	if g := a.SearchIndex("d").Group; g != "ssn" {
		t.Errorf("normalized index group = %q, want the column's group", g)
	}
}

// long63 is a database name as long as PostgreSQL keeps (NAMEDATALEN -
// 1 bytes): a startup message's longer name is cut to it.
var long63 = strings.Repeat("d", 63)

func TestGoverns(t *testing.T) {
	tables := "tables:\n  - name: t\n    columns: { a: { type: text } }\n"
	tests := []struct {
		name, doc string
		dbs       []string
		governs   map[string]bool
	}{
		{"listed", "databases: [clinic, Clinic2]\n" + tables, []string{"clinic", "Clinic2"},
			map[string]bool{"clinic": true, "Clinic2": true, "clinic2": false, "postgres": false, "": false}},
		// PostgreSQL cuts a startup message's name to 63 bytes, and
		// created names at a character boundary.
		{"long names", "databases: [" + long63 + "]\n" + tables, []string{long63},
			map[string]bool{long63: true, long63 + "x": true, long63 + "\u00e9": true, long63[:62]: false, long63[:62] + "x": false}},
		{"every database when unlisted", tables, nil,
			map[string]bool{"clinic": true, "postgres": true, "": true}},
		{"nothing without tables", "", nil,
			map[string]bool{"clinic": false, "postgres": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.dbs, p.Databases()); d != "" {
				t.Errorf("Databases (-want +got):\n%s", d)
			}
			for db, want := range tt.governs {
				if got := p.Governs(db); got != want {
					t.Errorf("Governs(%q) = %v, want %v", db, got, want)
				}
			}
		})
	}
	var nilp *Policy
	if nilp.Governs("x") || nilp.Databases() != nil {
		t.Error("nil policy governs")
	}
}
