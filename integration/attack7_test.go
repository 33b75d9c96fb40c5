package integration

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The seventh independent attack on issue 9 (branch attack7): the catalog
// epoch and the in-text checks. One test per finding.

// Finding 1 (leak). The event trigger hashed the graph of second names
// with the transaction's snapshot: in a REPEATABLE READ transaction that
// snapshot is older than the catalog, and any DDL there (a COMMENT) wrote
// as the database's epoch the hash of a graph that no longer was — here
// one where view rr_v reads visits, while another connection had since
// pointed it at a decoy table. A session that read its catalog then (rr_v
// no second name) holds that epoch; when rr_v is pointed back at visits
// the hash comes out the same, the epoch does not move, and the guard
// lets an INSERT through the view store its value in plaintext.
func TestAttack7RepeatableReadStaleHash(t *testing.T) {
	env := attackAliasEnv(t, "attack7_rrhash",
		"CREATE TABLE decoy (id int PRIMARY KEY, ssn text)",
		"CREATE VIEW rr_v AS SELECT id, ssn FROM visits")
	ctx := context.Background()
	other, rr := env.direct(t), env.direct(t)
	if _, err := rr.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ"); err != nil {
		t.Fatal(err)
	}
	if _, err := rr.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW rr_v AS SELECT id, ssn FROM decoy"); err != nil {
		t.Fatal(err)
	}
	// DDL in the old snapshot is the session's own: it runs, and writes
	// an epoch no graph hashes to.
	for _, sql := range []string{"COMMENT ON TABLE decoy IS 'decoy'", "COMMIT"} {
		if _, err := rr.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		t.Fatal(err)
	}
	insertThroughRepointed(t, env, conn, other, "rr_v", "rr-stale-hash-not-stored")
}

// Finding 2 (claim 3). Two connections whose DDL both change second names
// at once: the trigger of the second replaced phiproxy.catalog_epoch()
// while the first's replacement was not yet committed, waited for it, and
// then failed with "tuple concurrently updated" (XX000) — the session's
// own DDL refused, where PostgreSQL runs it. The writers of the epoch now
// go one at a time, each reading the epoch and the graph once it is its
// turn.
func TestAttack7ConcurrentEpochWriters(t *testing.T) {
	env := attackAliasEnv(t, "attack7_writers")
	ctx := context.Background()
	first, conn := env.direct(t), env.conn(t)
	if _, err := first.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Exec(ctx, "CREATE VIEW first_v AS SELECT 1 AS a"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "CREATE VIEW second_v AS SELECT 2 AS b")
		done <- err
	}()
	for waiting := 0; waiting == 0; {
		select {
		case err := <-done:
			t.Fatalf("second DDL finished before the first committed: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if err := first.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE NOT granted AND database IS DISTINCT FROM 0").Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 0 {
			if err := first.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE NOT granted").Scan(&waiting); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := first.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("own DDL refused: %v", err)
	}
	// Both views are in the epoch: a statement on the policy table runs
	// (once refused, for the other connection's change, when the session
	// reads its catalog again), and the proxy knows of both.
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		refusedWith(t, err, "55000")
	}
	for _, sql := range []string{"SELECT count(*) FROM visits", "SELECT * FROM first_v", "SELECT * FROM second_v"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Errorf("%s: %v", sql, err)
		}
	}
}

// Finding 3 (exactness). A text that ends with DEALLOCATE ALL after a
// statement on the policy table: the guard went out in front of the text
// (prepared again, since the text drops statements), the text then
// deallocated it, and the proxy, which had noted the drop before sending
// the guard, took it for prepared: every next guarded text was refused
// once (55000, "the session's catalog check was deallocated").
func TestAttack7DeallocateAfterGuard(t *testing.T) {
	env := attackAliasEnv(t, "attack7_dealloc")
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range []string{
		"SELECT 1; DEALLOCATE ALL; SELECT count(*) FROM visits",
		"CREATE TEMP TABLE eo (n int); SELECT 1; SELECT count(*) FROM visits; DROP TABLE eo",
		"SELECT count(*) FROM visits; DEALLOCATE ALL",
		"SELECT count(*) FROM visits",
	} {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
	}
}

// Finding 4 (leak). catalog_check accepted an epoch reached from the one
// the session read by any chain of the session's own past changes, however
// old: a session that pointed view rv from visits to a decoy and back
// holds the steps (Y→X) and (X→Y); another connection then points rv at
// the decoy (X), the session reads its catalog (rv no second name), the
// other connection points rv back at visits (Y) and the check walked X→Y
// through the session's old step: an INSERT through rv stored its value
// in plaintext. Only a chain of the session's own steps that is the
// latest of all epoch writes is accepted now.
func TestAttack7OldOwnStepsReplayed(t *testing.T) {
	env := attackAliasEnv(t, "attack7_replay",
		"CREATE TABLE decoy (id int PRIMARY KEY, ssn text)",
		"CREATE VIEW rv AS SELECT id, ssn FROM visits")
	ctx := context.Background()
	conn, other := env.conn(t), env.direct(t)
	for _, sql := range []string{
		"CREATE OR REPLACE VIEW rv AS SELECT id, ssn FROM decoy",
		"CREATE OR REPLACE VIEW rv AS SELECT id, ssn FROM visits",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW rv AS SELECT id, ssn FROM decoy"); err != nil {
		t.Fatal(err)
	}
	// The session reads its catalog (once refused for the other
	// connection's change), in a transaction block that keeps it.
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		refusedWith(t, err, "55000")
	}
	for _, sql := range []string{"BEGIN", "SELECT count(*) FROM visits"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	insertThroughRepointed(t, env, conn, other, "rv", "replayed-own-steps-not-stored")
}

// Finding 5 (exactness). The trigger numbered the rows of epoch_own with
// an identity column, whose sequence nextval() then was the session's
// last: lastval() after the session's own DDL that changed second names
// failed with 42501 (permission denied for sequence epoch_own_n_seq)
// where PostgreSQL on the plaintext schema returns the client's own last
// value. The rows are numbered without a sequence now.
func TestAttack7LastvalAfterOwnDDL(t *testing.T) {
	env := attackAliasEnv(t, "attack7_lastval")
	got := runText(t, env.conn(t).PgConn(), "CREATE TEMP TABLE sq (id serial, a int); INSERT INTO sq (a) VALUES (1), (2); "+
		"CREATE TEMP VIEW lv AS SELECT 1 AS a; SELECT lastval()")
	want := []queryAnswer{
		{Tag: "CREATE TABLE"}, {Tag: "INSERT 0 2"}, {Tag: "CREATE VIEW"},
		{Fields: []string{"lastval:20"}, Rows: [][]string{{"2"}}, Tag: "SELECT 1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// Texts that found nothing: cursors, CALL with OUT parameters, DO with a
// notice, EXPLAIN ANALYZE, an error after rows, NOTIFY, COMMIT and
// ROLLBACK in the middle, savepoints rolled back after own DDL, REPEATABLE
// READ and SERIALIZABLE blocks with own DDL, temporary tables named
// epoch_own or pg_stat_activity, DEALLOCATE ALL, VACUUM: each answers
// through phiproxy as directly.
func TestAttack7TextsAnswerAsDirect(t *testing.T) {
	env := attackAliasEnv(t, "attack7_exact")
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range []string{
		"BEGIN; DECLARE c CURSOR FOR SELECT generate_series(1,3) AS g; FETCH 2 FROM c; FETCH ALL FROM c; MOVE ABSOLUTE 0 IN c; FETCH 1 FROM c; COMMIT",
		"DECLARE h CURSOR WITH HOLD FOR SELECT 1 AS a; FETCH ALL FROM h; CLOSE h",
		"CREATE PROCEDURE pg_temp.p(INOUT a int, OUT b int) LANGUAGE plpgsql AS $$BEGIN b := a + 1; END$$; CALL pg_temp.p(1, NULL); SELECT 2",
		"DO $$BEGIN RAISE NOTICE 'hi'; END$$; SELECT 1",
		"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT 1; SELECT 2",
		"SELECT 1; SELECT 10/(3-x) FROM generate_series(1,5) x; SELECT 3",
		"LISTEN ch; NOTIFY ch, 'x'; SELECT 1; UNLISTEN ch",
		"SELECT 1; COMMIT; SELECT 2",
		"SELECT 1; ROLLBACK; SELECT 2",
		"BEGIN; SELECT 1; COMMIT; SELECT 2; BEGIN; SELECT 3; ROLLBACK",
		"BEGIN; CREATE TEMP VIEW sv AS SELECT 1 AS a; SAVEPOINT s; CREATE TEMP VIEW sv2 AS SELECT 2 AS b; ROLLBACK TO SAVEPOINT s; SELECT * FROM sv; COMMIT; DROP VIEW sv",
		"BEGIN; SAVEPOINT s; CREATE TEMP VIEW sv3 AS SELECT 2 AS b; ROLLBACK TO s; CREATE TEMP VIEW sv4 AS SELECT 3 AS c; SELECT * FROM sv4; COMMIT; DROP VIEW sv4",
		"BEGIN ISOLATION LEVEL REPEATABLE READ; CREATE TEMP VIEW rv AS SELECT 1 AS a; SELECT * FROM rv; SELECT count(*) FROM visits; COMMIT; DROP VIEW rv",
		"BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1; CREATE TEMP VIEW sz AS SELECT 1 AS a; RELEASE SAVEPOINT nosuch; COMMIT",
		"SET statement_timeout = '5s'; SELECT 1; RESET statement_timeout; SELECT 2",
		"SELECT 1 \\; SELECT 2",
		"SELECT 1; DISCARD ALL; SELECT 2",
		"SELECT 1; DEALLOCATE ALL; SELECT count(*) FROM visits",
		"SET search_path = pg_temp, public; SELECT count(*) FROM visits; RESET search_path",
		"CREATE TEMP TABLE epoch_own (n int); SELECT 1; SELECT count(*) FROM visits; DROP TABLE epoch_own",
		"CREATE TEMP TABLE pg_stat_activity (pid int, backend_start timestamptz); CREATE TEMP VIEW shv AS SELECT 1 AS a; SELECT * FROM shv; DROP VIEW shv; DROP TABLE pg_stat_activity",
		"SELECT 1; VALUES (1) \\gset",
		"SELECT $1",
		"SELECT 1; SELECT pg_sleep(0); SELECT 'done'",
		"CHECKPOINT; SELECT 1",
		"SELECT 1; ANALYZE visits; SELECT 2",
		"SELECT 1; VACUUM visits",
		"SELECT 1; CREATE DATABASE nope_in_txn",
	} {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
		runText(t, direct, "ROLLBACK")
		runText(t, proxied, "ROLLBACK")
	}
}

// insertThroughRepointed has other point view back at visits, then inserts
// value through it on conn (in the transaction block conn holds open) and
// wants the INSERT refused with 55000 and nothing stored.
func insertThroughRepointed(t *testing.T, env *catalogEnv, conn, other *pgx.Conn, view, value string) {
	t.Helper()
	ctx := context.Background()
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW "+view+" AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "INSERT INTO "+view+" (id, ssn) VALUES (1, '"+value+"')")
	if err == nil {
		if _, cerr := conn.Exec(ctx, "COMMIT"); cerr != nil {
			t.Fatal(cerr)
		}
	}
	if plaintextStored(t, env, value) {
		t.Fatal("plaintext stored through the view")
	}
	refusedWith(t, err, "55000")
}
