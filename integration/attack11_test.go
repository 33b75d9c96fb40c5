package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// The eleventh independent attack on issue 9 (branch attack11): the fixes
// of rounds 9 and 10 (the settings check, search_path, the installation's
// transaction, row width of INSERTs, foreign tables). One test per
// finding, then the variants that held and no other test covers.

// a11Functions are the server-side functions the settings tests call:
// each changes DateStyle or TimeZone by itself.
var a11Functions = []string{
	"CREATE OR REPLACE FUNCTION a11_dmy() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('datestyle', 'SQL, DMY', false); RETURN 1; END$$",
	"CREATE OR REPLACE FUNCTION a11_dmy_local() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('datestyle', 'SQL, DMY', true); RETURN 1; END$$",
	"CREATE OR REPLACE FUNCTION a11_reset() RETURNS int LANGUAGE plpgsql AS $$BEGIN RESET datestyle; RETURN 1; END$$",
	"CREATE OR REPLACE FUNCTION a11_zone() RETURNS int LANGUAGE plpgsql AS $$BEGIN SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE; RETURN 1; END$$",
}

// a11Setup creates the functions and a patient born 1985-03-14; it
// returns the patient's id.
func a11Setup(t *testing.T, p *testProxy) int64 {
	t.Helper()
	ctx := context.Background()
	direct := phiDirect(t)
	for _, sql := range a11Functions {
		if _, err := direct.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var id int64
	if err := phiConn(t, p).QueryRow(ctx, "INSERT INTO patients (first_name, date_of_birth) VALUES ($1, '1985-03-14') RETURNING id", secret("a11-dob")).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// Finding 1 (wrong answer). The guard goes in front of the first Describe
// or Execute after each Parse or Bind of a pipeline, not in front of each
// Execute: a client that binds its portals first and executes them after
// (Bind p1, Bind p2, Bind p3, Execute p1, Execute p2, Execute p3, Sync;
// or Execute p1 with a row limit, another portal, then p1 again) has one
// guard, in front of Execute p1. A function run by Execute p2 that sets
// DateStyle makes the server's settings differ from the proxy's, and
// the rows of Execute p3 are shown under the old ones: 1985-03-14 where
// PostgreSQL shows 14/03/1985.
func TestAttack11PortalsExecutedAfterChange(t *testing.T) {
	p := startPHIProxy(t)
	id := a11Setup(t, p)
	read := "SELECT date_of_birth FROM patients WHERE id = " + strconv.FormatInt(id, 10)
	want := func(what string, out []string) {
		t.Helper()
		// Direct, the rows read after the change show the date under
		// SQL, DMY. The proxy must show them so, or refuse (55000).
		all := strings.Join(out, "\n")
		if !strings.Contains(all, "14/03/1985") && !strings.Contains(all, `"Code":"55000"`) {
			t.Errorf("%s:\n%s\nwant 14/03/1985 or 55000", what, all)
		}
	}
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	want("a portal bound before a function set DateStyle, executed after", exchange(t, hc,
		&pgproto3.Parse{Name: "a11_read", Query: read},
		&pgproto3.Parse{Name: "a11_change", Query: "SELECT a11_dmy()"},
		&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "a11_read"},
		&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "a11_change"},
		&pgproto3.Bind{DestinationPortal: "p3", PreparedStatement: "a11_read"},
		&pgproto3.Execute{Portal: "p1"},
		&pgproto3.Execute{Portal: "p2"},
		&pgproto3.Execute{Portal: "p3"},
		&pgproto3.Sync{},
	))
	exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})

	// A SQL cursor declared over the table, executed as a portal, or
	// read by a FETCH in the extended protocol, after a function of the
	// same pipeline set DateStyle.
	for _, fetch := range [][]pgproto3.FrontendMessage{
		{&pgproto3.Execute{Portal: "a11_c"}},
		{&pgproto3.Parse{Query: "FETCH ALL FROM a11_c"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}},
	} {
		exchange(t, hc, &pgproto3.Query{String: "BEGIN; DECLARE a11_c CURSOR FOR " + read})
		msgs := []pgproto3.FrontendMessage{&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "a11_change"}, &pgproto3.Execute{Portal: "p2"}}
		msgs = append(append(msgs, fetch...), &pgproto3.Sync{})
		want("a cursor read after a function set DateStyle", exchange(t, hc, msgs...))
		exchange(t, hc, &pgproto3.Query{String: "ROLLBACK"})
		exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})
	}
}

// Finding 2 (wrong answer). A date literal in a prepared statement is read
// once, when the statement is prepared, by the proxy (which stores its
// ciphertext in the statement) and by PostgreSQL; but PostgreSQL analyzes
// a prepared statement's text again when its plan is invalidated (DDL on
// its table, ANALYZE, autovacuum's included, or a new search_path), and
// reads the literal again under the DateStyle then in effect. Prepared
// under ISO, MDY, executed after SET datestyle = 'SQL, DMY' and an
// ANALYZE: PostgreSQL stores 1 February, the proxy 2 January.
func TestAttack11PreparedLiteralAnalyzedAgain(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := phiDirect(t)
	if _, err := direct.Exec(ctx, "CREATE TEMP TABLE a11_plain (id int, d date)"); err != nil {
		t.Fatal(err)
	}
	conn := phiConn(t, p)
	for i, side := range []struct {
		conn    *pgx.Conn
		table   string
		analyze string
	}{
		{direct, "a11_plain", "ANALYZE a11_plain"},
		{conn, "patients", "ANALYZE patients"},
	} {
		id := 930000 + i
		for j, prep := range []struct{ prepare, execute string }{
			{"", ""}, // extended protocol: Parse now, Bind and Execute later
		} {
			rowID := id + 10*j
			insert := "INSERT INTO " + side.table + " (id, date_of_birth) VALUES ($1, '01/02/2020')"
			if side.table == "a11_plain" {
				insert = strings.Replace(insert, "date_of_birth", "d", 1)
				prep.prepare = strings.Replace(prep.prepare, "date_of_birth", "d", 1)
			}
			if prep.prepare == "" {
				if _, err := side.conn.Prepare(ctx, "a11_ins", insert); err != nil {
					t.Fatal(err)
				}
			} else if _, err := side.conn.Exec(ctx, prep.prepare); err != nil {
				t.Fatal(err)
			}
			if _, err := side.conn.Exec(ctx, "SET datestyle = 'SQL, DMY'"); err != nil {
				t.Fatal(err)
			}
			if _, err := direct.Exec(ctx, side.analyze); err != nil {
				t.Fatal(err)
			}
			var err error
			if prep.execute == "" {
				_, err = side.conn.Exec(ctx, "a11_ins", rowID)
				side.conn.Deallocate(ctx, "a11_ins")
			} else {
				_, err = side.conn.Exec(ctx, strings.Replace(prep.execute, "%d", strconv.Itoa(rowID), 1))
				side.conn.Exec(ctx, "DEALLOCATE a11_sql")
			}
			if _, rerr := side.conn.Exec(ctx, "RESET datestyle"); rerr != nil {
				t.Fatal(rerr)
			}
			if side.table == "a11_plain" {
				if err != nil {
					t.Fatal(err)
				}
				var d string
				if err := direct.QueryRow(ctx, "SELECT d::text FROM a11_plain WHERE id = $1", rowID).Scan(&d); err != nil {
					t.Fatal(err)
				}
				if d != "2020-02-01" {
					t.Fatalf("PostgreSQL stored %s, the test expected it to read the literal again (2020-02-01)", d)
				}
				continue
			}
			if err != nil {
				refusedWith(t, err, "0A000", "prepare it again")
				continue
			}
			var got time.Time
			if err := conn.QueryRow(ctx, "SELECT date_of_birth FROM patients WHERE id = $1", rowID).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if d := got.Format("2006-01-02"); d != "2020-02-01" {
				t.Errorf("mode %d: the proxy stored %s where PostgreSQL stores 2020-02-01 (the literal read again after the plan was invalidated)", j, d)
			}
		}
	}
}

// Found nothing wrong: a prepared statement whose date/time literals do
// not depend on the settings (ISO dates, timestamps with an offset), or
// bound under the settings its literals were read under, is not refused.
func TestAttack11PreparedLiteralsThatHold(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	conn := phiConn(t, p)
	for i, c := range []struct {
		sql    string
		change string
	}{
		{"INSERT INTO patients (id, date_of_birth) VALUES ($1, '2020-01-02')", "SET datestyle = 'SQL, DMY'"},
		{"INSERT INTO phi_types (id, v_timestamptz) VALUES ($1, '2020-01-02 10:00:00+02')", "SET timezone = 'Asia/Tokyo'"},
		{"INSERT INTO patients (id, date_of_birth) VALUES ($1, '01/02/2020')", "SET datestyle = 'SQL, MDY'"},
		{"INSERT INTO patients (id, date_of_birth) VALUES ($1, '01/02/2020')", "SET application_name = 'a11'"},
	} {
		if _, err := conn.Prepare(ctx, "a11_ok", c.sql); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, c.change); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "a11_ok", 931000+i); err != nil {
			t.Errorf("%s after %s: %v", c.sql, c.change, err)
		}
		if err := conn.Deallocate(ctx, "a11_ok"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "RESET ALL"); err != nil {
			t.Fatal(err)
		}
	}
}

// Found nothing: INSERTs into a policy table whose values reach PHI
// columns through nested set operations, row expansions, composite
// fields, ROWS FROM or a CTE around a set operation are refused (0A000),
// and no value reaches the server.
func TestAttack11InsertShapesRefused(t *testing.T) {
	setupPHI(t)
	direct := phiDirect(t)
	for _, sql := range []string{
		"DROP TYPE IF EXISTS a11_pair CASCADE",
		"CREATE TYPE a11_pair AS (a bigint, b text)",
	} {
		if _, err := direct.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	a10Refused(t, "a11-insert", []string{
		"INSERT INTO patients (id, first_name) (SELECT 940001, 'x' UNION (SELECT 940002, '{M}' UNION SELECT 940003, 'y'))",
		"INSERT INTO patients (id, first_name) ((SELECT 940004, '{M}') UNION ALL (SELECT 940005, 'x')) ORDER BY 1 LIMIT 5",
		"WITH w AS (SELECT 1) INSERT INTO patients (id, first_name) SELECT 940006, '{M}' UNION SELECT 940007, 'x'",
		"INSERT INTO patients (id, first_name) WITH w AS (SELECT 1) SELECT 940008, '{M}' UNION SELECT 940009, 'x'",
		"INSERT INTO patients (id, first_name) SELECT DISTINCT * FROM (VALUES (940010, '{M}')) v",
		"INSERT INTO patients (id, first_name) VALUES (940011, DEFAULT) UNION VALUES (940012, '{M}')",
		"INSERT INTO patients (id, first_name) SELECT * FROM ROWS FROM (unnest(ARRAY[940013]), unnest(ARRAY['{M}']))",
		"INSERT INTO patients (id, first_name) SELECT x.* FROM (SELECT 940014 AS a, '{M}' AS b) x",
		"INSERT INTO patients (id, first_name) SELECT (c).* FROM (SELECT ROW(940015, '{M}')::a11_pair AS c) s",
		"INSERT INTO patients (id, first_name) SELECT (c).a, (c).b FROM (SELECT ROW(940016, '{M}')::a11_pair AS c) s",
		"INSERT INTO patients (id, first_name) SELECT (ROW(940017, '{M}')::a11_pair).*",
		"INSERT INTO patients (id, first_name) SELECT 940018, '{M}' INTERSECT ALL SELECT 940018, '{M}'",
		"INSERT INTO patients (id, first_name) SELECT 940019, b FROM (SELECT '{M}' AS b UNION SELECT 'x') u",
		"INSERT INTO patients (first_name, id) SELECT '{M}', 940020 UNION ALL SELECT 'x', 940021",
		"INSERT INTO patients (id, first_name) SELECT 940022, '{M}' FROM (SELECT 1 UNION SELECT 2) u",
		"INSERT INTO patients (id, first_name) VALUES (940023, 'x'), (940024, (SELECT '{M}' UNION SELECT 'y' LIMIT 1))",
	})
}

// a11MovedRefusal reports whether err is the refusal of a value read
// behind a statement that may change the settings (0A000).
func a11MovedRefusal(err string) bool {
	return strings.HasPrefix(err, "0A000") && strings.Contains(err, "depends on DateStyle or TimeZone, which a statement sent earlier")
}

// Found nothing: DateStyle or TimeZone changed earlier in a text by
// routes other than a function called in a SELECT list (row and
// statement triggers, a deferred constraint trigger firing at COMMIT, a
// DEFAULT, a view, set_config in a CTE, SET LOCAL, RESET and SET TIME
// ZONE INTERVAL in a function) makes the statements after it refused
// (55000, or 0A000 where the text holds a statement the proxy knows may
// change them: COMMIT, SET CONSTRAINTS, set_config), or shown as
// PostgreSQL shows them; a change undone by ROLLBACK
// TO SAVEPOINT costs nothing; and no client can set the check's name.
func TestAttack11SettingsRoutesHeld(t *testing.T) {
	p := startPHIProxy(t)
	id := a11Setup(t, p)
	ctx := context.Background()
	direct := phiDirect(t)
	for _, sql := range []string{
		"CREATE OR REPLACE FUNCTION a11_trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('datestyle', 'SQL, DMY', false); RETURN NULL; END$$",
		"DROP TABLE IF EXISTS a11_row, a11_stmt, a11_deferred, a11_default",
		"DROP VIEW IF EXISTS a11_view",
		"CREATE TABLE a11_row (id int)",
		"CREATE TRIGGER a11_row AFTER INSERT ON a11_row FOR EACH ROW EXECUTE FUNCTION a11_trg()",
		"CREATE TABLE a11_stmt (id int)",
		"CREATE TRIGGER a11_stmt AFTER INSERT ON a11_stmt FOR EACH STATEMENT EXECUTE FUNCTION a11_trg()",
		"CREATE TABLE a11_deferred (id int)",
		"CREATE CONSTRAINT TRIGGER a11_deferred AFTER INSERT ON a11_deferred DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION a11_trg()",
		"CREATE TABLE a11_default (id int, x int DEFAULT a11_dmy())",
		"CREATE VIEW a11_view AS SELECT a11_dmy() AS x",
	} {
		if _, err := direct.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn := phiConn(t, p).PgConn()
	read := "SELECT date_of_birth FROM patients WHERE id = " + strconv.FormatInt(id, 10)
	for _, c := range []struct{ before, text, shown string }{
		{"", "INSERT INTO a11_row VALUES (1); " + read, "14/03/1985"},
		{"", "INSERT INTO a11_stmt VALUES (1); " + read, "14/03/1985"},
		{"", "BEGIN; INSERT INTO a11_deferred VALUES (1); COMMIT; " + read, "14/03/1985"},
		{"", "BEGIN; INSERT INTO a11_deferred VALUES (1); SET CONSTRAINTS ALL IMMEDIATE; " + read + "; COMMIT", "14/03/1985"},
		{"", "INSERT INTO a11_default (id) VALUES (1); " + read, "14/03/1985"},
		{"", "SELECT * FROM a11_view; " + read, "14/03/1985"},
		{"", "WITH c AS (SELECT set_config('datestyle', 'SQL, DMY', false)) SELECT * FROM c; " + read, "14/03/1985"},
		{"", "SELECT a11_dmy_local(); " + read, "14/03/1985"},
		{"SET datestyle = 'SQL, DMY'", "SELECT a11_reset(); " + read, "1985-03-14"},
		{"", "SELECT a11_zone(); " + read, ""},
		{"", "BEGIN; DECLARE a11_c CURSOR FOR " + read + "; SELECT a11_dmy(); FETCH ALL FROM a11_c; COMMIT", "14/03/1985"},
	} {
		if c.before != "" {
			runText(t, conn, c.before)
		}
		got := runText(t, conn, c.text)
		last := got[len(got)-1]
		shown := false
		for _, a := range got {
			for _, row := range a.Rows {
				shown = shown || c.shown != "" && len(row) == 1 && row[0] == c.shown
			}
		}
		if !strings.HasPrefix(last.Err, "55000") && !a11MovedRefusal(last.Err) && !shown {
			t.Errorf("%s: %+v, want 55000 or %q", c.text, got, c.shown)
		}
		runText(t, conn, "ROLLBACK")
		runText(t, conn, "RESET ALL")
	}

	// Undone by ROLLBACK TO SAVEPOINT before the read: shown as before.
	got := runText(t, conn, "BEGIN; SAVEPOINT s; SELECT a11_dmy(); ROLLBACK TO s; "+read+"; COMMIT")
	// (Refused as a text whose ROLLBACK TO may change the settings: a
	// false refusal, and a reasonable one.)
	if last := got[len(got)-1]; !a11MovedRefusal(last.Err) && (len(got) != 6 || len(got[4].Rows) != 1 || got[4].Rows[0][0] != "1985-03-14") {
		t.Errorf("a change rolled back to a savepoint: %+v", got)
	}
	runText(t, conn, "RESET ALL")

	// The check's name cannot be set, so no client can make it pass.
	for _, sql := range []string{
		"SET phiproxy_settings_changed = 'DateStyle'",
		"SELECT set_config('phiproxy_settings_changed', 'DateStyle', false)",
	} {
		got, want := runText(t, conn, sql), runText(t, direct.PgConn(), sql)
		if g, w := got[len(got)-1].Err, want[len(want)-1].Err; !strings.HasPrefix(g, "42704") || g != w {
			t.Errorf("%s: %+v, directly %+v", sql, got, want)
		}
	}
}
