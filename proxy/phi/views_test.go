package phi

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// viewRows are the catalog query's rows for views over testCatalog's
// patients (OID 7), as PostgreSQL 15 prints their definitions:
//
//	contacts (20): id, email, date_of_birth AS born WHERE id > 1  decrypting
//	mails (21):    contacts.email AS mail                         decrypting, over a view
//	lowered (22):  lower(email) AS e                              a function on PHI
//	low2 (23):     lowered.e                                      over a view that is not decrypting
//	hidden (24):   id, reading email where the definition says not (misresolved)
//	bidx (25):     email_bidx                                     a blind index
func viewRows() [][]string {
	view := func(oid, name, def, xmin string) []string {
		return []string{rowView, oid, "7", "public", name, "public." + name, def, xmin, ""}
	}
	col := func(oid, attnum, name, typ string) []string {
		return []string{rowViewCol, oid, attnum, name, typ, "", "", "", ""}
	}
	dep := func(oid, rel, attnum string) []string {
		return []string{rowViewDep, oid, rel, attnum, "", "", "", "", ""}
	}
	return [][]string{
		view("20", "contacts", " SELECT patients.id,\n    patients.email,\n    patients.date_of_birth AS born\n   FROM patients\n  WHERE (patients.id > 1);", "720"),
		col("20", "1", "id", "23"), col("20", "2", "email", "25"), col("20", "3", "born", "25"),
		dep("20", "7", "6"), dep("20", "7", "1"), dep("20", "7", "3"),
		view("21", "mails", " SELECT contacts.email AS mail\n   FROM contacts;", "721"),
		col("21", "1", "mail", "25"), dep("21", "20", "2"),
		view("22", "lowered", " SELECT lower(patients.email) AS e\n   FROM patients;", "722"),
		col("22", "1", "e", "25"), dep("22", "7", "1"),
		view("23", "low2", " SELECT lowered.e\n   FROM lowered;", "723"),
		col("23", "1", "e", "25"), dep("23", "22", "1"),
		view("24", "hidden", " SELECT patients.id\n   FROM patients;", "724"),
		col("24", "1", "id", "23"), dep("24", "7", "6"), dep("24", "7", "1"),
		view("25", "bidx", " SELECT patients.email_bidx\n   FROM patients;", "725"),
		col("25", "1", "email_bidx", "25"), dep("25", "7", "2"),
	}
}

func rawRows(rows [][]string) [][][]byte {
	var raw [][][]byte
	for _, r := range rows {
		vals := make([][]byte, len(r))
		for i, v := range r {
			vals[i] = []byte(v)
		}
		raw = append(raw, vals)
	}
	return raw
}

// TestCatalogViews: views over a policy table classified from the catalog
// rows: decrypting views map their columns to the columns they copy and
// join the policy as read-only tables; the others refuse the table.
func TestCatalogViews(t *testing.T) {
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	c, err := buildCatalog(pol, rawRows(append(cat(testCatalog...), viewRows()...)))
	if err != nil {
		t.Fatal(err)
	}
	email, dob := pol.Tables()[0].Column("email"), pol.Tables()[0].Column("date_of_birth")
	for _, tc := range []struct {
		key  attrKey
		want *policy.Column
	}{
		{attrKey{20, 1}, nil}, {attrKey{20, 2}, email}, {attrKey{20, 3}, dob}, {attrKey{21, 1}, email},
		{attrKey{22, 1}, nil}, {attrKey{23, 1}, nil}, {attrKey{24, 1}, nil}, {attrKey{25, 1}, nil},
	} {
		a, ok := c.lookup(tc.key.table, tc.key.attnum)
		if ok != (tc.want != nil) || a.column != tc.want || a.index {
			t.Errorf("lookup(%v) = %+v, %v; want %v", tc.key, a, ok, tc.want)
		}
	}
	var got []string
	for _, p := range c.allProblems(pol) {
		got = append(got, p.String())
	}
	pre := "a second name bypasses phiproxy: view public."
	want := []string{
		pre + "lowered reads it under a second name that phiproxy does not govern (function lower() on PHI column public.patients.email is not supported: the database holds only its ciphertext): DROP VIEW public.lowered;",
		pre + "low2 reads it under a second name that phiproxy does not govern (it reads view public.lowered, which phiproxy cannot decrypt): DROP VIEW public.low2;",
		pre + "hidden reads it under a second name that phiproxy does not govern (it reads PHI or blind-index columns other than as plain output columns): DROP VIEW public.hidden;",
		pre + "bidx reads it under a second name that phiproxy does not govern (column email_bidx is internal to phiproxy: it holds a blind index of PHI column public.patients.email): DROP VIEW public.bidx;",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
	for _, name := range []string{"lowered", "low2", "hidden", "bidx"} {
		if _, err := c.aliasNamed("SELECT * FROM " + name); err == nil {
			t.Errorf("a statement naming %s passes", name)
		}
	}
	for _, name := range []string{"contacts", "mails"} {
		if named, err := c.aliasNamed("SELECT * FROM " + name); named || err != nil {
			t.Errorf("a statement naming %s: %v, %v", name, named, err)
		}
		vt := c.pol.Table("public", name)
		if vt == nil || !vt.View {
			t.Fatalf("view %s is not in the catalog's policy: %+v", name, vt)
		}
	}
	if cols, ok := c.Columns("public", "contacts"); !ok || strings.Join(cols, ",") != "id,email,born" {
		t.Errorf("Columns(contacts) = %v, %v", cols, ok)
	}
	if mail := c.pol.Table("public", "mails").Column("mail"); mail == nil || mail.Base != email {
		t.Errorf("mails.mail = %+v", mail)
	}

	// The guard checks each decrypting view.
	g := guardQuery(pol, c)
	for _, part := range []string{"E'public.contacts'::pg_catalog.regclass::pg_catalog.oid OPERATOR(pg_catalog.=) 20", "r.xmin OPERATOR(pg_catalog.=) E'720'::pg_catalog.xid", "ev_class OPERATOR(pg_catalog.=) 20::pg_catalog.oid",
		"(NULL::public.contacts).*", "E'public.mails'::pg_catalog.regclass::pg_catalog.oid OPERATOR(pg_catalog.=) 21", "E'721'", "(NULL::public.mails).*"} {
		if !strings.Contains(g, part) {
			t.Errorf("guard %q lacks %q", g, part)
		}
	}
	if strings.Contains(g, "lowered") || strings.Contains(g, "'22'") {
		t.Errorf("guard checks a view that is not decrypting: %q", g)
	}

	// Plans: the view's PHI columns can be selected, not compared.
	plans := rewrite.NewCache(10, c.pol, c)
	if p, err := plans.Analyze("SELECT m.mail FROM mails m"); err != nil || p.Passthrough || len(p.Statements[0].Tables) != 1 || !reliesOnCatalog(p) {
		t.Errorf("select from a view: %+v, %v", p, err)
	}
	if _, err := plans.Analyze("SELECT 1 FROM mails WHERE mail = $1"); err == nil || !strings.Contains(err.Error(), "column mail of view public.mails") {
		t.Errorf("comparison on a view's column: %v", err)
	}

	// A plan on a view stays valid while the view's definition does.
	views := func(c *catalog) []*policy.Table { return []*policy.Table{c.pol.Table("public", "mails")} }
	same, _ := buildCatalog(pol, rawRows(append(cat(testCatalog...), viewRows()...)))
	replaced := viewRows()
	replaced[7] = []string{rowView, "21", "7", "public", "mails", "public.mails", " SELECT contacts.email AS mail\n   FROM contacts\n  WHERE (contacts.id > 2);", "821", ""}
	other, _ := buildCatalog(pol, rawRows(append(cat(testCatalog...), replaced...)))
	if !c.sameTables(same, views(c)) || c.sameTables(other, views(c)) {
		t.Errorf("sameTables: same %v, replaced %v", c.sameTables(same, views(c)), c.sameTables(other, views(c)))
	}
}

// TestScriptView: rows of a decrypting view are decrypted by the view's
// OID and attribute numbers, which RowDescription reports, and typed as
// the columns they copy; a comparison on its PHI column and a write
// through it are refused.
func TestScriptView(t *testing.T) {
	rows := cat(testCatalog...)
	for _, r := range viewRows() {
		if r[1] == "20" || r[1] == "21" { // the decrypting ones: the others refuse the table
			rows = append(rows, r)
		}
	}
	viewField := func(name string, attnum uint16, typ uint32) pgproto3.FieldDescription {
		return pgproto3.FieldDescription{Name: []byte(name), TableOID: 20, TableAttributeNumber: attnum, DataTypeOID: typ, DataTypeSize: -1, TypeModifier: -1}
	}
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{viewField("id", 1, 23), viewField("email", 2, 25), viewField("born", 3, 25)}}
	c, _ := scriptedWith(t, scriptOptions{catalog: rows}, func(f *fakeServer) {
		f.expect("Query SELECT * FROM contacts")
		f.rows(rd, []string{"2", "ENC(public.patients.email:a@x.org)", "ENC(public.patients.date_of_birth:1990-01-02)"}, []string{"3", "NULL", "NULL"})
		f.ready()
		for _, msg := range []string{"phiproxy: = on column email of view public.contacts is not supported…", "phiproxy: writing through view public.contacts is not supported…"} {
			f.expect(`Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = E'` + msg[:60] + `…`)
			f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: msg})
			f.ready()
		}
	})
	c.send(&pgproto3.Query{String: "SELECT * FROM contacts"})
	c.expect("RowDescription id:23/0 email:25/0 born:1082/0", `DataRow "2" "a@x.org" "1990-01-02"`, `DataRow "3" NULL NULL`, "CommandComplete SELECT 2", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM contacts WHERE email = 'a@x.org'"})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: = on column email of view public.contacts is not supported…", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "INSERT INTO contacts (id, email) VALUES (4, 'a@x.org')"})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: writing through view public.contacts is not supported…", "ReadyForQuery I")
}
