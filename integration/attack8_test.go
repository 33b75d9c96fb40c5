package integration

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// The eighth independent attack on issue 9 (branch attack8): the catalog
// epoch and the in-text checks. One test per finding.

// mkViewFunction is a function created directly on the server (the
// operator's, never seen by phiproxy) that runs DDL the session cannot
// see in its text: it makes name a view over visits.
func mkViewFunction(name string) string {
	return "CREATE FUNCTION mk_" + name + "() RETURNS int LANGUAGE plpgsql AS $f$BEGIN EXECUTE 'CREATE VIEW " + name +
		" AS SELECT id, ssn FROM vis' || 'its'; RETURN 1; END$f$"
}

// pipelineErr sends sqls (each with params, the extended protocol) in
// one pipeline and returns the first error.
func pipelineErr(t *testing.T, conn *pgconn.PgConn, sqls []string, params [][][]byte) error {
	t.Helper()
	ctx := context.Background()
	pl := conn.StartPipeline(ctx)
	for i, sql := range sqls {
		pl.SendQueryParams(sql, params[i], nil, nil, nil)
	}
	if err := pl.Sync(); err != nil {
		t.Fatal(err)
	}
	var first error
	for {
		r, err := pl.GetResults()
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		if rr, ok := r.(*pgconn.ResultReader); ok {
			if _, err := rr.Close(); err != nil && first == nil {
				first = err
			}
		}
		if _, ok := r.(*pgconn.PipelineSync); ok || r == nil {
			break
		}
	}
	if err := pl.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

// Finding 1 (leak). The epoch check accepts every change of second names
// made by the session's own DDL (catalog_check walks the session's own
// steps in epoch_own), on the ground that the rewriter saw that DDL in the
// session's text and refused any that made a second name of a policy
// table. DDL the session runs inside a function created directly on the
// server (the operator's: the rewriter never saw its body; dynamic SQL
// built from pieces) is the session's own too: a view over visits made by
// `SELECT mk_v()` passes every later check, and an INSERT through it,
// passed through as a statement on a relation the policy does not govern,
// stores its value in plaintext — in the same text, in the same pipeline,
// in the next Query and inside a transaction block alike. catalog_check
// now also compares, once own DDL moved the epoch on, the hash of the
// policy tables' second names with the one read with the catalog
// (policy.SecondNamesSQL): the statement is refused (55000) and the next
// one planned with the view known.
func TestAttack8OwnDDLInFunction(t *testing.T) {
	env := attackAliasEnv(t, "attack8_fn", mkViewFunction("tv"), mkViewFunction("pv"), mkViewFunction("sv"), mkViewFunction("bv"))
	ctx := context.Background()
	leaked := func(value string, err error) {
		t.Helper()
		if plaintextStored(t, env, value) {
			t.Errorf("%s: plaintext stored through the view (err %v)", value, err)
		}
		refusedWith(t, err, "55000")
	}

	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil { // the session reads its catalog
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "SELECT mk_tv(); INSERT INTO tv (id, ssn) VALUES (1, 'fn-text-not-stored')")
	leaked("fn-text-not-stored", err)

	c2 := env.conn(t)
	if _, err := c2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	err = pipelineErr(t, c2.PgConn(), []string{"SELECT mk_pv()", "INSERT INTO pv (id, ssn) VALUES (2, $1)"},
		[][][]byte{nil, {[]byte("fn-pipeline-not-stored")}})
	leaked("fn-pipeline-not-stored", err)

	c3 := env.conn(t)
	if _, err := c3.Exec(ctx, "SELECT mk_sv()"); err != nil {
		t.Fatal(err)
	}
	_, err = c3.Exec(ctx, "INSERT INTO sv (id, ssn) VALUES (3, 'fn-next-query-not-stored')")
	leaked("fn-next-query-not-stored", err)

	c4 := env.conn(t)
	for _, sql := range []string{"BEGIN", "SELECT count(*) FROM visits", "SELECT mk_bv()", "INSERT INTO bv (id, ssn) VALUES (4, 'fn-block-not-stored')"} {
		if _, err = c4.Exec(ctx, sql); err != nil {
			break
		}
	}
	if err == nil {
		_, err = c4.Exec(ctx, "COMMIT")
	}
	leaked("fn-block-not-stored", err)
}

// Found nothing: a statement prepared (extended protocol) while its view read a decoy,
// bound and executed after another connection pointed the view at visits
// (PostgreSQL plans it again, on visits); and a WITH HOLD cursor opened
// before, fetched after.
func TestAttack8PreparedAcrossViewChange(t *testing.T) {
	env := attackAliasEnv(t, "attack8_prep",
		"CREATE TABLE decoy (id int PRIMARY KEY, ssn text)",
		"CREATE VIEW pv AS SELECT id, ssn FROM decoy")
	ctx := context.Background()
	conn, other := env.conn(t), env.direct(t)
	pc := conn.PgConn()
	if _, err := pc.Prepare(ctx, "ins", "INSERT INTO pv (id, ssn) VALUES ($1, $2)", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DECLARE hc CURSOR WITH HOLD FOR SELECT id, ssn FROM pv"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW pv AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	const value = "prepared-across-change-not-stored"
	for i := 0; i < 2; i++ {
		err := pc.ExecPrepared(ctx, "ins", [][]byte{[]byte("7"), []byte(value)}, nil, nil).Read().Err
		t.Logf("execute %d: %v", i, err)
	}
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored through the view")
	}
	_, err := conn.Exec(ctx, "FETCH ALL FROM hc")
	t.Logf("fetch: %v", err)
}

// Found nothing: the session's own DDL that the rewriter sees (temporary
// views, inheritance among temporary tables, a view over visits created
// and used in later texts, in autocommit, in a block and in a REPEATABLE
// READ block) answers as directly with the second names compared, and a
// view created by a connection with session_replication_role = replica
// is seen (the triggers are enabled always).
func TestAttack8OwnDDLAnswers(t *testing.T) {
	env := attackAliasEnv(t, "attack8_own")
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range []string{
		"CREATE INDEX ON visits (id); SELECT count(*) FROM visits",
		"CREATE TEMP VIEW u AS SELECT 1 AS a; SELECT * FROM u; SELECT count(*) FROM visits; DROP VIEW u",
		"BEGIN; CREATE TEMP VIEW u2 AS SELECT 1 AS a; SELECT * FROM u2; SELECT count(*) FROM visits; COMMIT",
		"SELECT * FROM u2; DROP VIEW u2; SELECT count(*) FROM visits",
		"CREATE TEMP TABLE tt (a int); CREATE TEMP TABLE tc () INHERITS (tt); SELECT count(*) FROM visits; SELECT * FROM tc; DROP TABLE tt CASCADE",
	} {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
	}
	ctx := context.Background()
	conn := env.conn(t)
	for _, sqls := range [][]string{
		{"CREATE VIEW vy AS SELECT count(*) AS n FROM visits", "SELECT * FROM vy", "DROP VIEW vy", "SELECT count(*) FROM visits"},
		{"BEGIN", "CREATE VIEW vz AS SELECT count(*) AS n FROM visits", "SELECT * FROM vz", "SELECT count(*) FROM visits", "DROP VIEW vz", "SELECT count(*) FROM visits", "COMMIT"},
		{"BEGIN ISOLATION LEVEL REPEATABLE READ", "SELECT 1", "CREATE VIEW vr AS SELECT count(*) AS n FROM visits", "SELECT * FROM vr", "SELECT count(*) FROM visits", "COMMIT"},
	} {
		for _, sql := range sqls {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
	}
	other := connect(t, cluster.SuperuserDSN(env.db))
	for _, sql := range []string{"SET session_replication_role = replica", "CREATE VIEW rep_v AS SELECT * FROM visits"} {
		if _, err := other.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	const value = "replica-not-stored"
	_, err := conn.Exec(ctx, "INSERT INTO rep_v (id, ssn) VALUES (9, '"+value+"')")
	refusedWith(t, err, "55000")
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored through the view")
	}
}

// Finding 1 in other shapes: COPY after the hidden DDL, in the same text
// and in a transaction block, and a DO block that calls the function (DO
// blocks that run the DDL themselves are refused by the rewriter).
func TestAttack8OwnDDLInFunctionCopyDo(t *testing.T) {
	env := attackAliasEnv(t, "attack8_fn_copy", mkViewFunction("cv"), mkViewFunction("cv2"), mkViewFunction("dv"))
	ctx := context.Background()
	conn := env.conn(t)
	_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("1\tcopy-text-not-stored\n"), "SELECT mk_cv(); COPY cv (id, ssn) FROM STDIN")
	refusedWith(t, err, "55000")
	c2 := env.conn(t)
	for _, sql := range []string{"BEGIN", "SELECT count(*) FROM visits", "SELECT mk_cv2()"} {
		if _, err := c2.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c2.PgConn().CopyFrom(ctx, strings.NewReader("2\tcopy-block-not-stored\n"), "COPY cv2 (id, ssn) FROM STDIN")
	refusedWith(t, err, "0A000", "COPY of view")
	c3 := env.conn(t)
	for _, c := range []struct{ text, code string }{
		{"DO $$BEGIN EXECUTE 'CREATE VIEW dov AS SELECT * FROM visits'; END$$; INSERT INTO dov (id, ssn) VALUES (3, 'do-not-stored')", "0A000"},
		{"DO $$BEGIN EXECUTE 'CREATE VIEW dov2 AS SELECT * FROM vis' || 'its'; END$$; INSERT INTO dov2 (id, ssn) VALUES (3, 'do-not-stored')", "0A000"},
		{"DO $$BEGIN PERFORM mk_dv(); END$$; INSERT INTO dv (id, ssn) VALUES (3, 'do-not-stored')", "55000"},
	} {
		_, err := c3.Exec(ctx, c.text)
		refusedWith(t, err, c.code)
	}
	for _, v := range []string{"copy-text-not-stored", "copy-block-not-stored", "do-not-stored"} {
		if plaintextStored(t, env, v) {
			t.Errorf("%s: plaintext stored through the view", v)
		}
	}
}

// Finding 2 (exactness). CREATE OR REPLACE VIEW that maps a decrypting
// view's columns to other columns of the same table (note AS ssn, ssn AS
// note) keeps every edge of the graph of second names (the view's rule
// reads the same columns): the epoch did not move, and a text that read
// the view after another connection swapped it, past the in-text check
// (which, unlike the guard, does not compare the views' definitions),
// was answered with the ssn column decrypted from plaintext (XX001) and
// the note column the ciphertext of the ssn — where PostgreSQL on the
// plaintext schema returns the swapped values. The epoch (and the second
// names the check compares after own DDL) now hash each rule's action.
func TestAttack8ViewColumnsSwapped(t *testing.T) {
	env := attackAliasEnv(t, "attack8_swap", "ALTER TABLE visits ADD COLUMN note text", "CREATE VIEW vy AS SELECT id, ssn, note FROM visits")
	ctx := context.Background()
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "INSERT INTO visits (id, ssn, note) VALUES (1, 'swap-ssn', 'swap-note')"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT id, ssn, note FROM vy"); err != nil {
		t.Fatal(err)
	}
	for i, query := range []string{"SELECT id, note FROM vy", "SELECT id, ssn, note FROM vy"} {
		var got []queryAnswer
		swap := "CREATE OR REPLACE VIEW vy AS SELECT id, note AS ssn, ssn AS note FROM visits"
		if i == 1 {
			swap = "CREATE OR REPLACE VIEW vy AS SELECT id, ssn, note FROM visits"
		}
		err := raceOnLock(t, env, 8001+i, swap, func() error {
			got = runText(t, conn.PgConn(), "SELECT pg_advisory_xact_lock("+sprintf("%d", 8001+i)+"); "+query)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if last := got[len(got)-1]; !strings.HasPrefix(last.Err, "55000") {
			t.Errorf("%s after the view was replaced: %+v, want 55000", query, got)
		}
		// The next text reads the view as it now is.
		if _, err := conn.Exec(ctx, query); err != nil {
			refusedWith(t, err, "55000")
		}
	}
}

// Finding 3 (leak). A statement prepared with SQL PREPARE on a view over
// another table (no second name then), then the view pointed at visits by
// another connection: EXECUTE p names no relation, so once the guard had
// refused it once (55000) and the session read its catalog again, it
// passed, PostgreSQL planned p again on visits and stored its value in
// plaintext. Now a catalog read that finds the policy tables' second
// names changed, in a session that may have SQL-prepared statements,
// refuses every statement that may run one (0A000) until DEALLOCATE ALL.
func TestAttack8SQLPrepareAcrossViewChange(t *testing.T) {
	env := attackAliasEnv(t, "attack8_sqlprep",
		"CREATE TABLE decoy (id int PRIMARY KEY, ssn text)",
		"CREATE VIEW pv AS SELECT id, ssn FROM decoy")
	ctx := context.Background()
	conn, other := env.conn(t), env.direct(t)
	const value = "sqlprep-not-stored"
	if _, err := conn.Exec(ctx, "PREPARE p AS INSERT INTO pv (id, ssn) VALUES (7, '"+value+"')"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW pv AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "EXECUTE p")
	refusedWith(t, err, "55000")
	for _, sql := range []string{"EXECUTE p", "SELECT 1; EXECUTE p", "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE p"} {
		_, err = conn.Exec(ctx, sql)
		refusedWith(t, err, "0A000", "SQL PREPARE")
	}
	// A Bind of the SQL-prepared statement, without values.
	err = conn.PgConn().ExecPrepared(ctx, "p", nil, nil, nil).Read().Err
	refusedWith(t, err, "0A000", "SQL PREPARE")
	if plaintextStored(t, env, value) {
		t.Fatal("plaintext stored through the view")
	}
	// Once all are dropped, statements run again.
	for _, sql := range []string{"DEALLOCATE ALL", "SELECT count(*) FROM visits"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	_, err = conn.Exec(ctx, "EXECUTE p")
	refusedWith(t, err, "26000")
}

// Finding 3, extended protocol: a Bind (without values) of the
// SQL-prepared statement, the first thing the session sends after the
// view changed, went unguarded and stored the value in plaintext. It is
// guarded now (55000), and refused (0A000) once the catalog was read.
func TestAttack8BindSQLPreparedAcrossViewChange(t *testing.T) {
	env := attackAliasEnv(t, "attack8_bindp",
		"CREATE TABLE decoy (id int PRIMARY KEY, ssn text)",
		"CREATE VIEW pv AS SELECT id, ssn FROM decoy")
	ctx := context.Background()
	conn, other := env.conn(t), env.direct(t)
	const value = "bind-sqlprep-not-stored"
	if _, err := conn.Exec(ctx, "PREPARE p AS INSERT INTO pv (id, ssn) VALUES (7, '"+value+"')"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW pv AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	err := conn.PgConn().ExecPrepared(ctx, "p", nil, nil, nil).Read().Err
	refusedWith(t, err, "55000")
	err = conn.PgConn().ExecPrepared(ctx, "p", nil, nil, nil).Read().Err
	refusedWith(t, err, "0A000", "SQL PREPARE")
	if plaintextStored(t, env, value) {
		t.Fatal("plaintext stored through the view")
	}
}
