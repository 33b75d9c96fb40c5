package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
)

// TestMigrateSQL freezes the statements of a migration on a table with a
// composite primary key: keys qualified everywhere (an unqualified name in
// ORDER BY would mean the text output column), the scan bounded by the
// last key, and the compare-and-set on every column it changes.
func TestMigrateSQL(t *testing.T) {
	pol, err := policy.Parse([]byte("tables:\n  - name: s.Visits\n    columns:\n      note: { type: text }\n      ssn: { type: text, blind_index: {} }\n      scan: { type: bytea, storage: bytea }\n"))
	if err != nil {
		t.Fatal(err)
	}
	tbl := pol.Table("s", "Visits")
	live := &policy.LiveTable{Schema: "s", Name: "Visits", Columns: []policy.LiveColumn{
		{Name: "region", Type: "text"}, {Name: "n", Type: "integer"}, {Name: "note", Type: "text"},
		{Name: "ssn", Type: "text"}, {Name: "ssn_bidx", Type: "text"}, {Name: "scan", Type: "bytea"},
	}}
	cols := []*migrateColumn{{col: tbl.Column("note")}, {col: tbl.Column("ssn"), indexes: nil}, {col: tbl.Column("scan"), bytea: true}}
	s := buildMigrateSQL(tbl, live, []string{"region", "n"}, cols)
	want := migrateSQL{
		nkey:  2,
		last:  `SELECT phi_t.region::text AS phi_k1, phi_t.n::text AS phi_k2 FROM s."Visits" AS phi_t ORDER BY phi_t.region DESC, phi_t.n DESC LIMIT 1`,
		first: `SELECT phi_t.region::text AS phi_k1, phi_t.n::text AS phi_k2, phi_t.note, phi_t.ssn, phi_t.scan FROM s."Visits" AS phi_t WHERE (phi_t.region, phi_t.n) <= ($1::text, $2::integer) ORDER BY phi_t.region, phi_t.n LIMIT $3`,
		next:  `SELECT phi_t.region::text AS phi_k1, phi_t.n::text AS phi_k2, phi_t.note, phi_t.ssn, phi_t.scan FROM s."Visits" AS phi_t WHERE (phi_t.region, phi_t.n) > ($1::text, $2::integer) AND (phi_t.region, phi_t.n) <= ($3::text, $4::integer) ORDER BY phi_t.region, phi_t.n LIMIT $5`,
		refetch: `SELECT phi_t.region::text AS phi_k1, phi_t.n::text AS phi_k2, phi_t.note, phi_t.ssn, phi_t.scan FROM s."Visits" AS phi_t WHERE (phi_t.region, phi_t.n) IN ` +
			`(SELECT phi_v.k1::text, phi_v.k2::integer FROM unnest($1::text[], $2::text[]) AS phi_v(k1, k2)) ORDER BY phi_t.region, phi_t.n`,
		update: `UPDATE s."Visits" AS phi_t SET note = CASE WHEN phi_v.sv1 THEN phi_v.n1 ELSE phi_t.note END, ssn = CASE WHEN phi_v.sv2 THEN phi_v.n2 ELSE phi_t.ssn END, ` +
			`scan = CASE WHEN phi_v.sv3 THEN phi_v.n3 ELSE phi_t.scan END ` +
			`FROM unnest($1::text[], $2::text[], $3::bool[], $4::bool[], $5::text[], $6::text[], $7::text[], $8::bool[], $9::bool[], $10::text[], $11::text[], $12::text[], ` +
			`$13::bool[], $14::bool[], $15::bytea[], $16::bytea[], $17::text[]) WITH ORDINALITY AS phi_v(k1, k2, sv1, sb1, o1, n1, b1, sv2, sb2, o2, n2, b2, sv3, sb3, o3, n3, b3, ord) ` +
			`WHERE phi_t.region = phi_v.k1::text AND phi_t.n = phi_v.k2::integer AND (NOT (phi_v.sv1 OR phi_v.sb1) OR phi_t.note IS NOT DISTINCT FROM phi_v.o1) ` +
			`AND (NOT (phi_v.sv2 OR phi_v.sb2) OR phi_t.ssn IS NOT DISTINCT FROM phi_v.o2) AND (NOT (phi_v.sv3 OR phi_v.sb3) OR phi_t.scan IS NOT DISTINCT FROM phi_v.o3) RETURNING phi_v.ord`,
	}
	if d := cmp.Diff(want, s, cmp.AllowUnexported(migrateSQL{})); d != "" {
		t.Errorf("statements (-want +got):\n%s", d)
	}
}

// TestMigrateSQLIndexes: a column with an exact and a normalized index
// reads and writes both, each under its own parameter.
func TestMigrateSQLIndexes(t *testing.T) {
	pol, err := policy.Parse([]byte("tables:\n  - name: p\n    columns:\n      email: { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	tbl := pol.Table("public", "p")
	live := &policy.LiveTable{Schema: "public", Name: "p", Columns: []policy.LiveColumn{
		{Name: "id", Type: "integer"}, {Name: "email", Type: "text"}, {Name: "email_bidx", Type: "text"}, {Name: "email_bidx_ci", Type: "text"},
	}}
	cols := []*migrateColumn{{col: tbl.Column("email"), indexes: make([]*crypto.Indexer, 2)}}
	s := buildMigrateSQL(tbl, live, []string{"id"}, cols)
	for _, want := range []string{
		"phi_t.email, phi_t.email_bidx, phi_t.email_bidx_ci FROM public.p",
		"email_bidx = CASE WHEN phi_v.sb1 THEN phi_v.b1 ELSE phi_t.email_bidx END, email_bidx_ci = CASE WHEN phi_v.sb1 THEN phi_v.b1_2 ELSE phi_t.email_bidx_ci END",
		"unnest($1::text[], $2::bool[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS phi_v(k1, sv1, sb1, o1, n1, b1, b1_2, ord)",
	} {
		if !strings.Contains(s.first+s.update, want) {
			t.Errorf("statements lack %s:\n%s\n%s", want, s.first, s.update)
		}
	}
	rows := []migrateRow{{key: []string{"1"}, vals: [][]byte{[]byte("old")}}}
	args := updateArgs(rows, [][]change{{{setIndex: true, index: [][]byte{[]byte("x"), []byte("y")}}}}, cols, 1)
	if len(args) != 7 {
		t.Fatalf("%d update arguments, want 7", len(args))
	}
	if b := args[5].([]*string); *b[0] != "x" {
		t.Errorf("b1 = %v", b)
	}
	if b := args[6].([]*string); *b[0] != "y" {
		t.Errorf("b1_2 = %v", b)
	}
}
