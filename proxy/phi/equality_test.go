package phi

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// The exact-equality layout of issue 10 item 4: a column with an exact
// index and normalized ones (policy search:), and a v1-form column.
const equalityPolicy = `
tables:
  - name: public.people
    columns:
      email: { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }
      ssn:   { type: text, blind_index: { normalize: [digits] } }
`

func equalityColumns(t *testing.T) (*policy.Table, keyedColumns) {
	t.Helper()
	pol, err := policy.Parse([]byte(equalityPolicy))
	if err != nil {
		t.Fatal(err)
	}
	cols, err := newKeyedColumns(pol, fakeKeys{})
	if err != nil {
		t.Fatal(err)
	}
	return pol.Table("public", "people"), cols
}

// TestIndexesOfAColumn: each of a column's indexes is computed by its own
// indexer (the exact and v1 ones keyed by the group, a search: one by
// group and normalizers), a value compared as a normalized form is not
// normalized again, and a NULL stays NULL in every index.
func TestIndexesOfAColumn(t *testing.T) {
	tab, cols := equalityColumns(t)
	email, ssn := tab.Column("email"), tab.Column("ssn")
	ci := email.SearchIndex("ci")
	plan := &rewrite.Plan{ClientParams: 2, Params: []rewrite.Param{
		{Source: 0, Action: rewrite.ActionEncrypt, Column: email},
		{Source: 1, Action: rewrite.ActionEncrypt, Column: ssn},
		{Source: 0, Action: rewrite.ActionIndex, Column: email, Index: email.BlindIndex},
		{Source: 0, Action: rewrite.ActionIndex, Column: email, Index: ci},
		{Source: 0, Action: rewrite.ActionIndexNormalized, Column: email, Index: ci},
		{Source: 1, Action: rewrite.ActionIndex, Column: ssn, Index: ssn.Search[0]},
		{Source: 0, Action: rewrite.ActionIndex, Column: email}, // nil Index: the exact one
	}}
	b := &pgproto3.Bind{Parameters: [][]byte{[]byte(" Ann@X.org"), []byte("123-45")}}
	w := newWriter(cols, nil)
	if err := w.rewriteBind(b, plan, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range b.Parameters {
		got = append(got, string(p))
	}
	want := []string{
		"ENC(public.people.email: Ann@X.org)", "ENC(public.people.ssn:123-45)",
		"IDX-public.people.email-ann@x.org",
		"NIDX-public.people.email-ann@x.org",
		"NIDX-public.people.email-as-is- Ann@X.org",
		"IDX-public.people.ssn-123-45",
		"IDX-public.people.email-ann@x.org",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("parameters (-want +got):\n%s", d)
	}
	b = &pgproto3.Bind{Parameters: [][]byte{nil, nil}}
	if err := w.rewriteBind(b, plan, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range b.Parameters {
		if p != nil {
			t.Errorf("NULL parameter $%d became %q", i+1, p)
		}
	}
	// A plan naming an index the column lacks fails; it never falls back.
	other := &policy.BlindIndex{Name: "x", Column: "email_bidx_x", Normalize: []string{"digits"}}
	bad := &rewrite.Plan{ClientParams: 1, Params: []rewrite.Param{{Source: 0, Action: rewrite.ActionIndex, Column: email, Index: other}}}
	if err := w.rewriteBind(&pgproto3.Bind{Parameters: [][]byte{[]byte("a")}}, bad, nil); err == nil {
		t.Error("an unknown index was computed")
	}
}

// TestCatalogIndexColumns: every index column of a column must exist (the
// problem names the DDL) and is hidden from results; the collation
// columns of the catalog query reach the rewriter.
func TestCatalogIndexColumns(t *testing.T) {
	tab, _ := equalityColumns(t)
	pol, err := policy.Parse([]byte(equalityPolicy))
	if err != nil {
		t.Fatal(err)
	}
	row := func(attnum, name, typ string, coll ...string) [][]byte {
		r := [][]byte{[]byte("9"), []byte("public"), []byte("people"), []byte(attnum), []byte(name), []byte(typ)}
		for _, c := range coll {
			r = append(r, []byte(c))
		}
		return r
	}
	cat, err := buildCatalog(pol, [][][]byte{row("1", "email", "25"), row("2", "email_bidx", "25"), row("3", "ssn", "25"), row("4", "ssn_bidx", "25")})
	if err != nil {
		t.Fatal(err)
	}
	if p := cat.problem(tab); !strings.Contains(p, "ALTER TABLE public.people ADD COLUMN email_bidx_ci text; CREATE INDEX CONCURRENTLY people_email_bidx_ci_idx ON public.people (email_bidx_ci);") {
		t.Errorf("problem %q does not ask for email_bidx_ci", p)
	}
	if _, ok := cat.Collation("public", "people", "email"); ok {
		t.Error("a catalog without collation columns knows a collation")
	}
	cat, err = buildCatalog(pol, [][][]byte{
		row("1", "email", "25", "t", "f", "t"), row("2", "email_bidx", "25", "t", "f", "t"),
		row("3", "ssn", "25", "f", "t", "t"), row("4", "ssn_bidx", "25", "t", "f", "t"),
		row("5", "email_bidx_ci", "25", "t", "f", "t"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := cat.problem(tab); p != "" {
		t.Errorf("problem %q", p)
	}
	for attnum, name := range map[int16]string{2: "email_bidx", 4: "ssn_bidx", 5: "email_bidx_ci"} {
		if a, ok := cat.lookup(9, attnum); !ok || !a.index {
			t.Errorf("%s is not a hidden index column: %+v", name, a)
		}
	}
	for col, want := range map[string]rewrite.Collation{"email": {CTypeC: true}, "ssn": {Nondeterministic: true}, "": {CTypeC: true}} {
		if got, ok := cat.Collation("public", "people", col); !ok || got != want {
			t.Errorf("Collation(%q) = %+v, %v; want %+v", col, got, ok, want)
		}
	}
	if _, err := buildCatalog(pol, [][][]byte{row("1", "email", "25", "t")}); err == nil {
		t.Error("a catalog row of 7 columns was accepted")
	}
	if q := catalogQuery(pol, false); !strings.Contains(q, "collisdeterministic") || !strings.Contains(q, "datctype") {
		t.Errorf("catalog query reads no collation: %s", q)
	}
}
