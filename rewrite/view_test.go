package rewrite

import (
	"errors"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// viewPolicy is the seed policy with public.contacts, a decrypting view:
// id, mail (patients.email), born (patients.date_of_birth), note.
func viewPolicy(t *testing.T) (*policy.Policy, testCatalog) {
	t.Helper()
	seed, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	pt := seed.Table("public", "patients")
	pol, err := seed.WithViews([]policy.View{{Schema: "public", Name: "contacts", Columns: []policy.ViewColumn{
		{Name: "mail", Base: pt.Column("email")}, {Name: "born", Base: pt.Column("date_of_birth")}}}})
	if err != nil {
		t.Fatal(err)
	}
	cat := testCatalog{"public.contacts": {"id", "mail", "born", "note"}}
	for k, v := range seedCatalog {
		cat[k] = v
	}
	return pol, cat
}

// TestViewColumns: view definitions as PostgreSQL's pg_get_viewdef prints
// them (15 qualifies every column; 16 and later leave a single relation's
// bare), classified.
func TestViewColumns(t *testing.T) {
	pol, cat := viewPolicy(t)
	for _, tc := range []struct {
		name string
		def  string
		want []string // the PHI column each output copies, "" for none
		err  string   // part of the refusal, when it is one
	}{
		{name: "plain columns", def: " SELECT patients.id,\n    patients.email,\n    patients.date_of_birth\n   FROM patients;",
			want: []string{"", "public.patients.email", "public.patients.date_of_birth"}},
		{name: "renamed, filtered and ordered by other columns", def: " SELECT p.id,\n    p.email AS mail\n   FROM patients p\n  WHERE (p.id > 1)\n  ORDER BY p.id\n LIMIT 10;",
			want: []string{"", "public.patients.email"}},
		{name: "bare columns (PostgreSQL 16)", def: " SELECT id,\n    email\n   FROM patients;", want: []string{"", "public.patients.email"}},
		{name: "join on other columns", def: " SELECT p.id,\n    n.diagnosis\n   FROM (patients p\n     JOIN clinical_notes n ON ((n.patient_id = p.id)));",
			want: []string{"", "public.clinical_notes.diagnosis"}},
		{name: "subquery passing it through", def: " SELECT s.id,\n    s.email\n   FROM ( SELECT patients.id,\n            patients.email\n           FROM patients) s;",
			want: []string{"", "public.patients.email"}},
		{name: "IS NOT NULL", def: " SELECT patients.id,\n    patients.email\n   FROM patients\n  WHERE (patients.email IS NOT NULL);",
			want: []string{"", "public.patients.email"}},
		{name: "count", def: " SELECT count(patients.email) AS count\n   FROM patients;", want: []string{""}},
		{name: "no PHI column", def: " SELECT patients.id,\n    patients.created_at\n   FROM patients;", want: []string{"", ""}},
		{name: "over a decrypting view", def: " SELECT contacts.id,\n    contacts.mail\n   FROM contacts;", want: []string{"", "public.contacts.mail"}},

		{name: "function", def: " SELECT patients.id,\n    lower(patients.email) AS e\n   FROM patients;", err: "function lower() on PHI column public.patients.email"},
		{name: "cast", def: " SELECT (patients.email)::character varying AS e\n   FROM patients;", err: "PHI column public.patients.email"},
		{name: "COALESCE", def: " SELECT COALESCE(patients.email, ''::text) AS f\n   FROM patients;", err: "PHI column public.patients.email"},
		{name: "CASE", def: " SELECT\n        CASE\n            WHEN (patients.id > 1) THEN patients.email\n            ELSE NULL::text\n        END AS g\n   FROM patients;", err: "PHI column public.patients.email"},
		{name: "equality in WHERE", def: " SELECT patients.id\n   FROM patients\n  WHERE (patients.email = 'x'::text);", err: "compares PHI column public.patients.email"},
		{name: "join on PHI", def: " SELECT a.id,\n    b.email\n   FROM (patients a\n     JOIN patients b ON ((a.ssn = b.ssn)));", err: "compares PHI column public.patients.ssn"},
		{name: "ORDER BY", def: " SELECT patients.email\n   FROM patients\n  ORDER BY patients.email;", err: "ORDER BY on PHI column public.patients.email"},
		{name: "DISTINCT", def: " SELECT DISTINCT patients.email\n   FROM patients;", err: "DISTINCT"},
		{name: "GROUP BY", def: " SELECT patients.email,\n    count(*) AS count\n   FROM patients\n  GROUP BY patients.email;", err: "GROUP BY on PHI column public.patients.email"},
		{name: "UNION", def: " SELECT patients.email\n   FROM patients\nUNION ALL\n SELECT patients.ssn AS email\n   FROM patients;", err: "UNION"},
		{name: "window", def: " SELECT patients.id,\n    row_number() OVER (ORDER BY patients.email) AS row_number\n   FROM patients;", err: "PHI column public.patients.email"},
		{name: "scalar subquery", def: " SELECT p.id,\n    ( SELECT q.email\n           FROM patients q\n          WHERE (q.id = p.id)) AS email\n   FROM patients p;", err: "PHI column public.patients.email"},
		{name: "jsonb operator", def: " SELECT (patients.additional_info -> 'a'::text) AS a\n   FROM patients;", err: "PHI column public.patients.additional_info"},
		{name: "whole row", def: " SELECT p.*::patients AS p\n   FROM patients p;", err: "whole-row reference"},
		{name: "blind index", def: " SELECT patients.id,\n    patients.email_bidx\n   FROM patients;", err: "is internal to phiproxy"},
		{name: "function on a view's column", def: " SELECT lower(contacts.mail) AS lower\n   FROM contacts;", err: "column mail of view public.contacts is not supported: it returns PHI column public.patients.email"},
		{name: "two statements", def: " SELECT 1; SELECT 2;", err: "one SELECT"},
		{name: "syntax", def: " SELECT FROM WHERE;", err: "syntax error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cols, err := ViewColumns(tc.def, pol, cat)
			if tc.err != "" {
				var e *Error
				if !errors.As(err, &e) || !strings.Contains(e.Message, tc.err) {
					t.Fatalf("got %v, %v; want a refusal with %q", cols, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(cols))
			for i, c := range cols {
				if c != nil {
					got[i] = c.QualifiedName()
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("columns %q, want %q", got, tc.want)
			}
		})
	}
}

// TestViewStatements: statements on a decrypting view, which the policy
// holds as a read-only table whose PHI columns have no blind index.
func TestViewStatements(t *testing.T) {
	pol, cat := viewPolicy(t)
	for _, tc := range []struct {
		sql string
		err string // part of the 0A000 refusal; "" when accepted unchanged
	}{
		{"SELECT * FROM contacts", ""},
		{"SELECT c.mail, c.born FROM contacts c WHERE c.id = $1 ORDER BY c.id", ""},
		{"SELECT id FROM contacts WHERE mail IS NULL", ""},
		{"SELECT count(mail) FROM contacts", ""},
		{"DECLARE c CURSOR FOR SELECT mail FROM contacts", ""},
		{"SELECT mail FROM contacts JOIN patients p ON p.id = contacts.id", ""},
		{"DROP VIEW contacts", ""},
		{"ALTER VIEW contacts RENAME TO contacts2", ""},
		{"ALTER VIEW contacts RENAME COLUMN mail TO email", ""},
		{"UPDATE patients SET date_of_birth = c.born FROM contacts c WHERE c.id = patients.id", ""},

		{"SELECT id FROM contacts WHERE mail = $1", "= on column mail of view public.contacts is not supported: it returns PHI column public.patients.email"},
		{"SELECT id FROM contacts WHERE mail IN ('a', 'b')", "column mail of view public.contacts"},
		{"SELECT id FROM contacts WHERE mail LIKE '%x%'", "column mail of view public.contacts"},
		{"SELECT id FROM contacts ORDER BY born", "ORDER BY on column born of view public.contacts"},
		{"SELECT born, count(*) FROM contacts GROUP BY born", "GROUP BY on column born of view public.contacts"},
		{"SELECT lower(mail) FROM contacts", "column mail of view public.contacts"},
		{"SELECT DISTINCT mail FROM contacts", "column mail of view public.contacts"},
		{"SELECT c.id FROM contacts c JOIN patients p ON p.email = c.mail", "column mail of view public.contacts"},
		{"SELECT c FROM contacts c", "whole-row reference"},
		{"INSERT INTO contacts (id, mail) VALUES (1, $1)", "writing through view public.contacts is not supported"},
		{"INSERT INTO contacts (id) VALUES (1)", "writing through view public.contacts"},
		{"UPDATE contacts SET note = 'x' WHERE id = 1", "writing through view public.contacts"},
		{"DELETE FROM contacts WHERE id = 1", "writing through view public.contacts"},
		{"WITH d AS (DELETE FROM contacts RETURNING id) SELECT * FROM d", "writing through view public.contacts"},
		{"COPY contacts TO STDOUT", "COPY"},
		{"MERGE INTO contacts c USING patients p ON p.id = c.id WHEN MATCHED THEN DELETE", "MERGE"},
		{"UPDATE patients SET email = c.mail FROM contacts c WHERE c.id = patients.id", "PHI column public.patients.email"},
		{"INSERT INTO patients (email) SELECT mail FROM contacts", "INSERT ... SELECT"},
		{"PREPARE p AS SELECT mail FROM contacts", "PREPARE"},
	} {
		t.Run(tc.sql, func(t *testing.T) {
			plan, err := Analyze(tc.sql, pol, cat)
			if tc.err != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeFeatureNotSupported || !strings.Contains(e.Message, tc.err) {
					t.Fatalf("got %v; want 0A000 with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range plan.Params {
				if p.Action != ActionNone {
					t.Errorf("parameter rewritten: %+v", p)
				}
			}
			if len(plan.Literals) > 0 || (!plan.Passthrough && plan.SQL != tc.sql) {
				t.Errorf("rewritten: %q %+v", plan.SQL, plan.Literals)
			}
			touched, ddl := false, false
			for _, st := range plan.Statements {
				ddl = ddl || st.Kind == KindDDL
				for _, tb := range st.Tables {
					touched = touched || tb.View
				}
			}
			if !touched && !ddl {
				t.Errorf("the plan does not say it touches the view: %+v", plan.Statements)
			}
		})
	}
}

// TestViewChanges: a statement that creates, replaces, renames or moves a
// view over policy tables says so (the proxy reads the catalog again
// before it plans another statement), no statement but transaction
// control may follow it in the same text, and none may be in a function
// or DO body, which the server runs unseen.
func TestViewChanges(t *testing.T) {
	pol, cat := viewPolicy(t)
	for _, tc := range []struct {
		sql     string
		changes bool
		err     string // part of the 0A000 refusal
	}{
		{sql: "CREATE VIEW v AS SELECT id, email AS mail FROM patients", changes: true},
		{sql: "CREATE OR REPLACE VIEW contacts AS SELECT id, email AS mail, date_of_birth AS born, note FROM patients", changes: true},
		{sql: "CREATE VIEW v2 AS SELECT id, mail FROM contacts", changes: true},
		{sql: "ALTER VIEW contacts RENAME TO contacts2", changes: true},
		{sql: "ALTER VIEW contacts RENAME COLUMN mail TO email", changes: true},
		{sql: "ALTER TABLE contacts RENAME COLUMN mail TO email", changes: true},
		{sql: "BEGIN; CREATE VIEW v AS SELECT id, email AS mail FROM patients; COMMIT", changes: true},
		{sql: "DROP VIEW contacts"},
		{sql: "CREATE VIEW v AS SELECT 1 AS one"},
		{sql: "SELECT id FROM contacts; CREATE VIEW v AS SELECT id FROM patients", changes: true},

		{sql: "CREATE VIEW v AS SELECT id, email AS mail FROM patients; SELECT id FROM v WHERE mail = 'x'", err: "in the same text"},
		{sql: "ALTER VIEW contacts RENAME COLUMN mail TO m; SELECT id FROM contacts WHERE m = 'x'", err: "in the same text"},
		{sql: "ALTER VIEW contacts RENAME TO c2; SELECT 1", err: "in the same text"},
		{sql: "CREATE VIEW a AS SELECT id, email AS mail FROM patients; CREATE VIEW b AS SELECT id FROM a WHERE mail = 'x'", err: "in the same text"},
		{sql: "DO $$ BEGIN EXECUTE 'CREATE VIEW v AS SELECT id, email AS mail FROM patients'; END $$", err: "inside a function or DO block"},
		{sql: "DO $$ BEGIN ALTER VIEW contacts RENAME COLUMN mail TO m; END $$", err: "inside a function or DO block"},
		{sql: "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'ALTER VIEW contacts RENAME TO c2'; END $$", err: "inside a function or DO block"},
	} {
		t.Run(tc.sql, func(t *testing.T) {
			plan, err := Analyze(tc.sql, pol, cat)
			if tc.err != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeFeatureNotSupported || !strings.Contains(e.Message, tc.err) {
					t.Fatalf("got %v; want 0A000 with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			changes := false
			for _, st := range plan.Statements {
				changes = changes || st.ChangesViews
			}
			if changes != tc.changes {
				t.Errorf("ChangesViews %v, want %v", changes, tc.changes)
			}
		})
	}
}
