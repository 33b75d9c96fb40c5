package integration

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/novamind/phiproxy/crypto"
)

// The fail-closed suite of issue 9 (the classes about SQL analysis: DDL
// that writes PHI, names the rewriter does not resolve, second names for a
// policy table, function bodies). Each statement carries a fresh secret()
// marker, as a value or, where the statement has none, in a comment: the
// proxy must refuse it with 0A000 and the marker must never reach the
// server. Each test checks the server log at its end; the suite's leak
// check searches the log, the data files and WAL again afterwards.
//
// Every form runs against patients (no CHECK constraint on its PHI
// columns) and, where the form allows, against insurance, which the test
// gives a ciphertext CHECK: with the CHECK a forwarded plaintext would be
// refused by the server but logged in "Failing row contains (...)", which
// counts as a leak all the same.

// fcTable is a policy table and one of its PHI columns.
type fcTable struct{ table, col string }

var (
	fcNoCheck   = fcTable{"patients", "city"}
	fcWithCheck = fcTable{"insurance", "subscriber_ssn"}
)

// fcCase is one refused form. {T} and {C} stand for the table and the PHI
// column, {M} for the marker; a case without {T} runs against patients
// only.
type fcCase struct{ class, name, sql string }

var fcRefused = []fcCase{
	// Item 2: DDL that writes values into PHI columns.
	{"ddl", "type using literal", "ALTER TABLE {T} ALTER COLUMN {C} TYPE text USING '{M}'"},
	{"ddl", "type using expression", "ALTER TABLE {T} ALTER COLUMN {C} TYPE text USING coalesce({C}, '{M}')"},
	{"ddl", "type other than storage", "ALTER TABLE {T} ALTER COLUMN {C} TYPE varchar(64) /* {M} */"},
	{"ddl", "add column default", "ALTER TABLE {T} ADD COLUMN IF NOT EXISTS {C} text DEFAULT '{M}'"},
	{"ddl", "add column generated", "ALTER TABLE {T} ADD COLUMN IF NOT EXISTS {C} text GENERATED ALWAYS AS ('{M}') STORED"},
	{"ddl", "set default", "ALTER TABLE {T} ALTER COLUMN {C} SET DEFAULT '{M}'"},
	{"ddl", "set default only", "ALTER TABLE ONLY {T} ALTER COLUMN {C} SET DEFAULT '{M}'"},
	{"ddl", "set default if exists second subcommand", "ALTER TABLE IF EXISTS {T} ALTER COLUMN id SET DEFAULT 1, ALTER COLUMN {C} SET DEFAULT '{M}'"},
	{"ddl", "set default blind index", "ALTER TABLE patients ALTER COLUMN email_bidx SET DEFAULT '{M}'"},
	{"ddl", "set expression", "ALTER TABLE {T} ALTER COLUMN {C} SET EXPRESSION AS ('{M}')"},
	{"ddl", "identity", "ALTER TABLE {T} ALTER COLUMN {C} ADD GENERATED ALWAYS AS IDENTITY /* {M} */"},
	{"ddl", "create table default", "CREATE TABLE IF NOT EXISTS {T} (id int, {C} text DEFAULT '{M}')"},
	{"ddl", "create table domain", "CREATE TABLE IF NOT EXISTS {T} (id int, {C} fc_domain) /* {M} */"},
	{"ddl", "create table like", "CREATE TABLE IF NOT EXISTS {T} (LIKE fc_template INCLUDING ALL) /* {M} */"},
	{"ddl", "create table as", "CREATE TABLE IF NOT EXISTS {T} AS SELECT '{M}'::text AS {C}"},
	{"ddl", "select into", "SELECT '{M}'::text AS {C} INTO {T}"},
	{"ddl", "index predicate", "CREATE INDEX fc_idx ON patients (id) WHERE email = '{M}'"},
	{"ddl", "check constraint", "ALTER TABLE patients ADD CONSTRAINT fc_check CHECK (ssn <> '{M}') NOT VALID"},
	{"ddl", "row level policy", "CREATE POLICY fc_policy ON patients USING (email = '{M}')"},
	{"ddl", "publication row filter", "CREATE PUBLICATION fc_pub FOR TABLE patients WHERE (email = '{M}')"},
	{"ddl", "trigger when", "CREATE TRIGGER fc_trg AFTER UPDATE ON patients FOR EACH ROW WHEN (NEW.email = '{M}') EXECUTE FUNCTION fc_noop()"},

	// Item 3: names the rewriter does not resolve.
	{"names", "alias list", "SELECT i FROM patients AS p(i, fn) WHERE fn = '{M}'"},
	{"names", "alias list hides the name", "SELECT i FROM patients AS p(i, fn) WHERE p.first_name = '{M}'"},
	{"names", "join alias list", "SELECT c2 FROM (patients p JOIN insurance i ON i.patient_id = p.id) AS j(c1, c2) WHERE c2 = '{M}'"},
	{"names", "subquery alias list", "SELECT c FROM (SELECT * FROM patients) AS s(a, b, c) WHERE c = '{M}'"},
	{"names", "whole row field", "SELECT id FROM {T} p WHERE (p).{C} = '{M}'"},
	{"names", "whole row star field", "SELECT id FROM {T} p WHERE (p.*).{C} = '{M}'"},
	{"names", "functional notation", "SELECT id FROM {T} p WHERE {C}(p) = '{M}'"},
	{"names", "whole row cast", "SELECT id FROM {T} p WHERE p::text LIKE '%{M}%'"},
	{"names", "to_jsonb", "SELECT id FROM {T} p WHERE to_jsonb(p)->>'{C}' = '{M}'"},
	{"names", "row_to_json", "SELECT id FROM {T} p WHERE row_to_json(p)::text = '{M}'"},
	{"names", "row constructor", "SELECT id FROM {T} p WHERE ROW(p.*)::text = '{M}'"},
	{"names", "populate record", "SELECT (jsonb_populate_record(p, '{\"{C}\": \"{M}\"}')).id FROM {T} p"},
	{"names", "update whole row", "UPDATE {T} p SET id = id WHERE p::text = '{M}'"},
	{"names", "select whole row", "SELECT p FROM {T} p /* {M} */"},

	// Item 4: second names for a policy table.
	{"names2", "foreign table option", "CREATE FOREIGN TABLE fc_ft (id int, {C} text) SERVER fc_loopback OPTIONS (table_name '{T}') /* {M} */"},
	{"names2", "foreign table name", "CREATE FOREIGN TABLE fc_remote.{T} (id int, {C} text) SERVER fc_loopback /* {M} */"},
	{"names2", "foreign table unicode option", "CREATE FOREIGN TABLE fc_ft (id int) SERVER fc_loopback OPTIONS (table_name U&'pat\\0069ents') /* {M} */"},
	{"names2", "import foreign schema", "IMPORT FOREIGN SCHEMA public FROM SERVER fc_loopback INTO fc_mirror /* {M} */"},
	{"names2", "subscription", "CREATE SUBSCRIPTION fc_sub CONNECTION 'dbname=phi' PUBLICATION fc_pub /* {M} */"},
	{"names2", "rule", "CREATE RULE fc_rule AS ON INSERT TO fc_plain DO ALSO INSERT INTO {T} ({C}) VALUES ('{M}')"},
	{"names2", "materialized view", "CREATE MATERIALIZED VIEW fc_mv AS SELECT {C} FROM {T} /* {M} */"},
	// A view that passes PHI columns through is allowed (issue 10 item 5);
	// one that computes on them is a second name.
	{"names2", "view computing on PHI", "CREATE VIEW fc_v AS SELECT lower({C}) AS c FROM {T} /* {M} */"},
	{"names2", "view comparing PHI", "CREATE VIEW fc_v AS SELECT id FROM {T} WHERE {C} = '{M}'"},
	{"names2", "inherits", "CREATE TABLE fc_kid () INHERITS ({T}) /* {M} */"},
	{"names2", "attach partition", "ALTER TABLE fc_parent ATTACH PARTITION {T} FOR VALUES IN (1) /* {M} */"},
	{"names2", "rename into policy name", "ALTER TABLE fc_plain RENAME TO {T} /* {M} */"},
	{"names2", "transition table", "CREATE TRIGGER fc_trg AFTER INSERT ON {T} REFERENCING NEW TABLE AS fc_new FOR EACH STATEMENT EXECUTE FUNCTION fc_noop() /* {M} */"},
	{"names2", "dblink", "SELECT dblink_exec('dbname=phi', 'INSERT INTO {T} ({C}) VALUES (''{M}'')')"},
	{"names2", "query_to_xml", "SELECT query_to_xml('SELECT id FROM patients WHERE email = ''{M}''', true, false, '')"},

	// Item 7: function bodies.
	{"body", "do insert", "DO $$ BEGIN INSERT INTO {T} ({C}) VALUES ('{M}'); END $$"},
	{"body", "do escaped execute", `DO E'BEGIN \x45XECUTE ''INSERT INTO pat'' || ''ients (city) VALUES (''''{M}'''')''; END'`},
	{"body", "do concatenated execute", "DO $$ BEGIN EXECUTE 'INSERT INTO pat' || 'ients (city) VALUES (''{M}'')'; END $$"},
	{"body", "do execute variable", "DO $$ DECLARE q text := 'INSERT INTO {T} ({C}) VALUES (''{M}'')'; BEGIN EXECUTE q; END $$"},
	{"body", "do execute constant", "DO $$ BEGIN EXECUTE 'INSERT INTO {T} ({C}) VALUES (''{M}'')'; END $$"},
	{"body", "do execute using", "DO $$ BEGIN EXECUTE 'INSERT INTO {T} ({C}) VALUES ($1)' USING '{M}'::text; END $$"},
	{"body", "do where", "DO $$ BEGIN PERFORM 1 FROM {T} WHERE {C} = '{M}'; END $$"},
	{"body", "do record field", "DO $$ DECLARE r record; BEGIN FOR r IN SELECT * FROM {T} LOOP IF r.{C} = '{M}' THEN NULL; END IF; END LOOP; END $$"},
	{"body", "plpgsql function", "CREATE OR REPLACE FUNCTION fc_f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN UPDATE {T} SET {C} = '{M}'; END $$"},
	{"body", "sql function", "CREATE OR REPLACE FUNCTION fc_f() RETURNS void LANGUAGE sql AS $$ INSERT INTO {T} ({C}) VALUES ('{M}') $$"},
	{"body", "sql function begin atomic", "CREATE OR REPLACE FUNCTION fc_f() RETURNS void LANGUAGE sql BEGIN ATOMIC INSERT INTO {T} ({C}) VALUES ('{M}'); END"},
	{"body", "procedure", "CREATE OR REPLACE PROCEDURE fc_p() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {T} WHERE {C} = '{M}'; END $$"},
	{"body", "trigger writes NEW", "CREATE OR REPLACE FUNCTION fc_t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.{C} := '{M}'; RETURN NEW; END $$"},
	{"body", "trigger returns a new row", `CREATE OR REPLACE FUNCTION fc_t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN jsonb_populate_record(NEW, '{"{C}": "{M}"}'); END $$`},
	{"body", "other language", `DO LANGUAGE plpython3u $$ plpy.execute("INSERT INTO pat" + "ients (city) VALUES ('{M}')") $$`},
	{"body", "set inside body", "DO $$ BEGIN SET standard_conforming_strings = off; PERFORM '{M}'; END $$"},
}

// TestFailClosedRefused sends every form, in the simple and the extended
// protocol, against a table without and one with a ciphertext CHECK.
func TestFailClosedRefused(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := phiDirect(t)
	// The ciphertext CHECK on insurance, as `phiproxy check` prints it.
	if _, err := direct.Exec(ctx, "ALTER TABLE insurance ADD CONSTRAINT fc_ciphertext CHECK (subscriber_ssn IS NULL OR subscriber_ssn LIKE '"+crypto.TextPrefix+"%') NOT VALID"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := phiDirect(t).Exec(context.Background(), "ALTER TABLE insurance DROP CONSTRAINT IF EXISTS fc_ciphertext"); err != nil {
			t.Errorf("drop constraint: %v", err)
		}
	})
	var markers []string
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		conn := phiConn(t, p, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
		for _, c := range fcRefused {
			tables := []fcTable{fcNoCheck}
			if strings.Contains(c.sql, "{T}") {
				tables = append(tables, fcWithCheck)
			}
			for _, tb := range tables {
				t.Run(mode.String()+"/"+c.class+"/"+c.name+"/"+tb.table, func(t *testing.T) {
					m := secret("fc-" + strings.ReplaceAll(c.class, " ", "-"))
					markers = append(markers, m)
					sql := strings.NewReplacer("{T}", tb.table, "{C}", tb.col, "{M}", m).Replace(c.sql)
					_, err := conn.Exec(ctx, sql)
					var pgErr *pgconn.PgError
					if !errors.As(err, &pgErr) || pgErr.Code != "0A000" {
						t.Fatalf("want 0A000, got %v\n%s", err, sql)
					}
					if strings.Contains(pgErr.Message, m) || strings.Contains(pgErr.Detail, m) {
						t.Fatalf("the refusal echoes the value: %q", pgErr.Message)
					}
					var one int
					if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
						t.Fatalf("session after the refusal: %v", err)
					}
				})
			}
		}
	}
	noMarkerInServerLog(t, markers)
	noMarkerStored(t, markers)
}

// noMarkerStored fails if a PHI column of either table holds a marker or
// any value that is not ciphertext. It compares here, not in SQL: a query
// carrying a marker would put it in the server log itself.
func noMarkerStored(t *testing.T, markers []string) {
	t.Helper()
	for _, tb := range []fcTable{fcNoCheck, fcWithCheck} {
		rows, err := phiDirect(t).Query(context.Background(), "SELECT "+tb.col+" FROM "+tb.table+" WHERE "+tb.col+" IS NOT NULL")
		if err != nil {
			t.Fatal(err)
		}
		vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if !crypto.IsCiphertext([]byte(v)) {
				t.Errorf("%s.%s holds a value that is not ciphertext", tb.table, tb.col)
			}
			for _, m := range markers {
				if strings.Contains(v, m) {
					t.Errorf("%s.%s holds marker %s", tb.table, tb.col, m)
				}
			}
		}
	}
}

// noMarkerInServerLog fails if the server log holds any of the markers:
// the statement, or its value, reached PostgreSQL.
func noMarkerInServerLog(t *testing.T, markers []string) {
	t.Helper()
	log, err := cluster.LogContents()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range markers {
		if bytes.Contains(log, []byte(m)) {
			t.Errorf("marker %s reached the server log", m)
		}
	}
}

// TestFailClosedAllowed runs the harmless forms through the proxy against
// the real server: they must still work (CREATE TRIGGER ... EXECUTE
// FUNCTION was refused everywhere before, for the word "execute").
func TestFailClosedAllowed(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	conn := phiConn(t, p)
	cleanup := []string{
		"DROP TRIGGER IF EXISTS fc_touch ON patients",
		"DROP TRIGGER IF EXISTS fc_count ON fc_orders",
		"DROP TABLE IF EXISTS fc_orders, fc_copy",
		"DROP FUNCTION IF EXISTS fc_touch(), fc_count(), fc_n()",
		"DROP PUBLICATION IF EXISTS fc_pub",
	}
	t.Cleanup(func() {
		d := phiDirect(t)
		for _, s := range cleanup {
			if _, err := d.Exec(context.Background(), s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})
	steps := []string{
		// A trigger on a table without PHI, and its function.
		"CREATE TABLE fc_orders (id int, n int DEFAULT 0)",
		"CREATE FUNCTION fc_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.n := NEW.n + 1; RETURN NEW; END $$",
		"CREATE TRIGGER fc_count BEFORE INSERT ON fc_orders FOR EACH ROW EXECUTE FUNCTION fc_count()",
		"INSERT INTO fc_orders (id) VALUES (1)",
		// A trigger on a policy table whose function touches no PHI.
		"CREATE FUNCTION fc_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created_at := now(); RETURN NEW; END $$",
		"CREATE TRIGGER fc_touch BEFORE UPDATE ON patients FOR EACH ROW WHEN (NEW.city IS NOT NULL) EXECUTE FUNCTION fc_touch()",
		// Bodies that need no rewriting.
		"DO $$ DECLARE n int; BEGIN SELECT count(*) INTO n FROM patients WHERE email IS NULL; EXECUTE 'SELECT count(*) FROM patients'; END $$",
		"CREATE FUNCTION fc_n() RETURNS bigint LANGUAGE sql STABLE BEGIN ATOMIC SELECT count(*) FROM patients WHERE city IS NOT NULL; END",
		"SELECT fc_n()",
		// DDL that writes nothing into PHI columns.
		"ALTER TABLE patients ALTER COLUMN city SET DEFAULT NULL, ALTER COLUMN city DROP DEFAULT",
		"ALTER TABLE patients ALTER COLUMN date_of_birth TYPE text USING date_of_birth::text",
		"CREATE TABLE fc_copy (LIKE patients INCLUDING ALL)",
		"CREATE PUBLICATION fc_pub FOR TABLE patients",
		"SELECT query_to_xml('SELECT id FROM patients LIMIT 1', true, false, '')",
	}
	for _, s := range steps {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT n FROM fc_orders WHERE id = 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("trigger on fc_orders: n=%d, %v", n, err)
	}
}

// TestFailClosedAliasList: an alias list on a policy table is resolved by
// position from the catalog, and the comparison moves to the blind index.
func TestFailClosedAliasList(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	pt := newPatient()
	var id int64
	if err := phiConn(t, p).QueryRow(ctx, insertPatient, pt.args()...).Scan(&id); err != nil {
		t.Fatal(err)
	}
	const q = "SELECT i FROM patients AS p(i, fn, ln, dob, s) WHERE s = $1"
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		conn := phiConn(t, p, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
		var got int64
		if err := conn.QueryRow(ctx, q, pt.SSN).Scan(&got); err != nil || got != id {
			t.Fatalf("%v: alias list lookup: got %d, %v; want %d", mode, got, err, id)
		}
	}
}
