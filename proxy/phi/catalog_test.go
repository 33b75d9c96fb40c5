package phi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
)

// Tests of the catalog's problems (missing tables, second names), the
// databases a policy governs, readiness, and the catalog guard that keeps
// a session from relying on a catalog another connection changed.

// guardParse is what the server receives when the guard (guard.go) is
// prepared for a catalog where patients is OID 7 (testCatalog, withNotes:
// the text is the same, the row type it returns differs), guardRun when it
// runs: bound, executed and its portal closed.
var (
	guardParse = []string{`Close S "phiproxy_guard"`,
		`Parse "phiproxy_guard" SELECT 1 OPERATOR(pg_catalog./) (E'"public"."patients"'::pg_catalog.regclass::pg_catalog.oid OPERATOR(pg_catalog.=) 7)::pg_catalog.int4 AS phiproxy_guard, ` + guardSettings + `, (NULL::"public"."patients").* []`}
	guardRun = []string{`Bind "phiproxy_guard" "phiproxy_guard" [] ["ISO, MDY" "UTC" NULL "on"] []`, `Execute "phiproxy_guard"`, `Close P "phiproxy_guard"`}
)

// guardPassed and guardFailed are the server's answers to guardRun.
var (
	guardPassed = []pgproto3.BackendMessage{&pgproto3.BindComplete{}, &pgproto3.DataRow{Values: [][]byte{[]byte("1")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.CloseComplete{}}
	guardFailed = []pgproto3.BackendMessage{
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "cached plan must not change result type"}}
)

// cat copies rows into a new slice (appending to it never touches the
// caller's).
func cat(rows ...[]string) [][]string { return append([][]string(nil), rows...) }

// withNotes is testCatalog after another connection added a column.
var withNotes = append(cat(testCatalog...), []string{"7", "public", "patients", "7", "notes", "25"})

// TestScriptGuardExtended: the guard goes in front of the first Describe
// or Execute of a batch, after its Parse and Bind; when the catalog
// changed, the server fails it, the client's statement is never run and
// the client is told to send it again; the catalog is read again before
// the next batch, and a statement prepared with the old catalog is refused
// at Bind, since its tables changed.
func TestScriptGuardExtended(t *testing.T) {
	c, eng := scriptedWith(t, scriptOptions{guard: true}, func(f *fakeServer) {
		f.expect(append(append([]string{`Parse "s1" SELECT * FROM patients WHERE email_bidx = $1 [25]`}, guardParse...),
			append(guardRun, `Describe S "s1"`, "Sync")...)...)
		f.send(&pgproto3.ParseComplete{}, &pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.send(&pgproto3.ParameterDescription{ParameterOIDs: []uint32{25}}, patientsRD)
		f.ready()
		// Bound in a later batch: guard after the Bind, before the Execute.
		f.expect(append(append([]string{`Bind "" "s1" [0] ["IDX-public.patients.email-a@x.org"] []`}, guardRun...), `Execute ""`, "Sync")...)
		f.send(&pgproto3.BindComplete{})
		f.send(guardPassed...)
		f.rows(nil, []string{"1", "ENC(public.patients.email:a@x.org)", "IDX-public.patients.email-a@x.org", "NULL"})
		f.ready()
		// Another connection added a column: the guard fails, the rest of
		// the batch is skipped.
		f.expect(append(append([]string{`Bind "" "s1" [0] ["IDX-public.patients.email-a@x.org"] []`}, guardRun...), `Execute ""`, "Sync")...)
		f.send(&pgproto3.BindComplete{})
		f.send(guardFailed...)
		f.ready()
		// Read again before the next batch; s1's table changed: refused.
		// The guard is prepared again for the new catalog when next used.
		f.catalog(withNotes)
		f.expect(`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…`,
			`Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "phiproxy: the PHI tables this prepared statement uses changed…"})
		f.ready()
		// Prepared again, the guard too, for the new catalog.
		f.expect(append(append(append([]string{`Parse "s2" SELECT * FROM patients WHERE email_bidx = $1 [25]`, `Bind "" "s2" [0] ["IDX-public.patients.email-a@x.org"] []`},
			guardParse...), guardRun...), `Describe P ""`, `Execute ""`, "Sync")...)
		f.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.send(&pgproto3.RowDescription{Fields: append(append([]pgproto3.FieldDescription(nil), patientsRD.Fields...), field("notes", 7, 25))})
		f.rows(nil, []string{"1", "ENC(public.patients.email:a@x.org)", "IDX-public.patients.email-a@x.org", "NULL", "n"})
		f.ready()
	})
	bind := func(name string) *pgproto3.Bind {
		return &pgproto3.Bind{PreparedStatement: name, Parameters: [][]byte{[]byte("a@x.org")}}
	}
	c.send(&pgproto3.Parse{Name: "s1", Query: "SELECT * FROM patients WHERE email = $1"}, &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ParameterDescription [25]", "RowDescription id:23/0 email:25/0 date_of_birth:1082/0", "ReadyForQuery I")
	c.send(bind("s1"), &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("BindComplete", `DataRow "1" "a@x.org" NULL`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(bind("s1"), &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("BindComplete", "ErrorResponse ERROR 55000 phiproxy: the PHI tables or their second names changed since this session read their definitions (DDL by another connection, or run by a function); nothing was run: send the statement again", "ReadyForQuery I")
	c.send(bind("s1"), &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: the PHI tables this prepared statement uses changed…", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Name: "s2", Query: "SELECT * FROM patients WHERE email = $1"}, bind("s2"), &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ParseComplete", "BindComplete", `DataRow "1" "a@x.org" NULL "n"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	if got := counter(t, eng.drift.changed); got != 1 {
		t.Errorf("catalog changes counted: %v", got)
	}
}

// TestScriptGuardSimple: a simple Query runs inside the guard's pipeline,
// closed by a Sync of the proxy's own whose ReadyForQuery the client never
// sees, or, when the guard fails, is skipped and answered by it. DISCARD
// ALL drops the guard's statement, which is then prepared again.
func TestScriptGuardSimple(t *testing.T) {
	const sel = "SELECT email FROM patients WHERE email_bidx = 'IDX-public.patients.email-a@x.org'"
	emailRD := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("email", 1, 25)}}
	c, _ := scriptedWith(t, scriptOptions{guard: true}, func(f *fakeServer) {
		f.expect(append(append(guardParse, guardRun...), "Query "+sel, "Sync")...)
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.rows(emailRD, []string{"ENC(public.patients.email:a@x.org)"})
		f.ready()
		f.ready()
		// A text on no policy table: untouched, unguarded.
		f.expect("Query SELECT 1")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("?column?", 0, 23)}}, []string{"1"})
		f.ready()
		f.expect(append(guardRun, "Query "+sel, "Sync")...)
		f.send(guardFailed...)
		f.ready()
		f.catalog(withNotes)
		f.expect(append(append(guardParse, guardRun...), "Query "+sel, "Sync")...)
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.rows(emailRD, []string{"ENC(public.patients.email:a@x.org)"})
		f.ready()
		f.ready()
		f.expect("Query DISCARD ALL")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("DISCARD ALL")})
		f.ready()
		f.expect(append(append(guardParse, guardRun...), "Query "+sel, "Sync")...)
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.rows(emailRD, []string{"ENC(public.patients.email:a@x.org)"})
		f.ready()
		f.ready()
	})
	query := "SELECT email FROM patients WHERE email = 'a@x.org'"
	rows := []string{"RowDescription email:25/0", `DataRow "a@x.org"`, "CommandComplete SELECT 1", "ReadyForQuery I"}
	c.send(&pgproto3.Query{String: query})
	c.expect(rows...)
	c.send(&pgproto3.Query{String: "SELECT 1"})
	c.expect("RowDescription ?column?:23/0", `DataRow "1"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: query})
	c.expect("ErrorResponse ERROR 55000 phiproxy: the PHI tables or their second names changed since this session read their definitions (DDL by another connection, or run by a function); nothing was run: send the statement again", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: query})
	c.expect(rows...)
	c.send(&pgproto3.Query{String: "DISCARD ALL"})
	c.expect("CommandComplete DISCARD ALL", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: query})
	c.expect(rows...)
}

// TestScriptGuardLost: when the server lost the guard's statement anyway,
// the client is told to send its statement again, and the guard is
// prepared again.
func TestScriptGuardLost(t *testing.T) {
	const ins = "INSERT INTO patients (visits) VALUES ('ENC(public.patients.visits:1)')"
	c, _ := scriptedWith(t, scriptOptions{guard: true}, func(f *fakeServer) {
		f.expect(append(append(guardParse, guardRun...), "Query "+ins, "Sync")...)
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		f.ready()
		f.ready()
		f.expect(append(guardRun, "Query "+ins, "Sync")...)
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "26000", Message: `prepared statement "phiproxy_guard" does not exist`})
		f.ready()
		f.expect(append(append(guardParse, guardRun...), "Query "+ins, "Sync")...)
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		f.ready()
		f.ready()
	})
	for _, want := range [][]string{
		{"CommandComplete INSERT 0 1", "ReadyForQuery I"},
		{"ErrorResponse ERROR 55000 phiproxy: the session's catalog check was deallocated (DEALLOCATE ALL or DISCARD ALL); nothing was run: send the statement again", "ReadyForQuery I"},
		{"CommandComplete INSERT 0 1", "ReadyForQuery I"},
	} {
		c.send(&pgproto3.Query{String: "INSERT INTO patients (visits) VALUES (1)"})
		c.expect(want...)
	}
}

// TestScriptRecheck: before a statement on a policy table, a session idle
// for longer than the recheck interval reads the catalog's columns again,
// so the statement runs with the new catalog instead of being refused by
// the guard.
func TestScriptRecheck(t *testing.T) {
	const sel = "SELECT * FROM patients"
	c, _ := scriptedWith(t, scriptOptions{recheck: time.Nanosecond}, func(f *fakeServer) {
		f.catalog(testCatalog) // unchanged
		f.expect("Query " + sel)
		f.rows(patientsRD)
		f.ready()
		f.catalog(withNotes) // changed
		f.expect("Query " + sel)
		f.rows(&pgproto3.RowDescription{Fields: append(append([]pgproto3.FieldDescription(nil), patientsRD.Fields...), field("notes", 7, 25))})
		f.ready()
	})
	c.send(&pgproto3.Query{String: sel})
	c.expect("RowDescription id:23/0 email:25/0 date_of_birth:1082/0", "CommandComplete SELECT 0", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: sel})
	c.expect("RowDescription id:23/0 email:25/0 date_of_birth:1082/0 notes:25/0", "CommandComplete SELECT 0", "ReadyForQuery I")
}

// TestScriptUngoverned: on a database the policy does not list, the proxy
// reads no catalog and touches nothing: the statement and its rows pass
// as they are.
func TestScriptUngoverned(t *testing.T) {
	const sel = "SELECT email FROM patients WHERE email = 'a@x.org'"
	c, _ := scriptedWith(t, scriptOptions{policy: "databases: [clinic]\n" + testPolicy, database: "other", noCatalog: true, guard: true}, func(f *fakeServer) {
		f.expect("Query " + sel)
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("email", 1, 25)}}, []string{"ENC(public.patients.email:a@x.org)"})
		f.ready()
	})
	c.send(&pgproto3.Query{String: sel})
	c.expect("RowDescription email:25/0", `DataRow "ENC(public.patients.email:a@x.org)"`, "CommandComplete SELECT 1", "ReadyForQuery I")
}

// TestScriptMissingTable: in a governed database without the policy's
// table, statements naming it are refused with the DDL that creates it,
// /readyz says so, and the catalog is read again after each refusal.
// Governing every database, a database without any of the policy's tables
// does not make the proxy unready (it may be postgres, or a monitoring
// login's), though its statements on them are refused all the same.
func TestScriptMissingTable(t *testing.T) {
	c, eng := scriptedWith(t, scriptOptions{catalog: [][]string{}, policy: "databases: [db]\n" + testPolicy}, func(f *fakeServer) {
		f.expect(`Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = E'phiproxy: table public.patients is not ready for encryption: it does not exist…`)
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "55000", Message: "phiproxy: table public.patients is not ready…"})
		f.ready()
		f.catalog(testCatalog)
		f.expect("Query SELECT id FROM patients")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23)}})
		f.ready()
	})
	pol, _ := policy.Parse([]byte(testPolicy))
	if err := eng.Ready(); err == nil || !strings.Contains(err.Error(),
		"database db: table public.patients: "+policy.MissingTableMsg+": "+
			strings.Join(policy.CreateTableSQL(pol.Table("public", "patients"), policy.CreateOptions{}), " ")) {
		t.Errorf("Ready() = %v", err)
	}
	c.send(&pgproto3.Query{String: "SELECT id FROM patients"})
	c.expect("ErrorResponse ERROR 55000 phiproxy: table public.patients is not ready…", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM patients"})
	c.expect("RowDescription id:23/0", "CommandComplete SELECT 0", "ReadyForQuery I")
	if err := eng.Ready(); err != nil {
		t.Errorf("Ready() after the table was created = %v", err)
	}
}

// TestScriptAlias: a second name for a policy table, found by the catalog
// query, refuses statements on the table and statements naming the alias,
// except the DDL that removes it.
func TestScriptAlias(t *testing.T) {
	withView := append(cat(testCatalog...), []string{rowAlias, "7", "view", "public.pv", "", "pv"})
	c, eng := scriptedWith(t, scriptOptions{catalog: withView}, func(f *fakeServer) {
		f.expect(`Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = E'phiproxy: table public.patients is not ready for encryption: a second name bypasses phiproxy: view public.pv reads it…`)
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "55000", Message: "phiproxy: table public.patients is not ready…"})
		f.ready()
		f.catalog(withView)
		f.expect(`Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = E'phiproxy: the statement names public.pv, a second name for table public.patients…`)
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "55000", Message: "phiproxy: the statement names public.pv…"})
		f.ready()
		f.catalog(withView)
		f.expect("Query DROP VIEW pv")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("DROP VIEW")})
		f.ready()
		f.catalog(testCatalog)
		f.expect("Query SELECT id FROM pv")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P01", Message: `relation "pv" does not exist`})
		f.ready()
	})
	if err := eng.Ready(); err == nil || !strings.Contains(err.Error(), "view public.pv reads it under a second name that phiproxy does not govern: DROP VIEW public.pv;") {
		t.Errorf("Ready() = %v", err)
	}
	c.send(&pgproto3.Query{String: "SELECT id FROM patients"})
	c.expect("ErrorResponse ERROR 55000 phiproxy: table public.patients is not ready…", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "INSERT INTO PV (email) VALUES ('a@x.org')"})
	c.expect("ErrorResponse ERROR 55000 phiproxy: the statement names public.pv…", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "DROP VIEW pv"})
	c.expect("CommandComplete DROP VIEW", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM pv"})
	c.expect(`ErrorResponse ERROR 42P01 relation "pv" does not exist`, "ReadyForQuery I")
}

// TestCatalogAliases reads every kind of alias row and checks the problem
// each becomes, and that relkind and missing-table rows are problems too.
func TestCatalogAliases(t *testing.T) {
	pol, err := policy.Parse([]byte(testPolicy + `
  - name: public.encounter
    columns:
      diagnosis: { type: text }
  - name: public.v
    columns:
      diagnosis: { type: text }
`))
	if err != nil {
		t.Fatal(err)
	}
	rows := [][][]byte{}
	add := func(r ...string) {
		vals := make([][]byte, len(r))
		for i, v := range r {
			vals[i] = []byte(v)
		}
		rows = append(rows, vals)
	}
	for _, r := range testCatalog {
		add(r...)
	}
	add("9", "public", "v", "1", "diagnosis", "25")
	add(rowRelkind, "9", "public", "v", "v", "")
	for _, a := range [][4]string{
		{"view", "public.pv", "", "pv"},
		{"matview", "public.pmv", "", "pmv"},
		{"rule", "r1 on public.audit", "", "audit"},
		{"rule", "r2 on public.patients", "", ""},
		{"child", "public.kid", "", "kid"},
		{"partition", "public.p1", "", "p1"},
		{"parent", "public.par", "", "par"},
		{"partitionof", "public.all_patients", "", "all_patients"},
		{"foreign", "public.remote_patients", "", "remote_patients"},
		{"trigger", "tt on public.patients", "", ""},
		{"rowfunction", "public.allp()", "", "allp"},
		{"column", "public.holder", "p", "holder"},
		{"domain", "public.pdom", "", "pdom"},
		{"type", "public.ptype", "", "ptype"},
		{"subscription", "sub1", "", ""},
		{"other", "cast from patients to text", "", ""},
	} {
		add(rowAlias, "7", a[0], a[1], a[2], a[3])
	}
	problems, err := Inspect(pol, rows)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range problems {
		got = append(got, fmt.Sprintf("%s %s %s", p.Table, p.Kind, p))
	}
	pre := "public.patients alias a second name bypasses phiproxy: "
	want := []string{
		pre + "view public.pv reads it under a second name that phiproxy does not govern: DROP VIEW public.pv;",
		pre + "materialized view public.pmv holds a copy of it under a second name: DROP MATERIALIZED VIEW public.pmv;",
		pre + "rule r1 on public.audit rewrites statements into or out of it: DROP RULE r1 on public.audit;",
		pre + "rule r2 on public.patients rewrites statements into or out of it: DROP RULE r2 on public.patients;",
		pre + "table public.kid inherits it: its rows are a second way into the table: ALTER TABLE public.kid NO INHERIT public.patients;",
		pre + "partition public.p1 stores its rows under a second name: ALTER TABLE public.patients DETACH PARTITION public.p1;",
		pre + "it inherits public.par, which reads its rows under a second name: ALTER TABLE public.patients NO INHERIT public.par;",
		pre + "it is a partition of public.all_patients, which reads and writes its rows under a second name: ALTER TABLE public.all_patients DETACH PARTITION public.patients;",
		pre + "foreign table public.remote_patients points at it (its table_name and schema_name options name it): DROP FOREIGN TABLE public.remote_patients;",
		pre + "trigger tt on public.patients hands its rows to a function as transition tables: DROP TRIGGER tt on public.patients;",
		pre + "function public.allp() takes or returns its rows: DROP FUNCTION public.allp();",
		pre + "column p of public.holder holds its rows (its row type): ALTER TABLE public.holder DROP COLUMN p;",
		pre + "domain public.pdom is built on its row type: DROP DOMAIN public.pdom;",
		pre + "type public.ptype is built on its row type: DROP TYPE public.ptype;",
		pre + "subscription sub1 replicates rows into it without phiproxy (remove the table from the publication first): ALTER SUBSCRIPTION sub1 REFRESH PUBLICATION;",
		pre + "cast from patients to text is built on its row type",
		"public.encounter missing " + policy.MissingTableMsg + ": " + strings.Join(policy.CreateTableSQL(pol.Table("public", "encounter"), policy.CreateOptions{}), " "),
		"public.v relkind public.v is a view, not a table: the policy must name the table that stores the values",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
	c, err := buildCatalog(pol, rows)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sql     string
		refused string // the alias named, "" when the text passes
	}{
		{"SELECT * FROM pv", "public.pv"},
		{"insert into Kid values (1)", "public.kid"},
		{`SELECT "remote_patients".x FROM "remote_patients"`, "public.remote_patients"},
		{"SELECT allp()", "public.allp()"},
		{"SELECT * FROM pvx, kids, my_pmv", ""},
		{"DROP VIEW pv", ""},
		{"  /* x /* nested */ */ ALTER TABLE kid NO INHERIT patients;", ""},
		{"/* /* */ DROP */ SELECT * FROM pv", "public.pv"},
		{"DROP VIEW x; SELECT * FROM pv", "public.pv"},
		{"-- drop\nSELECT * FROM pv", "public.pv"},
		{"ALTER VIEW pv ALTER COLUMN ssn SET DEFAULT 'x'", "public.pv"},
		{"ALTER TABLE kid ALTER COLUMN ssn SET DEFAULT $$x$$", "public.kid"},
		{"ALTER TABLE kid ALTER COLUMN ssn SET DEFAULT 123", "public.kid"},
	} {
		named, err := c.aliasNamed(tc.sql)
		switch {
		case !named && tc.sql != "SELECT * FROM pvx, kids, my_pmv":
			t.Errorf("%q: names no alias", tc.sql)
		case tc.refused == "" && err != nil:
			t.Errorf("%q refused: %v", tc.sql, err)
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), "the statement names "+tc.refused+", a second name for table public.patients")):
			t.Errorf("%q: %v, want a refusal naming %s", tc.sql, err, tc.refused)
		}
	}
	// A Unicode-escaped identifier spells a name without its letters.
	for _, sql := range []string{`SELECT * FROM U&"p\0076"`, `select * from u&"!0070v" uescape '!'`, `DROP VIEW U&"p\0076"`} {
		if named, err := c.aliasNamed(sql); !named || err == nil || !strings.Contains(err.Error(), "Unicode-escaped identifier") {
			t.Errorf("%q: %v, %v; want a refusal", sql, named, err)
		}
	}
}

// TestCheckDatabase: the exported check lists each governed database's
// problems, and for a missing table names the tables that hold its PHI
// columns.
func TestCheckDatabase(t *testing.T) {
	pol, err := policy.Parse([]byte("databases: [clinic]\ntables:\n  - name: public.encounter\n    columns:\n      diagnosis: { type: text }\n      medication: { type: text }\n"))
	if err != nil {
		t.Fatal(err)
	}
	var queries []string
	problems, err := CheckDatabase(context.Background(), pol, func(ctx context.Context, sql string) ([][][]byte, error) {
		queries = append(queries, sql)
		if strings.HasPrefix(sql, "WITH t AS") {
			return nil, nil // no table at all
		}
		return [][][]byte{{[]byte("public.encounters")}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Kind != ProblemMissing || !strings.Contains(problems[0].Message, "; public.encounters has all its PHI columns: is that the table the policy means?") {
		t.Errorf("problems = %+v", problems)
	}
	if len(queries) != 2 || !strings.Contains(queries[1], "ARRAY[E'diagnosis', E'medication']") {
		t.Errorf("queries = %q", queries)
	}
}

func TestDropsStatements(t *testing.T) {
	for sql, want := range map[string]bool{
		"DISCARD ALL": true, "deallocate all": true, "DEALLOCATE s1": true, "select 1; Discard plans": true,
		"SELECT discarded FROM t": false, "SELECT 1": false, "SELECT x_deallocate": false, "": false,
	} {
		if got := dropsStatements(sql); got != want {
			t.Errorf("dropsStatements(%q) = %v", sql, got)
		}
	}
}

// TestSameTables: a plan stays valid across catalogs that describe its
// tables alike, whatever else changed.
func TestSameTables(t *testing.T) {
	pol, err := policy.Parse([]byte(testPolicy + "  - name: other\n    columns:\n      x: { type: text }\n"))
	if err != nil {
		t.Fatal(err)
	}
	build := func(rows [][]string) *catalog {
		var raw [][][]byte
		for _, r := range rows {
			vals := make([][]byte, len(r))
			for i, v := range r {
				vals[i] = []byte(v)
			}
			raw = append(raw, vals)
		}
		c, err := buildCatalog(pol, raw)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	patients, other := []*policy.Table{pol.Tables()[0]}, []*policy.Table{pol.Tables()[1]}
	base := build(testCatalog)
	withOther := build(append(cat(testCatalog...), []string{"8", "public", "other", "1", "x", "25"}))
	renamed := build(append(cat(testCatalog[:5]...), []string{"7", "public", "patients", "6", "ident", "23"}))
	recreated := build([][]string{{"17", "public", "patients", "1", "email", "25"}, {"17", "public", "patients", "2", "email_bidx", "25"},
		{"17", "public", "patients", "3", "date_of_birth", "25"}, {"17", "public", "patients", "4", "photo", "17"},
		{"17", "public", "patients", "5", "visits", "25"}, {"17", "public", "patients", "6", "id", "23"}})
	for _, tc := range []struct {
		name   string
		a, b   *catalog
		tables []*policy.Table
		want   bool
	}{
		{"same", base, base, patients, true},
		{"another table created", base, withOther, patients, true},
		{"the other table created", base, withOther, other, false},
		{"a column renamed", base, renamed, patients, false},
		{"table recreated", base, recreated, patients, false},
		{"no tables", base, recreated, nil, true},
	} {
		if got := tc.a.sameTables(tc.b, tc.tables); got != tc.want {
			t.Errorf("%s: sameTables = %v", tc.name, got)
		}
	}
}

// TestScriptRefusalRechecks: before refusing a statement, an idle session
// checks that its catalog is current: a table another connection created
// a moment ago is served at once; a refusal that does not depend on the
// catalog stands, after the same check.
func TestScriptRefusalRechecks(t *testing.T) {
	const ins = "INSERT INTO patients (visits) VALUES ('ENC(public.patients.visits:1)')"
	c, _ := scriptedWith(t, scriptOptions{guard: true, catalog: [][]string{}}, func(f *fakeServer) {
		f.catalog(testCatalog)
		f.expect(append(append(guardParse, guardRun...), "Query "+ins, "Sync")...)
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{})
		f.send(guardPassed...)
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		f.ready()
		f.ready()
		f.catalog(testCatalog)
		f.expect("Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "phiproxy: …"})
		f.ready()
	})
	c.send(&pgproto3.Query{String: "INSERT INTO patients (visits) VALUES (1)"})
	c.expect("CommandComplete INSERT 0 1", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email LIKE '%x%'"})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: …", "ReadyForQuery I")
}

// TestContainsWordCut: PostgreSQL cuts identifiers to 63 bytes, so a name
// that long is found followed by more identifier characters.
func TestContainsWordCut(t *testing.T) {
	long := strings.Repeat("v", 63)
	for _, tc := range []struct {
		s, word string
		want    bool
	}{
		{"select * from pv", "pv", true},
		{"select * from pvx", "pv", false},
		{"select * from " + long + "xyz", long, true},
		{`insert into "` + long + `é"`, long, true},
		{"select * from x" + long, long, false},
	} {
		if got := containsWord(tc.s, tc.word); got != tc.want {
			t.Errorf("containsWord(%q, %q) = %v", tc.s, tc.word, got)
		}
	}
}
