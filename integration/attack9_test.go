package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// The ninth independent attack on issue 9 (branch attack9): the catalog
// epoch and the in-text checks. One test per finding, then the cases
// tried that held.

// attack9Template0Env is a governed database created from template0
// after the installation (no catalog triggers), with the statements ddl
// run in it by its owner.
func attack9Template0Env(t *testing.T, db string, ddl ...string) *catalogEnv {
	t.Helper()
	env := startCatalogEnv(t, db, sprintf(attackAliasPolicy, db), "")
	ctx := context.Background()
	su := connect(t, cluster.SuperuserDSN("postgres"))
	for _, sql := range []string{
		"DROP DATABASE " + db + " WITH (FORCE)",
		"CREATE DATABASE " + db + " OWNER " + pgcluster.ScramUser.Name + " TEMPLATE template0",
	} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	direct := env.direct(t)
	for _, sql := range ddl {
		if _, err := direct.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return env
}

// Finding 1 (leak). A governed database created after the installation
// from template0 has no catalog triggers. While it has no policy table
// yet, its sessions are served (the guard finds a policy table created),
// but a text of several statements got no check in front of its later
// statements (checkQuery needs the epoch): another connection created
// visits and a view over it while the text's first statement waited, and
// the INSERT through the view stored its value in plaintext. No check can
// stand there without the epoch's catalog_sync (inside the text's
// implicit transaction the server does not take in the other
// connection's catalog changes before the check: to_regclass finds the
// table still missing, as the probe of this finding did), so such texts
// are refused (55000, with the DDL that installs the triggers); texts
// whose later statements are transaction control, SET or SHOW, and
// single statements, are served.
func TestAttack9Template0Text(t *testing.T) {
	env := attack9Template0Env(t, "attack9_t0")
	ctx := context.Background()
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// The value is in a text that names a relation not yet created when
	// sent: the server would log it (README), so it is no secret().
	const value = "t0-text-not-stored"
	err := raceOnLock(t, env, 9001, attackAliasSchema+"; CREATE VIEW t0_v AS SELECT id, ssn FROM visits", func() error {
		_, err := conn.Exec(ctx, "SELECT pg_advisory_xact_lock(9001); INSERT INTO t0_v (id, ssn) VALUES (1, '"+value+"')")
		return err
	})
	refusedWith(t, err, "55000", "one per query", "catalog triggers")
	if _, err := env.direct(t).Exec(ctx, attackAliasSchema+"; CREATE VIEW t0_v AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	if plaintextStored(t, env, value) {
		t.Fatal("plaintext stored through the view")
	}
	// Now the database has a policy table and no triggers: refused, with
	// the DDL that installs them (once the session found the table
	// created).
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		refusedWith(t, err, "55000")
	}
	_, err = conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES (2, $1)", secret("t0-after"))
	refusedWith(t, err, "55000", "catalog triggers")
	_, err = conn.Exec(ctx, "INSERT INTO t0_v (id, ssn) VALUES (2, $1)", secret("t0-after"))
	refusedWith(t, err, "0A000", "view public.t0_v")
}

// The same database, before it has a policy table: single statements,
// and texts whose later statements need no check, answer as directly.
func TestAttack9Template0Answers(t *testing.T) {
	env := attack9Template0Env(t, "attack9_t0_exact")
	assertSameTexts(t, env, []string{
		"SELECT 1 AS a",
		"CREATE TEMP TABLE other (a int)",
		"INSERT INTO other VALUES (1) RETURNING a",
		"BEGIN; SET LOCAL work_mem = '8MB'; SHOW work_mem; COMMIT",
		"SELECT 1/0",
	})
}

// assertSameTexts sends each text through phiproxy and directly and wants
// the same answers.
func assertSameTexts(t *testing.T, env *catalogEnv, texts []string) {
	t.Helper()
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range texts {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if sprintf("%+v", got) != sprintf("%+v", want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
	}
}

// attack9HideView makes, as the database's owner (no superuser), an = on
// oid in public that is false for view's OID, and has every new session
// search public before pg_catalog.
func attack9HideView(t *testing.T, env *catalogEnv, view string) {
	t.Helper()
	ctx := context.Background()
	direct := env.direct(t)
	var oid uint32
	if err := direct.QueryRow(ctx, "SELECT $1::regclass::oid", view).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		sprintf("CREATE FUNCTION public.hide_eq(a oid, b oid) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT a OPERATOR(pg_catalog.=) b AND a OPERATOR(pg_catalog.<>) %d::pg_catalog.oid'", oid),
		"CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.hide_eq)",
		"ALTER DATABASE " + env.db + " SET search_path = public, pg_catalog",
	} {
		if _, err := direct.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// Finding 2 (leak). phiproxy's catalog query runs with the session's
// search_path and writes its operators bare. The owner of a database (no
// superuser) set every new session's search_path to public, pg_catalog
// (ALTER DATABASE … SET) and created in public an = on oid that is false
// for one view's OID: the catalog read missed that view over visits, and
// an INSERT through it passed untouched, its value stored in plaintext.
// The catalog read now also names the schemas the search_path puts
// before pg_catalog (with schema-qualified operators only); a session
// whose catalog was read under such a path refuses every statement that
// needs the guard (55000) until it changes its search_path. The alias
// rows of such a read are not reused by other sessions.
func TestAttack9SearchPathOperator(t *testing.T) {
	env := attackAliasEnv(t, "attack9_path", "CREATE VIEW hid_v AS SELECT id, ssn FROM visits")
	attack9HideView(t, env, "hid_v")
	ctx := context.Background()
	conn := env.conn(t)
	for _, sql := range []string{"INSERT INTO hid_v (id, ssn) VALUES (1, $1)", "SELECT 1", "SELECT count(*) FROM visits"} {
		var args []any
		if sql[0] == 'I' {
			args = append(args, secret("search-path"))
		}
		_, err := conn.Exec(ctx, sql, args...)
		refusedWith(t, err, "55000", "search_path puts public before pg_catalog")
	}
	// Another session with a safe search_path, soon after: it sees the
	// view.
	safe := env.conn(t, func(c *pgx.ConnConfig) { c.RuntimeParams["search_path"] = "pg_catalog, public" })
	_, err := safe.Exec(ctx, "INSERT INTO hid_v (id, ssn) VALUES (2, $1)", secret("search-path-safe"))
	refusedWith(t, err, "0A000", "view public.hid_v")
	// The first session, once it names pg_catalog first, is served.
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog, public"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("after SET search_path: %v", err)
	}
	_, err = conn.Exec(ctx, "INSERT INTO hid_v (id, ssn) VALUES (3, $1)", secret("search-path-set"))
	refusedWith(t, err, "0A000", "view public.hid_v")
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored", n)
	}
}

// Finding 4 (claim 3). A transaction whose DDL changed second names
// (CREATE VIEW), prepared for two-phase commit, held the trigger's lock
// on epoch_own until COMMIT PREPARED: every other connection's DDL that
// changed second names waited for it (here until lock_timeout; directly
// on PostgreSQL without the triggers it runs at once), and the session's
// own next such DDL waited for its own prepared transaction for ever.
// Such a transaction cannot be prepared now (the trigger runs NOTIFY:
// 0A000, and the transaction is rolled back); one whose DDL changed no
// second name prepares and commits as before. A view prepared before
// the triggers were changed, committed later from another connection,
// was seen (55000) by the probe of this finding.
func TestAttack9TwoPhaseCommit(t *testing.T) {
	env := attackAliasEnv(t, "attack9_2pc")
	ctx := context.Background()
	other := env.direct(t)
	for _, sql := range []string{"BEGIN", "CREATE VIEW tp_v AS SELECT id, ssn FROM visits"} {
		if _, err := other.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	_, err := other.Exec(ctx, "PREPARE TRANSACTION 'attack9_a'")
	if err == nil {
		t.Cleanup(func() {
			_, _ = connect(t, directDSN(pgcluster.ScramUser, env.db)).Exec(ctx, "ROLLBACK PREPARED 'attack9_a'")
		})
	}
	refusedWith(t, err, "0A000", "NOTIFY")
	// Nothing waits: another connection's DDL that changes second names.
	if _, err := env.direct(t).Exec(ctx, "SET lock_timeout = '5s'; CREATE VIEW other_v AS SELECT 1 AS a"); err != nil {
		t.Fatalf("DDL after the refused PREPARE: %v", err)
	}
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM tp_v"); err == nil {
		t.Error("the view of the refused prepared transaction exists")
	}
	// Through phiproxy too, and DDL that changes no second name prepares.
	for _, c := range []struct{ sql, code string }{
		{"BEGIN", ""}, {"CREATE VIEW tp_w AS SELECT 1 AS a", ""}, {"PREPARE TRANSACTION 'attack9_b'", "0A000"},
		{"BEGIN", ""}, {"CREATE INDEX ON visits (id)", ""}, {"PREPARE TRANSACTION 'attack9_c'", ""}, {"COMMIT PREPARED 'attack9_c'", ""},
		{"SELECT count(*) FROM visits", ""},
	} {
		_, err := conn.Exec(ctx, c.sql)
		if c.code == "" && err != nil {
			t.Errorf("%s: %v", c.sql, err)
		} else if c.code != "" {
			refusedWith(t, err, c.code)
		}
	}
}

// Finding 3 (privilege). The installation DDL (`phiproxy schema`'s step 1,
// run by a superuser) named its types bare (text, timestamptz,
// event_trigger): run in a database whose owner (no superuser) had set
// search_path = public, pg_catalog and made a domain public.text whose
// CHECK calls a function of theirs, phiproxy.epoch_own's columns took
// that domain, and the trigger (SECURITY DEFINER, owned by the
// superuser) ran the owner's function as the superuser at the first DDL
// that moved the epoch — the installation's own COMMENT at its end
// (which then failed, its function's return type being the domain too,
// leaving the database with triggers that fail every such DDL; what the
// function did outside the transaction, here a sequence's nextval, a
// COPY TO PROGRAM elsewhere, stays). The DDL now runs in one transaction
// under SET LOCAL search_path = pg_catalog, pg_temp.
func TestAttack9InstallUnderOwnersSearchPath(t *testing.T) {
	env := attackAliasEnv(t, "attack9_install")
	ctx := context.Background()
	owner := env.direct(t)
	for _, sql := range []string{
		"CREATE SEQUENCE public.escalated",
		"GRANT ALL ON SEQUENCE public.escalated TO PUBLIC",
		`CREATE FUNCTION public.note_super(v pg_catalog.text) RETURNS bool LANGUAGE plpgsql AS $$BEGIN
		   IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user) THEN
		     PERFORM pg_catalog.nextval('public.escalated');
		   END IF;
		   RETURN true; END$$`,
		"CREATE DOMAIN public.text AS pg_catalog.text CHECK (public.note_super(VALUE))",
		"ALTER DATABASE " + env.db + " SET search_path = public, pg_catalog",
	} {
		if _, err := owner.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// A first installation (the database had none).
	su := connect(t, cluster.SuperuserDSN(env.db))
	for _, sql := range []string{"DROP EVENT TRIGGER phiproxy_catalog_ddl", "DROP EVENT TRIGGER phiproxy_catalog_drop", "DROP SCHEMA phiproxy CASCADE"} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	ierr := pgcluster.InstallEpoch(ctx, su)
	var called bool
	if err := owner.QueryRow(ctx, "SELECT is_called FROM public.escalated").Scan(&called); err != nil {
		t.Fatal(err)
	}
	if called {
		t.Errorf("the database owner's function ran as a superuser (installation: %v)", ierr)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	if _, err := owner.Exec(ctx, "CREATE VIEW after_install AS SELECT 1 AS a"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := owner.QueryRow(ctx, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'phiproxy.epoch_own'::regclass AND attnum > 0"+
		" AND atttypid NOT IN ('pg_catalog.text'::regtype, 'pg_catalog.int8'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.timestamptz'::regtype)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		t.Errorf("%d columns of epoch_own have types of the owner's", n)
	}
	// The database is governed: sessions are served (with pg_catalog first).
	conn := env.conn(t, func(c *pgx.ConnConfig) { c.RuntimeParams["search_path"] = "pg_catalog, public" })
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		t.Error(err)
	}
}

// Held: an installation of another version (a catalog_check whose body
// differs, as an older phiproxy's would in a rolling upgrade) counts as
// no installation: statements are refused with the DDL (55000); running
// the DDL again serves them.
func TestAttack9OtherVersionInstalled(t *testing.T) {
	env := attackAliasEnv(t, "attack9_version")
	ctx := context.Background()
	su := connect(t, cluster.SuperuserDSN(env.db))
	if _, err := su.Exec(ctx, `CREATE OR REPLACE FUNCTION phiproxy.catalog_check(epoch text, tables text[], oids oid[], names text) RETURNS boolean
		LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$BEGIN RETURN true; END$$`); err != nil {
		t.Fatal(err)
	}
	conn := env.conn(t)
	_, err := conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES (1, $1)", secret("other-version"))
	refusedWith(t, err, "55000", "catalog triggers")
	_, err = conn.Exec(ctx, "SELECT 1; SELECT 2")
	refusedWith(t, err, "55000", "catalog triggers")
	if err := pgcluster.InstallEpoch(ctx, su); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES (1, $1)", secret("other-version-fixed")); err != nil {
		t.Fatal(err)
	}
}

// Held: the installation run twice at once (two superusers): each runs in
// one transaction, the second waits for the first or fails; the database
// ends installed, and a view created afterwards by another connection is
// caught.
func TestAttack9ConcurrentInstall(t *testing.T) {
	env := attackAliasEnv(t, "attack9_install2")
	ctx := context.Background()
	a, b := connect(t, cluster.SuperuserDSN(env.db)), connect(t, cluster.SuperuserDSN(env.db))
	errs := make(chan error, 2)
	for _, c := range []*pgx.Conn{a, b} {
		go func(c *pgx.Conn) { errs <- pgcluster.InstallEpoch(ctx, c) }(c)
	}
	var ok int
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Logf("one installation: %v", err)
			_, _ = a.Exec(ctx, "ROLLBACK")
			_, _ = b.Exec(ctx, "ROLLBACK")
		} else {
			ok++
		}
	}
	if ok == 0 {
		t.Fatal("neither installation ran")
	}
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.direct(t).Exec(ctx, "CREATE VIEW ci_v AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "INSERT INTO ci_v (id, ssn) VALUES (1, $1)", secret("concurrent-install"))
	refusedWith(t, err, "55000")
}

// Held: a check that cannot take its lock fails closed. A superuser holds
// phiproxy.catalog_lock (which catalog_sync locks) while another
// connection makes a view over visits; a session in a transaction block
// under a short lock_timeout is refused by the server (55P03), in front
// of its statement and in front of a later statement of a text, and
// nothing is stored.
func TestAttack9CheckLockTimeout(t *testing.T) {
	env := attackAliasEnv(t, "attack9_locktimeout")
	ctx := context.Background()
	su := connect(t, cluster.SuperuserDSN(env.db))
	conn := env.conn(t)
	for _, sql := range []string{"BEGIN", "SELECT count(*) FROM visits"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	for _, sql := range []string{"BEGIN", "LOCK phiproxy.catalog_lock IN ACCESS EXCLUSIVE MODE"} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.direct(t).Exec(ctx, "CREATE VIEW lt_v AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SET LOCAL lock_timeout = '50ms'"); err != nil {
		t.Fatal(err)
	}
	const value = "lock-timeout-not-stored"
	_, err := conn.Exec(ctx, "INSERT INTO lt_v (id, ssn) VALUES (1, '"+value+"')")
	refusedWith(t, err, "55P03")
	for _, sql := range []string{"ROLLBACK", "BEGIN", "SET LOCAL lock_timeout = '50ms'"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	_, err = conn.Exec(ctx, "SELECT 1; INSERT INTO lt_v (id, ssn) VALUES (2, '"+value+"')")
	if err == nil {
		t.Error("the text ran")
	}
	if _, err := su.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored through the view")
	}
}

// Held: second names made by another connection while the session's
// transaction block is open, or while a statement of its text waits: a
// rule on a table of no policy that writes into visits, and a table made
// an inheritance child of visits (ALTER TABLE … INHERIT, which does not
// wait for the session's lock on visits). Refused (55000), nothing
// stored.
func TestAttack9RuleAndInheritMidTransaction(t *testing.T) {
	env := attackAliasEnv(t, "attack9_midtx",
		"CREATE TABLE side (id int, ssn text)",
		"CREATE TABLE kid (id int PRIMARY KEY, ssn text, ssn_bidx text)")
	ctx := context.Background()
	conn, other := env.conn(t), env.direct(t)
	for _, sql := range []string{"BEGIN", "SELECT count(*) FROM visits"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Exec(ctx, "CREATE RULE side_r AS ON INSERT TO side DO INSTEAD INSERT INTO visits (id, ssn) VALUES (NEW.id, NEW.ssn)"); err != nil {
		t.Fatal(err)
	}
	const value = "rule-not-stored"
	_, err := conn.Exec(ctx, "INSERT INTO side (id, ssn) VALUES (1, '"+value+"')")
	refusedWith(t, err, "55000")
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	const kidValue = "inherit-not-stored"
	err = raceOnLock(t, env, 9002, "ALTER TABLE kid INHERIT visits", func() error {
		_, err := conn.Exec(ctx, "BEGIN; SELECT count(*) FROM visits; SELECT pg_advisory_xact_lock(9002); INSERT INTO kid (id, ssn) VALUES (2, '"+kidValue+"'); COMMIT")
		return err
	})
	refusedWith(t, err, "55000")
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := env.direct(t).QueryRow(ctx, "SELECT count(*) FROM visits WHERE ssn IN ($1, $2)", value, kidValue).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		t.Errorf("%d plaintext values stored", n)
	}
}

// Held: a subscription made by a superuser, after the session read its
// catalog, into visits from a table of another database of the cluster
// (logical replication; the test cluster runs with wal_level = logical)
// moves the epoch: the session's next statement on visits is refused
// (55000), and every one after it names the subscription (55000).
func TestAttack9Subscription(t *testing.T) {
	const pub = "attack9_pub"
	env := attackAliasEnv(t, "attack9_sub")
	ctx := context.Background()
	root := connect(t, cluster.SuperuserDSN("postgres"))
	for _, sql := range []string{"DROP DATABASE IF EXISTS " + pub + " WITH (FORCE)", "CREATE DATABASE " + pub} {
		if _, err := root.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pubConn := connect(t, cluster.SuperuserDSN(pub))
	for _, sql := range []string{
		attackAliasSchema,
		"CREATE PUBLICATION attack9_p FOR TABLE visits",
		"SELECT pg_create_logical_replication_slot('attack9_slot', 'pgoutput')",
	} {
		if _, err := pubConn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	su := connect(t, cluster.SuperuserDSN(env.db))
	t.Cleanup(func() {
		for _, sql := range []string{"ALTER SUBSCRIPTION attack9_s DISABLE", "ALTER SUBSCRIPTION attack9_s SET (slot_name = NONE)", "DROP SUBSCRIPTION attack9_s"} {
			if _, err := su.Exec(ctx, sql); err != nil {
				t.Logf("%s: %v", sql, err)
			}
		}
		for i := 0; i < 600; i++ {
			var active bool
			if err := pubConn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 'attack9_slot'").Scan(&active); err != nil || !active {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := pubConn.Exec(ctx, "SELECT pg_drop_replication_slot('attack9_slot')"); err != nil {
			t.Logf("drop slot: %v", err)
		}
	})
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		t.Fatal(err)
	}
	create := sprintf("CREATE SUBSCRIPTION attack9_s CONNECTION 'host=%s port=%d user=postgres dbname=%s' PUBLICATION attack9_p WITH (create_slot = false, slot_name = 'attack9_slot', copy_data = false)",
		cluster.SocketDir(), cluster.Port(), pub)
	if _, err := su.Exec(ctx, create); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES (1, $1)", secret("subscription"))
	refusedWith(t, err, "55000")
	_, err = conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES (1, $1)", secret("subscription"))
	refusedWith(t, err, "55000", "subscription")
}

// Held: the same database from template0, a pipeline (extended protocol):
// the guard after the INSERT's Parse and Bind finds visits created while
// the first statement waited (the Parse took a lock, so the server took
// in the other connection's changes), and the INSERT never runs.
func TestAttack9Template0Pipeline(t *testing.T) {
	env := attack9Template0Env(t, "attack9_t0_pipe")
	ctx := context.Background()
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	const value = "t0-pipeline-not-stored"
	err := raceOnLock(t, env, 9003, attackAliasSchema+"; CREATE VIEW t0_pv AS SELECT id, ssn FROM visits", func() error {
		return pipelineErr(t, conn.PgConn(), []string{"SELECT pg_advisory_xact_lock(9003)", "INSERT INTO t0_pv (id, ssn) VALUES (1, $1)"},
			[][][]byte{nil, {[]byte(value)}})
	})
	if plaintextStored(t, env, value) {
		t.Fatal("plaintext stored through the view")
	}
	refusedWith(t, err, "55000")
}

// Finding 5 (leak, not fixed: a limit of what phiproxy can see). A row
// trigger (no transition tables) that another connection puts on a table
// of no policy, whose function (a body phiproxy never sees) writes the
// row into visits, moves a value the application writes to that table
// into the policy table in plaintext: no catalog edge links the two
// (pg_depend records no dependency of a PL/pgSQL body), so neither the
// catalog's second names nor the epoch see it, as for any function
// created on the server that writes its arguments into a policy table.
// The application sent the value in plaintext to a table the policy does
// not govern; PostgreSQL stores it in a PHI column. README lists
// transition-table triggers only. The ciphertext CHECK constraint of
// `phiproxy schema`'s step 2 (not on this test's table) makes the server
// refuse the write.
func TestAttack9RowTriggerIntoPolicyTable(t *testing.T) {
	t.Skip("finding 5: a row trigger on a table of no policy whose function writes into a policy table moves plaintext into it (function bodies are opaque to phiproxy)")
	env := attackAliasEnv(t, "attack9_rowtrigger", "CREATE TABLE side (id int, ssn text)")
	ctx := context.Background()
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`CREATE FUNCTION side_to_visits() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN
		   INSERT INTO visits (id, ssn) VALUES (NEW.id, NEW.ssn); RETURN NULL; END$$`,
		"CREATE TRIGGER side_t BEFORE INSERT ON side FOR EACH ROW EXECUTE FUNCTION side_to_visits()",
	} {
		if _, err := env.direct(t).Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	const value = "row-trigger-not-stored"
	_, err := conn.Exec(ctx, "INSERT INTO side (id, ssn) VALUES (1, '"+value+"')")
	t.Logf("insert: %v", err)
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored in visits through the trigger")
	}
}

// attack9FDW governs databases a and b, b with visits, a without; in a,
// b's owner's role reaches b through postgres_fdw's server b_srv. It
// returns the environment (b's) and a connection to a as its owner.
func attack9FDW(t *testing.T, a, b string, bDDL ...string) (*catalogEnv, *pgx.Conn) {
	t.Helper()
	env := startCatalogEnv(t, b, sprintf(`
databases: [%s, %s]
tables:
  - name: public.visits
    columns:
      ssn: { type: text, blind_index: {} }
`, a, b), attackAliasSchema)
	ctx := context.Background()
	for _, sql := range bDDL {
		if _, err := env.direct(t).Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	root := connect(t, cluster.SuperuserDSN("postgres"))
	for _, sql := range []string{"DROP DATABASE IF EXISTS " + a + " WITH (FORCE)", "CREATE DATABASE " + a + " OWNER " + pgcluster.ScramUser.Name} {
		if _, err := root.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	su := connect(t, cluster.SuperuserDSN(a))
	for _, sql := range []string{
		"CREATE EXTENSION postgres_fdw",
		sprintf("CREATE SERVER b_srv FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '%d', dbname '%s', sslmode 'disable')", cluster.Port(), b),
		sprintf("CREATE USER MAPPING FOR %s SERVER b_srv OPTIONS (user '%s', password '%s')", pgcluster.ScramUser.Name, pgcluster.ScramUser.Name, pgcluster.ScramUser.Password),
		"GRANT USAGE ON FOREIGN SERVER b_srv TO " + pgcluster.ScramUser.Name,
	} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return env, connect(t, directDSN(pgcluster.ScramUser, a))
}

// Finding 6 (leak). A foreign table (postgres_fdw) in one governed
// database whose remote table is visits of another governed database of
// the cluster: the first database has no visits, so the catalog's search
// for second names (which starts from the policy tables the database
// has) never looked at it, and an INSERT through it passed untouched and
// stored its value in plaintext in the other database's visits. A
// foreign table whose remote table is named as a policy table that the
// database lacks is now a second name of that table: statements naming
// it are refused (55000), as soon as another connection creates it (the
// epoch moves).
func TestAttack9ForeignTableOtherDatabase(t *testing.T) {
	const a, b = "attack9_fdw_a", "attack9_fdw_b"
	env, owner := attack9FDW(t, a, b)
	ctx := context.Background()
	if _, err := owner.Exec(ctx, "CREATE FOREIGN TABLE remote_v (id int, ssn text) SERVER b_srv OPTIONS (schema_name 'public', table_name 'visits')"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, env.p.dsn(pgcluster.ScramUser, a))
	_, err := conn.Exec(ctx, "INSERT INTO remote_v (id, ssn) VALUES (1, $1)", secret("fdw-other-db"))
	refusedWith(t, err, "55000", "remote_v")
	// One created after the session read its catalog, named by the
	// foreign table's own name (postgres_fdw's default).
	if _, err := owner.Exec(ctx, "CREATE FOREIGN TABLE visits_remote (id int, ssn text) SERVER b_srv OPTIONS (table_name 'visits')"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_, err = conn.Exec(ctx, "INSERT INTO visits_remote (id, ssn) VALUES (2, $1)", secret("fdw-other-db-later"))
		refusedWith(t, err, "55000")
	}
	refusedWith(t, err, "55000", "visits_remote")
	// Statements on other tables of the database are served.
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Error(err)
	}
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored in the other database's visits", n)
	}
}

// Finding 7 (leak, not fixed). The same, through a foreign table whose
// remote table is a view over visits in the other database: the view is
// a second name there (the other database's sessions refuse visits), but
// nothing in the first database's catalog says what the remote relation
// is, and the INSERT through the foreign table stores its value in
// plaintext in the other database. Closing it means taking every
// foreign table of a governed database that may reach a governed
// database (of this cluster, or of another behind another phiproxy) as
// a second name: left to decide.
func TestAttack9ForeignTableRemoteView(t *testing.T) {
	t.Skip("finding 7: a foreign table whose remote relation is a view over a policy table of another database writes plaintext into it")
	const a, b = "attack9_fdw_va", "attack9_fdw_vb"
	env, owner := attack9FDW(t, a, b, "CREATE VIEW vv AS SELECT id, ssn FROM visits")
	ctx := context.Background()
	if _, err := owner.Exec(ctx, "CREATE FOREIGN TABLE remote_vv (id int, ssn text) SERVER b_srv OPTIONS (table_name 'vv')"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, env.p.dsn(pgcluster.ScramUser, a))
	const value = "fdw-remote-view-not-stored"
	_, err := conn.Exec(ctx, "INSERT INTO remote_vv (id, ssn) VALUES (1, '"+value+"')")
	t.Logf("insert: %v", err)
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored in the other database's visits through its view")
	}
}
