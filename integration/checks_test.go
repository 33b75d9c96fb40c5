package integration

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Texts of several statements sent in one simple Query get the proxy's
// catalog check in front of each statement after the first
// (proxy/phi/inline.go). Its answers must not show: each text returns
// through phiproxy exactly what it returns sent directly — the same
// results, columns, rows, command tags, and errors at the same positions.

// queryAnswer is what one statement of a simple Query answered.
type queryAnswer struct {
	Fields []string
	Rows   [][]string
	Tag    string
	Err    string
}

// runText sends text in one simple Query and returns every statement's
// answer.
func runText(t *testing.T, conn *pgconn.PgConn, text string) []queryAnswer {
	t.Helper()
	results, err := conn.Exec(context.Background(), text).ReadAll()
	var out []queryAnswer
	for _, r := range results {
		a := queryAnswer{Tag: r.CommandTag.String()}
		for _, f := range r.FieldDescriptions {
			a.Fields = append(a.Fields, fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID))
		}
		for _, row := range r.Rows {
			var vals []string
			for _, v := range row {
				vals = append(vals, string(v))
			}
			a.Rows = append(a.Rows, vals)
		}
		out = append(out, a)
	}
	if err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: %v", text, err)
		}
		out = append(out, queryAnswer{Err: fmt.Sprintf("%s at %d: %s", pe.Code, pe.Position, pe.Message)})
	}
	return out
}

func TestCheckedTextsAnswerAsDirect(t *testing.T) {
	env := attackAliasEnv(t, "checks_exact")
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range []string{
		"SELECT 1 AS a; SELECT 'x' AS b, 2 AS c; VALUES (1), (2)",
		"SELECT 1;; ; SELECT 2; -- trailing",
		"/* lead */ SELECT 1; /* between */ SELECT 2 /* end */",
		"CREATE TEMP TABLE tt (a int); INSERT INTO tt VALUES (1), (2); SELECT * FROM tt ORDER BY a; DROP TABLE tt",
		"SELECT 'a;b' AS s, $$;$$ AS d, \"x;y\".z FROM (SELECT 1 AS z) \"x;y\"; SELECT E'\\';' AS e",
		// A semicolon inside a body or a rule's actions separates nothing.
		"CREATE FUNCTION pg_temp.f1() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT pg_temp.f1(); DROP FUNCTION pg_temp.f1()",
		"CREATE TEMP TABLE r1 (a int); CREATE TEMP TABLE r2 (a int); " +
			"CREATE RULE r AS ON INSERT TO r1 DO ALSO (INSERT INTO r2 VALUES (NEW.a); INSERT INTO r2 VALUES (NEW.a + 1)); " +
			"INSERT INTO r1 VALUES (5); SELECT * FROM r2 ORDER BY a; DROP TABLE r1, r2",
		// DDL of the text's own moves the epoch on: the checks after it
		// accept that.
		"CREATE TEMP VIEW own_v AS SELECT 1 AS a; SELECT * FROM own_v; DROP VIEW own_v; SELECT 3",
		"BEGIN; SELECT 1; CREATE TEMP VIEW own_v2 AS SELECT 2 AS b; SELECT * FROM own_v2; ROLLBACK",
		"BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; SELECT 2; COMMIT",
		// DDL on the policy table, then other statements.
		"ALTER TABLE visits ADD COLUMN extra int; SELECT 1; ALTER TABLE visits DROP COLUMN extra; SELECT 2",
		"CREATE INDEX visits_id_idx ON visits (id); DROP INDEX visits_id_idx; SELECT 3",
		// Errors at their positions in the client's text.
		"SELECT 1; SELECT nosuchcolumn",
		"SELECT 1; SELECT 2; SELECT 1/0",
		"SELECT 1; SELEC 2",
		"SELECT 1; CREATE TEMP TABLE e1 (a int); SELECT * FROM e1 WHERE b = 1",
		"SELECT 1; SELECT 'unterminated",
		// Backslashes in standard literals, read alike whatever
		// standard_conforming_strings is.
		"CREATE TEMP TABLE rx (p text CHECK (p ~ '^\\d+$')); INSERT INTO rx VALUES ('12'); SELECT * FROM rx; DROP TABLE rx",
		"SELECT 'a\\'; SELECT 2",
	} {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
	}
}

// A text whose statements start elsewhere when standard_conforming_strings
// is off, which the session may have without phiproxy knowing yet: no
// check could be placed for certain, and it is refused.
func TestCheckedTextBackslashRefused(t *testing.T) {
	env := attackAliasEnv(t, "checks_backslash")
	got := runText(t, env.conn(t).PgConn(), "SELECT 'a\\', $$x$$; SELECT 1 -- '")
	if len(got) != 1 || !strings.HasPrefix(got[0].Err, "0A000") {
		t.Errorf("got %+v", got)
	}
}

// Statements on the policy table, among others: each answered in turn,
// values decrypted, none of the checks' answers shown.
func TestCheckedTextsOnPolicyTable(t *testing.T) {
	env := attackAliasEnv(t, "checks_phi")
	conn := env.conn(t).PgConn()
	value := secret("checked-text")
	got := runText(t, conn, "INSERT INTO visits (id, ssn) VALUES (10, '"+value+"'); SELECT 7 AS seven; "+
		"SELECT id, ssn FROM visits WHERE ssn = '"+value+"'; UPDATE visits SET ssn = ssn WHERE id = 10; DELETE FROM visits WHERE id = 10")
	want := []queryAnswer{
		{Tag: "INSERT 0 1"},
		{Fields: []string{"seven:23"}, Rows: [][]string{{"7"}}, Tag: "SELECT 1"},
		{Fields: []string{"id:23", "ssn:25"}, Rows: [][]string{{"10", value}}, Tag: "SELECT 1"},
		{Tag: "UPDATE 1"},
		{Tag: "DELETE 1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// Another connection's DDL while the text waits, followed by DDL of the
// text's own: the epoch the check sees was not reached by the session's
// own changes alone, and the statement after them is refused.
func TestCheckedTextOthersThenOwnDDL(t *testing.T) {
	env := attackAliasEnv(t, "checks_chain")
	ctx := context.Background()
	conn := env.conn(t)
	err := raceOnLock(t, env, 5007, "CREATE VIEW chain_v AS SELECT * FROM visits", func() error {
		_, err := conn.Exec(ctx, "SELECT pg_advisory_xact_lock(5007); CREATE TEMP VIEW mine AS SELECT 1 AS a; "+
			"INSERT INTO chain_v (id, ssn) VALUES (1, 'chain-not-stored')")
		return err
	})
	refusedWith(t, err, "55000")
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through the view", n)
	}
	// Inside a transaction block too (the check takes in the other
	// session's change first).
	err = raceOnLock(t, env, 5008, "CREATE VIEW chain_v2 AS SELECT * FROM visits", func() error {
		_, err := conn.Exec(ctx, "BEGIN; SELECT pg_advisory_xact_lock(5008); INSERT INTO chain_v2 (id, ssn) VALUES (2, 'chain-not-stored'); COMMIT")
		return err
	})
	refusedWith(t, err, "55000")
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through the view", n)
	}
	// A text that starts with DDL on the policy table (no guard in front:
	// DDL does not rely on the catalog).
	err = raceOnLock(t, env, 5009, "CREATE VIEW chain_v3 AS SELECT * FROM visits", func() error {
		_, err := conn.Exec(ctx, "CREATE INDEX visits_race_idx ON visits (id); SELECT pg_advisory_xact_lock(5009); INSERT INTO chain_v3 (id, ssn) VALUES (3, 'chain-not-stored')")
		return err
	})
	refusedWith(t, err, "55000")
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through the view", n)
	}
}

// A pipeline whose DDL of its own moves the epoch on before a statement
// on the policy table: the guard sent after that statement's Parse and
// Bind accepts the session's own change (it failed the batch, every time
// it was sent again, before).
func TestGuardAcceptsOwnDDL(t *testing.T) {
	env := attackAliasEnv(t, "checks_own_pipeline")
	ctx := context.Background()
	conn := env.conn(t)
	value := secret("own-ddl-pipeline")
	b := &pgx.Batch{}
	b.Queue("CREATE TEMP VIEW own_pv AS SELECT 1 AS a")
	b.Queue("INSERT INTO visits (id, ssn) VALUES ($1, $2)", 20, value)
	b.Queue("SELECT ssn FROM visits WHERE id = $1", 20)
	br := conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := br.QueryRow().Scan(&got); err != nil {
		t.Fatal(err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if got != value {
		t.Errorf("got %q", got)
	}
}

// A text on the policy table that relies on no catalog (DDL) but whose
// first statement, passed through, names a view created since the session
// read its catalog: guarded in front like a text passed through whole.
func TestCheckedTextDDLFirstStatementGuarded(t *testing.T) {
	env := attackAliasEnv(t, "checks_ddl_first")
	ctx := context.Background()
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	env.ddl(t, "CREATE VIEW first_v AS SELECT * FROM visits")
	_, err := conn.Exec(ctx, "INSERT INTO first_v (id, ssn) VALUES (1, 'first-not-stored'); CREATE INDEX visits_first_idx ON visits (id)")
	refusedWith(t, err, "55000")
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through the view", n)
	}
}
