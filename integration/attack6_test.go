package integration

import (
	"context"
	"io"
	"reflect"
	"strings"
	"testing"
)

// The sixth independent attack on issue 9 (branch attack6): the catalog
// checks inside a simple Query (proxy/phi/inline.go). One test per
// finding.

// plaintextStored reports whether visits holds value as it is (not
// encrypted), over a direct connection.
func plaintextStored(t *testing.T, env *catalogEnv, value string) bool {
	t.Helper()
	var n int
	if err := env.direct(t).QueryRow(context.Background(), "SELECT count(*) FROM visits WHERE ssn = $1", value).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// Finding 1 (leak). The lexer's BEGIN ATOMIC rule reads the words begin
// and atomic, wherever they stand: a column named begin with the bare
// label atomic opens a body that no END closes, the lexer finds no
// separator, and withChecks sent the text unchecked without asking the
// parser (CheckSeparators ran only when the lexer found one). The
// statement after a wait then named a view created meanwhile by another
// connection, and its value was stored in plaintext.
func TestAttack6BeginAtomicLabel(t *testing.T) {
	env := attackAliasEnv(t, "attack6_atomic")
	ctx := context.Background()
	conn := env.conn(t)
	const value = "atomic-label-not-stored"
	err := raceOnLock(t, env, 6001, "CREATE VIEW atomic_v AS SELECT * FROM visits", func() error {
		_, err := conn.Exec(ctx, "SELECT pg_advisory_xact_lock(6001), begin atomic FROM (SELECT 1 AS begin) s; "+
			"INSERT INTO atomic_v (id, ssn) VALUES (1, '"+value+"')")
		return err
	})
	if err == nil {
		t.Error("the text ran")
	}
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored through the view")
	}
}

// A text that the lexer splits where the parser does not is refused, and
// one whose words begin and atomic are a column and its label answers as
// directly when no one changed the catalog.
func TestAttack6BeginAtomicLabelAnswers(t *testing.T) {
	env := attackAliasEnv(t, "attack6_atomic_exact")
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range []string{
		"SELECT begin atomic FROM (SELECT 1 AS begin) s; SELECT 2",
	} {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if !reflect.DeepEqual(got, want) && !refusedText(got) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
	}
}

// refusedText reports whether answers end in phiproxy's refusal of a
// text whose statements it cannot tell apart (0A000) and hold nothing
// else.
func refusedText(answers []queryAnswer) bool {
	return len(answers) == 1 && len(answers[0].Err) > 5 && answers[0].Err[:5] == "0A000"
}

// Finding 3 (exactness). A check is a query: in front of SET TRANSACTION
// (or BEGIN ISOLATION LEVEL after a SET) it takes the transaction's
// snapshot first, and PostgreSQL then refuses the isolation level
// (25001) that it accepts sent directly.
func TestAttack6SetTransactionAfterBegin(t *testing.T) {
	env := attackAliasEnv(t, "attack6_settx")
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range []string{
		"BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SHOW transaction_isolation; COMMIT",
		"BEGIN; SET TRANSACTION READ ONLY, DEFERRABLE; SET LOCAL transaction_isolation = 'repeatable read'; SHOW transaction_isolation; COMMIT",
		"START TRANSACTION; SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT 1; COMMIT",
		"SET application_name = 'x'; BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1; COMMIT",
		"BEGIN; SAVEPOINT a; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SELECT 2; COMMIT",
		"BEGIN; LOCK TABLE visits IN SHARE MODE; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SHOW transaction_isolation; COMMIT",
	} {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
		runText(t, direct, "ROLLBACK")
		runText(t, proxied, "ROLLBACK")
	}
}

// Finding 4 (claim 3). RESET ALL in the text forgot the session's own
// epoch changes (then a setting like any other): the check after it
// refused the text's own view. They are rows of a table now.
func TestAttack6ResetAllAfterOwnDDL(t *testing.T) {
	env := attackAliasEnv(t, "attack6_reset")
	proxied, direct := env.conn(t).PgConn(), env.direct(t).PgConn()
	for _, text := range []string{
		"CREATE TEMP VIEW reset_v AS SELECT 1 AS a; RESET ALL; SELECT * FROM reset_v; DROP VIEW reset_v",
	} {
		want, got := runText(t, direct, text), runText(t, proxied, text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
	}
}

// Finding 2 (leak). Under a client_encoding whose characters may end in
// the byte of a backslash, the lexer (reading UTF-8) sees an escape where
// the server, which converts the text to UTF-8 first, sees a character:
// the UTF-8 bytes of さ then a backslash (E3 81 95 5C) are, in SJIS, a
// kanji (E3 81) and 表 (95 5C). E'さ\' hid from the lexer the
// semicolons the server splits at, withChecks found none and sent the
// text unchecked, and the statement after a wait wrote through a view
// created meanwhile by another connection.
func TestAttack6ShiftJISEscape(t *testing.T) {
	env := attackAliasEnv(t, "attack6_sjis")
	ctx := context.Background()
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SET client_encoding = 'SJIS'"); err != nil {
		t.Fatal(err)
	}
	const value = "sjis-not-stored"
	// The lexer: E'さ\'; SELECT …; INSERT … -- ' is one string. The
	// server: E'<kanji>表'; SELECT …; INSERT …; and a comment.
	text := "SELECT E'さ\\'; SELECT pg_advisory_xact_lock(6002); " +
		"INSERT INTO sjis_v (id, ssn) VALUES (1, $$" + value + "$$) -- '"
	err := raceOnLock(t, env, 6002, "CREATE VIEW sjis_v AS SELECT * FROM visits", func() error {
		return conn.PgConn().Exec(ctx, text).Close()
	})
	refusedWith(t, err, "55000")
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored through the view")
	}
	// Without a change of the catalog, such a text answers as it does
	// sent directly.
	d := env.direct(t)
	if _, err := d.Exec(ctx, "SET client_encoding = 'SJIS'"); err != nil {
		t.Fatal(err)
	}
	text = "SELECT E'さ\\' AS a; SELECT 2 AS b; SELECT '-- ' AS c"
	if want, got := runText(t, d.PgConn(), text), runText(t, conn.PgConn(), text); !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
	}
}

// COPY FROM STDIN in a text of several statements, while the client
// takes as long as it likes to send the data and another connection
// creates a view: on the policy table such a text is refused; on another
// table the check after the COPY (counted by its CommandComplete) refuses
// the statement that names the view.
func TestAttack6CopyThenStatement(t *testing.T) {
	env := attackAliasEnv(t, "attack6_copy", "CREATE TABLE notes (a int, b text)")
	ctx := context.Background()
	conn := env.conn(t)
	_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("1\tcopy-row\n"), "COPY visits (id, ssn) FROM STDIN; SELECT 1")
	refusedWith(t, err, "0A000", "only statement")

	const after = "copy-after-not-stored"
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := conn.PgConn().CopyFrom(ctx, r, "COPY notes FROM STDIN; INSERT INTO copy_v (id, ssn) VALUES (2, '"+after+"')")
		done <- err
	}()
	if _, err := w.Write([]byte("1\tnote\n")); err != nil {
		t.Fatalf("the COPY did not start: %v", err)
	}
	if _, err := env.direct(t).Exec(ctx, "CREATE VIEW copy_v AS SELECT * FROM visits"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	refusedWith(t, <-done, "55000")
	if plaintextStored(t, env, after) {
		t.Error("plaintext stored through the view")
	}
}

// Finding 5 (by a client that means it). The session's own epoch changes
// were noted in a setting, phiproxy.epoch_own, which any client may set:
// one that read the epoch another connection's view moved to could note
// that move as its own (SET phiproxy.epoch_own = '<old>><new>;' in front
// of its statement, in one text), and the check accepted it: a value
// written through the view was stored in plaintext. The notes are now
// rows of phiproxy.epoch_own, a table only the trigger's owner writes.
func TestAttack6ForgedOwnChanges(t *testing.T) {
	env := attackAliasEnv(t, "attack6_forge")
	ctx := context.Background()
	conn := env.conn(t)
	direct := env.direct(t)
	var before, after string
	if err := direct.QueryRow(ctx, "SELECT phiproxy.catalog_epoch()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil { // the session reads the catalog
		t.Fatal(err)
	}
	if _, err := direct.Exec(ctx, "CREATE VIEW forge_v AS SELECT * FROM visits"); err != nil {
		t.Fatal(err)
	}
	if err := direct.QueryRow(ctx, "SELECT phiproxy.catalog_epoch()").Scan(&after); err != nil {
		t.Fatal(err)
	}
	const value = "forged-not-stored"
	_, err := conn.Exec(ctx, "SET phiproxy.epoch_own = '"+before+">"+after+";'; INSERT INTO forge_v (id, ssn) VALUES (1, '"+value+"')")
	refusedWith(t, err, "55000")
	_, err = conn.Exec(ctx, "INSERT INTO phiproxy.epoch_own (pid, started, old, new) SELECT pg_backend_pid(), backend_start, '"+before+"', '"+after+
		"' FROM pg_stat_activity WHERE pid = pg_backend_pid(); INSERT INTO forge_v (id, ssn) VALUES (1, '"+value+"')")
	if err == nil {
		t.Error("the client noted a change as its own")
	}
	if plaintextStored(t, env, value) {
		t.Error("plaintext stored through the view")
	}
}
