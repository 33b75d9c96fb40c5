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

// The twelfth independent attack on issue 9 (branch attack12): round 11's
// fixes (a guard after each Execute, prepared date/time literals bound
// under other settings), the installation's transaction and its NOTIFY,
// and foreign tables. One test per finding, then the variants that held
// and no other test covers.

// a12StoredDate is the date the proxy stored for patient id, as ISO.
func a12StoredDate(t *testing.T, p *testProxy, id int64) string {
	t.Helper()
	var d *time.Time
	err := phiConn(t, p).QueryRow(context.Background(), "SELECT date_of_birth FROM patients WHERE id = $1", id).Scan(&d)
	if err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	if d == nil {
		return ""
	}
	return d.Format("2006-01-02")
}

// Finding 1 (wrong answer). COPY FROM STDIN sent as a simple Query goes
// without the guard (the guard's Sync cannot follow it), so without its
// settings check: sent behind a pipeline whose function set DateStyle
// ('SQL, DMY'), and not yet answered, its data is read by the proxy under
// the settings last reported (ISO, MDY): '01/02/2020' stored as 2 January
// where PostgreSQL, which reads it under DMY, stores 1 February.
func TestAttack12CopyFromAfterFunction(t *testing.T) {
	p := startPHIProxy(t)
	a11Setup(t, p)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	for i, lead := range [][]pgproto3.FrontendMessage{
		// A pipeline with its own Sync, the COPY sent before its answer.
		{&pgproto3.Parse{Query: "SELECT a11_dmy()"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		// A simple Query, the COPY sent before its answer.
		{&pgproto3.Query{String: "SELECT a11_dmy()"}},
	} {
		id := int64(950001 + i)
		msgs := append(lead,
			&pgproto3.Query{String: "COPY patients (id, date_of_birth) FROM STDIN"},
			&pgproto3.CopyData{Data: []byte(strconv.FormatInt(id, 10) + "\t01/02/2020\n")},
			&pgproto3.CopyDone{},
		)
		out := exchangeN(t, hc, 2, msgs...)
		exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})
		all := strings.Join(out, "\n")
		if d := a12StoredDate(t, p, id); d != "" && d != "2020-02-01" {
			t.Errorf("lead %d: the proxy stored %q where PostgreSQL stores 2020-02-01 (read under SQL, DMY)\n%s", i, d, all)
		} else if d == "" && !strings.Contains(all, "depends on DateStyle or TimeZone") {
			t.Errorf("lead %d: nothing stored, and not for the settings:\n%s", i, all)
		}

		// An ISO date reads the same under every DateStyle: taken.
		id += 10
		msgs = append(lead,
			&pgproto3.Query{String: "COPY patients (id, date_of_birth) FROM STDIN"},
			&pgproto3.CopyData{Data: []byte(strconv.FormatInt(id, 10) + "\t2020-03-04\n")},
			&pgproto3.CopyDone{},
		)
		out = exchangeN(t, hc, 2, msgs...)
		exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})
		if d := a12StoredDate(t, p, id); d != "2020-03-04" {
			t.Errorf("lead %d: an ISO date behind the change: stored %q\n%s", i, d, strings.Join(out, "\n"))
		}
	}
}

// Finding 2 (leak). The guard and the checks inside a text accept an
// epoch moved on by the session's own DDL when the second names of the
// policy tables the database has are unchanged; a foreign table whose
// remote table is named as a policy table the database lacks (a second
// name since attack9 finding 6) is a second name of no table it has, so
// that comparison never saw it. A function, called through phiproxy,
// that points a foreign table at the other database's visits (ALTER
// FOREIGN TABLE … OPTIONS (SET table_name 'visits')) or creates one
// there, followed in the same text, transaction or pipeline by an INSERT
// through it, stored the value in plaintext in the other database. The
// acceptance now also requires, in a database that lacks a policy table,
// that no foreign table names one it lacks (55000).
func TestAttack12ForeignTableByOwnFunction(t *testing.T) {
	const a, b = "attack12_fdw_fa", "attack12_fdw_fb"
	env, owner := attack9FDW(t, a, b)
	ctx := context.Background()
	for _, sql := range []string{
		"CREATE FOREIGN TABLE rv (id int, ssn text) SERVER b_srv OPTIONS (table_name 'side_remote')",
		"CREATE FUNCTION a12_point() RETURNS int LANGUAGE plpgsql AS $$BEGIN EXECUTE 'ALTER FOREIGN TABLE rv OPTIONS (SET table_name ''visits'')'; RETURN 1; END$$",
		"CREATE FUNCTION a12_make() RETURNS int LANGUAGE plpgsql AS $$BEGIN EXECUTE 'CREATE FOREIGN TABLE rv2 (id int, ssn text) SERVER b_srv OPTIONS (table_name ''visits'')'; RETURN 1; END$$",
		"CREATE FUNCTION a12_view() RETURNS int LANGUAGE plpgsql AS $$BEGIN EXECUTE 'CREATE VIEW a12_v AS SELECT 1 AS x'; RETURN 1; END$$",
	} {
		if _, err := owner.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn := connect(t, env.p.dsn(pgcluster.ScramUser, a))
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	undo := func() {
		runText(t, conn.PgConn(), "ROLLBACK")
		for _, sql := range []string{"ALTER FOREIGN TABLE rv OPTIONS (SET table_name 'side_remote')", "DROP FOREIGN TABLE IF EXISTS rv2", "DROP VIEW IF EXISTS a12_v"} {
			if _, err := owner.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		runText(t, conn.PgConn(), "SELECT 1") // the catalog read again
	}
	for _, text := range []string{
		"SELECT a12_point(); INSERT INTO rv (id, ssn) VALUES (1, 'a12-own-ddl-point')",
		"SELECT a12_make(); INSERT INTO rv2 (id, ssn) VALUES (2, 'a12-own-ddl-make')",
		"BEGIN; SELECT a12_point(); INSERT INTO rv (id, ssn) VALUES (3, 'a12-own-ddl-point-txn'); COMMIT",
	} {
		got := runText(t, conn.PgConn(), text)
		if last := got[len(got)-1]; !strings.HasPrefix(last.Err, "55000") {
			t.Errorf("%s: %+v, want 55000", text, got)
		}
		undo()
	}
	hc := rawSession(t, env.p.dsn(pgcluster.ScramUser, a))
	exchange(t, hc, &pgproto3.Query{String: "SELECT 1"})
	out := strings.Join(exchange(t, hc,
		&pgproto3.Parse{Query: "SELECT a12_point()"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "INSERT INTO rv (id, ssn) VALUES (4, 'a12-own-ddl-ext')"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{}), "\n")
	if !strings.Contains(out, `"Code":"55000"`) {
		t.Errorf("pipeline: %s", out)
	}
	undo()
	var n int
	if err := env.direct(t).QueryRow(ctx, "SELECT count(*) FROM visits WHERE ssn LIKE 'a12-own-ddl%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows stored in plaintext in the other database's visits", n)
	}
	// The session's own DDL that names no policy table is still accepted
	// in the same text.
	got := runText(t, conn.PgConn(), "SELECT a12_view(); SELECT x FROM a12_v")
	if last := got[len(got)-1]; last.Err != "" || len(last.Rows) != 1 {
		t.Errorf("own DDL naming no policy table: %+v", got)
	}
}

// Found nothing: the installation's NOTIFY and the installation itself.
// A transaction whose second names were changed by a function's DDL
// cannot be prepared either (0A000); a session LISTENing on the
// trigger's channel through phiproxy learns that some connection's DDL
// changed second names (an empty payload and that backend's PID, which
// pg_stat_activity shows anyway) and nothing else, and its own NOTIFY on
// the channel moves no epoch; and `phiproxy schema` run again while
// sessions are open leaves the epoch as it was (the hash of an unchanged
// graph), so they are served without a refusal, and see a view made
// after it.
func TestAttack12EpochInstallationHeld(t *testing.T) {
	env := attackAliasEnv(t, "attack12_install")
	ctx := context.Background()
	direct := env.direct(t)
	if _, err := direct.Exec(ctx, "CREATE FUNCTION a12_mkview() RETURNS int LANGUAGE plpgsql AS $$BEGIN EXECUTE 'CREATE VIEW a12_fv AS SELECT 1 AS a'; RETURN 1; END$$"); err != nil {
		t.Fatal(err)
	}
	conn := env.conn(t)
	for _, c := range []struct{ sql, code string }{
		{"BEGIN", ""}, {"SELECT a12_mkview()", ""}, {"PREPARE TRANSACTION 'attack12_a'", "0A000"},
		{"SELECT count(*) FROM visits", ""},
	} {
		_, err := conn.Exec(ctx, c.sql)
		if c.code == "" && err != nil {
			t.Errorf("%s: %v", c.sql, err)
		} else if c.code != "" {
			refusedWith(t, err, c.code)
		}
	}

	// LISTEN through phiproxy.
	listener := env.conn(t)
	if _, err := listener.Exec(ctx, "LISTEN phiproxy_catalog_epoch"); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Exec(ctx, "CREATE VIEW a12_lv AS SELECT 1 AS a"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	n, err := listener.WaitForNotification(wctx)
	cancel()
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if n.Channel != "phiproxy_catalog_epoch" || n.Payload != "" {
		t.Errorf("notification %+v", n)
	}
	var epoch1, epoch2 string
	if err := direct.QueryRow(ctx, "SELECT phiproxy.catalog_epoch()").Scan(&epoch1); err != nil {
		t.Fatal(err)
	}
	// (Each session's first statement after another connection's DDL
	// that moved the epoch is refused once: send it again.)
	_, _ = listener.Exec(ctx, "SELECT 1")
	if _, err := listener.Exec(ctx, "NOTIFY phiproxy_catalog_epoch; SELECT pg_notify('phiproxy_catalog_epoch', 'x')"); err != nil {
		t.Fatal(err)
	}
	if err := direct.QueryRow(ctx, "SELECT phiproxy.catalog_epoch()").Scan(&epoch2); err != nil {
		t.Fatal(err)
	}
	if epoch1 != epoch2 {
		t.Errorf("a client's NOTIFY moved the epoch from %s to %s", epoch1, epoch2)
	}

	// `phiproxy schema` again, sessions open.
	_, _ = conn.Exec(ctx, "SELECT 1")
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		t.Fatal(err)
	}
	if err := pgcluster.InstallEpoch(ctx, connect(t, cluster.SuperuserDSN(env.db))); err != nil {
		t.Fatal(err)
	}
	var epoch3 string
	if err := direct.QueryRow(ctx, "SELECT phiproxy.catalog_epoch()").Scan(&epoch3); err != nil {
		t.Fatal(err)
	}
	if epoch3 != epoch1 {
		t.Errorf("the epoch moved from %s to %s on installing again", epoch1, epoch3)
	}
	for _, sql := range []string{"SELECT count(*) FROM visits", "INSERT INTO visits (id, ssn) VALUES (1, 'x')"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Errorf("after installing again: %s: %v", sql, err)
		}
	}
	if _, err := direct.Exec(ctx, "CREATE VIEW a12_after AS SELECT id, ssn FROM visits WHERE id > 0"); err != nil {
		t.Fatal(err)
	}
	const value = "a12-after-install-not-stored"
	_, err = conn.Exec(ctx, "INSERT INTO a12_after (id, ssn) VALUES (2, '"+value+"')")
	refusedWith(t, err, "55000")
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored through a view made after the installation")
	}
}

// a12Loopback gives db a postgres_fdw server loop reaching db itself,
// usable by the application's role.
func a12Loopback(t *testing.T, db string) {
	t.Helper()
	su := connect(t, cluster.SuperuserDSN(db))
	for _, sql := range []string{
		"CREATE EXTENSION IF NOT EXISTS postgres_fdw",
		sprintf("CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '%d', dbname '%s', sslmode 'disable')", cluster.Port(), db),
		sprintf("CREATE USER MAPPING FOR %s SERVER loop OPTIONS (user '%s', password '%s')", pgcluster.ScramUser.Name, pgcluster.ScramUser.Name, pgcluster.ScramUser.Password),
		"GRANT USAGE ON FOREIGN SERVER loop TO " + pgcluster.ScramUser.Name,
	} {
		if _, err := su.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// Found nothing: foreign tables over a loopback server to the database
// itself, made by another connection after the session read its
// catalog: one over a decrypting view of visits, one pointed at visits
// by ALTER FOREIGN TABLE … OPTIONS (SET table_name …), one imported
// (IMPORT FOREIGN SCHEMA … LIMIT TO) from the view, and a function
// pointing one at visits in the same text as the INSERT through it:
// each is a second name (55000), and nothing is stored.
func TestAttack12LoopbackForeignTablesHeld(t *testing.T) {
	const db = "attack12_fdw_loop"
	env := attackAliasEnv(t, db, "CREATE TABLE other (id int, ssn text)", "CREATE VIEW pv AS SELECT id, ssn FROM visits")
	a12Loopback(t, db)
	ctx := context.Background()
	direct := env.direct(t)
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		t.Fatal(err)
	}
	write := func(label, sql string) {
		t.Helper()
		for i := 0; i < 2; i++ { // the first after another connection's DDL: "send it again"
			_, err := conn.Exec(ctx, sql)
			if err == nil {
				t.Fatalf("%s: not refused", label)
			}
			refusedWith(t, err, "55000")
		}
	}
	ddl := func(sqls ...string) {
		t.Helper()
		for _, sql := range sqls {
			if _, err := direct.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
	}
	ddl("CREATE FOREIGN TABLE ft_pv (id int, ssn text) SERVER loop OPTIONS (table_name 'pv')")
	write("over a decrypting view", "INSERT INTO ft_pv (id, ssn) VALUES (1, 'a12-loop-view')")
	ddl("DROP FOREIGN TABLE ft_pv", "CREATE FOREIGN TABLE ft_o (id int, ssn text) SERVER loop OPTIONS (table_name 'other')")
	_, _ = conn.Exec(ctx, "SELECT 1")
	if _, err := conn.Exec(ctx, "INSERT INTO ft_o (id, ssn) VALUES (2, 'x')"); err != nil {
		t.Fatal(err)
	}
	ddl("ALTER FOREIGN TABLE ft_o OPTIONS (SET table_name 'visits')")
	write("pointed at visits", "INSERT INTO ft_o (id, ssn) VALUES (3, 'a12-loop-repointed')")
	ddl("DROP FOREIGN TABLE ft_o", "CREATE SCHEMA imp", "IMPORT FOREIGN SCHEMA public LIMIT TO (pv) FROM SERVER loop INTO imp")
	write("imported", "INSERT INTO imp.pv (id, ssn) VALUES (4, 'a12-loop-imported')")
	ddl("DROP SCHEMA imp CASCADE",
		"CREATE FOREIGN TABLE ft_f (id int, ssn text) SERVER loop OPTIONS (table_name 'other')",
		"CREATE FUNCTION a12_point_loop() RETURNS int LANGUAGE plpgsql AS $$BEGIN EXECUTE 'ALTER FOREIGN TABLE ft_f OPTIONS (SET table_name ''visits'')'; RETURN 1; END$$")
	_, _ = conn.Exec(ctx, "SELECT 1")
	got := runText(t, conn.PgConn(), "SELECT a12_point_loop(); INSERT INTO ft_f (id, ssn) VALUES (5, 'a12-loop-function')")
	if last := got[len(got)-1]; !strings.HasPrefix(last.Err, "55000") {
		t.Errorf("a function pointing a foreign table at visits: %+v", got)
	}
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM visits WHERE ssn LIKE 'a12-loop%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows stored in plaintext", n)
	}
}

// Found nothing wrong, one false refusal: a portal suspended by a row
// limit and executed again after a function set DateStyle, in the same
// pipeline or in a later one sent before the answer, is refused (55000)
// where PostgreSQL shows 14/03/1985; a WITH HOLD cursor read after
// COMMIT behind such a function in the same text is refused, and the
// refusal rolls the function's setting back with the text, so the next
// FETCH shows ISO as PostgreSQL then does. False refusal, left alone: a
// portal whose dates come back in binary format, which no setting
// changes, is refused the same (the guard checks the settings before
// any Execute after another; knowing a statement needs no check would
// take its parameters' and literals' formats as well as its results').
// Apps hit it only behind a function that sets DateStyle or TimeZone in
// the same pipeline.
func TestAttack12SuspendedPortalsHeld(t *testing.T) {
	p := startPHIProxy(t)
	id := a11Setup(t, p)
	rows := "SELECT p.date_of_birth FROM patients p, generate_series(1, 3) g(n) WHERE p.id = " + strconv.FormatInt(id, 10)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	exchange(t, hc, &pgproto3.Parse{Name: "r", Query: rows}, &pgproto3.Parse{Name: "f", Query: "SELECT a11_dmy()"}, &pgproto3.Sync{})
	refusedOrDMY := func(label string, out []string) {
		t.Helper()
		all := strings.Join(out, "\n")
		if strings.Contains(all, "1985-03-14") && strings.Contains(all, `"CommandTag":"SELECT 1"`) && !strings.Contains(all, `"Code":"55000"`) {
			t.Errorf("%s: a date shown under ISO after the change:\n%s", label, all)
		}
		if !strings.Contains(all, `"Code":"55000"`) && !strings.Contains(all, "14/03/1985") {
			t.Errorf("%s:\n%s", label, all)
		}
	}
	exchange(t, hc, &pgproto3.Query{String: "BEGIN"})
	out := exchange(t, hc,
		&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "r"},
		&pgproto3.Execute{Portal: "p1", MaxRows: 1},
		&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "f"},
		&pgproto3.Execute{Portal: "p2"},
		&pgproto3.Execute{Portal: "p1", MaxRows: 1},
		&pgproto3.Sync{})
	refusedOrDMY("suspended, same pipeline", out[5:])
	exchange(t, hc, &pgproto3.Query{String: "ROLLBACK"})
	exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})
	exchange(t, hc, &pgproto3.Query{String: "BEGIN"})
	out = exchangeN(t, hc, 3,
		&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "r"},
		&pgproto3.Execute{Portal: "p1", MaxRows: 1},
		&pgproto3.Sync{},
		&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "f"},
		&pgproto3.Execute{Portal: "p2"},
		&pgproto3.Sync{},
		&pgproto3.Execute{Portal: "p1", MaxRows: 1},
		&pgproto3.Sync{})
	refusedOrDMY("suspended, later pipeline", out[4:])
	exchange(t, hc, &pgproto3.Query{String: "ROLLBACK"})
	exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})

	// Binary: refused (the false refusal above).
	out = exchange(t, hc,
		&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "f"},
		&pgproto3.Execute{Portal: "p2"},
		&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "r", ResultFormatCodes: []int16{1}},
		&pgproto3.Execute{Portal: "p1"},
		&pgproto3.Sync{})
	if all := strings.Join(out, "\n"); !strings.Contains(all, `"Code":"55000"`) {
		t.Logf("binary dates after the change are no longer refused:\n%s", all)
	}
	exchange(t, hc, &pgproto3.Query{String: "RESET datestyle"})

	// WITH HOLD.
	read := "SELECT date_of_birth FROM patients WHERE id = " + strconv.FormatInt(id, 10)
	exchange(t, hc, &pgproto3.Query{String: "BEGIN; DECLARE a12_h CURSOR WITH HOLD FOR " + read + "; COMMIT"})
	refusedOrDMY("WITH HOLD after a function", exchange(t, hc, &pgproto3.Query{String: "SELECT a11_dmy(); FETCH ALL FROM a12_h"}))
	out = exchange(t, hc, &pgproto3.Query{String: "MOVE ABSOLUTE 0 IN a12_h; SHOW datestyle; FETCH ALL FROM a12_h"})
	if all := strings.Join(out, "\n"); !strings.Contains(all, `"ISO, MDY"`) || !strings.Contains(all, "1985-03-14") {
		t.Errorf("WITH HOLD, next text:\n%s", all)
	}
	exchange(t, hc, &pgproto3.Query{String: "CLOSE a12_h; RESET datestyle"})
}
