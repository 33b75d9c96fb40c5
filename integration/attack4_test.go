package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The fourth independent attack (branch attack4), on the paths merged
// last: COPY, views over policy tables and SQL cursors. One test per
// finding; each sends secret() markers where a value is PHI and asserts
// that the proxy refuses the statement or answers as PostgreSQL would on
// the plaintext schema, and that the marker never reached the server log
// (the suite's leak check searches the log, the data files and the proxy
// logs for every marker as well).

// attack4Modes are every way pgx sends a statement.
var attack4Modes = []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
	pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}

const attack4ViewsPolicy = `
databases: [%s]
tables:
  - name: public.patients
    columns:
      email:         { type: text, blind_index: {} }
      date_of_birth: { type: date }
`

// attack4ViewsSchema: patients with a column that is not PHI (note), and
// contacts, a decrypting view that renames the PHI column.
const attack4ViewsSchema = `
CREATE TABLE patients (id int PRIMARY KEY, note text, email text, email_bidx text, date_of_birth text);
CREATE INDEX ON patients (email_bidx);
CREATE VIEW contacts AS SELECT id, email AS contact, note FROM patients;
`

// attack4ViewsEnv starts a governed database db with patients, one row
// in it (written through the proxy), and the view contacts.
func attack4ViewsEnv(t *testing.T, db string) *catalogEnv {
	t.Helper()
	env := startCatalogEnv(t, db, sprintf(attack4ViewsPolicy, db), attack4ViewsSchema)
	if _, err := env.conn(t).Exec(context.Background(), "INSERT INTO patients (id, note, email, date_of_birth) VALUES (1, 'n1', 'ann@example.org', '1990-01-02')"); err != nil {
		t.Fatal(err)
	}
	return env
}

// Finding 1 (leak). The session marked its catalog stale when it planned
// DDL (Parse), not when the DDL ran (Execute): pgx's statement cache
// prepares a statement in one batch and executes it in the next, so the
// catalog was read again between the two, before the view existed, and
// the next statement on the new view was passed through as naming no
// policy table, its value in plaintext.
func TestAttack4ViewCreatedThenUsed(t *testing.T) {
	env := attack4ViewsEnv(t, "attack4_created")
	ctx := context.Background()
	for i, mode := range attack4Modes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			pid := backendPID(t, conn)
			view := sprintf("fresh%d", i)
			// Query, not Exec (which pgx sends in the simple protocol when
			// there are no arguments): prepared in one batch, run in the
			// next.
			rows, err := conn.Query(ctx, "CREATE VIEW "+view+" AS SELECT id, email AS label FROM patients")
			if err != nil {
				t.Fatal(err)
			}
			if rows.Close(); rows.Err() != nil {
				t.Fatal(rows.Err())
			}
			value := secret("fresh-view")
			_, err = conn.Exec(ctx, "SELECT id FROM "+view+" WHERE label = $1", value)
			refusedWith(t, err, "0A000", "column label of view public."+view)
			var got string
			if err := conn.QueryRow(ctx, "SELECT label FROM "+view+" WHERE id = 1").Scan(&got); err != nil || got != "ann@example.org" {
				t.Errorf("read through the view: %q, %v", got, err)
			}
			if loggedBy(t, pid, value) {
				t.Error("the value reached the server log")
			}
		})
	}
}

// Finding 2 (leak). A statement after a CREATE [OR REPLACE] VIEW or an
// ALTER VIEW ... RENAME in the same text, or sent behind it before its
// answer, was planned with the catalog from before the view changed: a
// column that became (or was renamed into) a PHI column was compared
// with its value in plaintext.
func TestAttack4ViewChangedThenUsedInOneText(t *testing.T) {
	env := attack4ViewsEnv(t, "attack4_onetext")
	ctx := context.Background()
	conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	pid := backendPID(t, conn)
	for _, c := range []struct{ name, ddl, use string }{
		{"create", "CREATE VIEW w1 AS SELECT id, email AS label FROM patients", "SELECT id FROM w1 WHERE label = '%s'"},
		{"replace", "CREATE OR REPLACE VIEW contacts AS SELECT id, email AS contact, email AS note FROM patients", "SELECT id FROM contacts WHERE note = '%s'"},
		{"rename column", "ALTER VIEW contacts RENAME COLUMN contact TO mail", "SELECT id FROM contacts WHERE mail = '%s'"},
		{"rename", "ALTER VIEW contacts RENAME TO contacts2", "SELECT id FROM contacts2 WHERE contact = '%s'"},
		{"in a transaction", "BEGIN; CREATE VIEW w2 AS SELECT id, email AS label FROM patients", "SELECT id FROM w2 WHERE label = '%s'; COMMIT"},
		{"DO", "DO $$ BEGIN EXECUTE 'CREATE VIEW w3 AS SELECT id, email AS label FROM patients'; END $$", "SELECT id FROM w3 WHERE label = '%s'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			value := secret("one-text")
			_, err := conn.Exec(ctx, c.ddl+"; "+sprintf(c.use, value))
			refusedWith(t, err, "0A000", "view")
			if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
				t.Fatal(err)
			}
			if loggedBy(t, pid, value) {
				t.Error("the value reached the server log")
			}
		})
	}
	// Nothing of the refused texts ran; the view is still the one the
	// catalog has.
	var got string
	if err := conn.QueryRow(ctx, "SELECT contact FROM contacts WHERE id = 1").Scan(&got); err != nil || got != "ann@example.org" {
		t.Errorf("read through contacts: %q, %v", got, err)
	}

	t.Run("pipeline", func(t *testing.T) {
		conn := env.conn(t)
		pid := backendPID(t, conn)
		value := secret("pipelined")
		pl := conn.PgConn().StartPipeline(ctx)
		pl.SendQueryParams("CREATE VIEW w4 AS SELECT id, email AS label FROM patients", nil, nil, nil, nil)
		pl.SendPipelineSync()
		pl.SendQueryParams("SELECT id FROM w4 WHERE label = $1", [][]byte{[]byte(value)}, nil, nil, nil)
		pl.SendPipelineSync()
		if err := pl.Flush(); err != nil {
			t.Fatal(err)
		}
		var errs []error
		for {
			res, err := pl.GetResults()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if res == nil {
				break
			}
			if rr, ok := res.(*pgconn.ResultReader); ok {
				errs = append(errs, rr.Read().Err)
			}
		}
		if err := pl.Close(); err != nil {
			t.Fatal(err)
		}
		if len(errs) != 2 || errs[0] != nil {
			t.Fatalf("results: %v", errs)
		}
		refusedWith(t, errs[1], "0A000", "wait for")
		if loggedBy(t, pid, value) {
			t.Error("the value reached the server log")
		}
	})
}

// Finding 3 (leak). The catalog guard checked a decrypting view by its
// OID; renamed by another connection and replaced under its old name by
// another view with the same columns, it passed, and the session compared
// the new view's PHI column with a value in plaintext, taking it for the
// column that is not PHI it was in the old view.
func TestAttack4ViewRenamedAndReplaced(t *testing.T) {
	env := attack4ViewsEnv(t, "attack4_renamed")
	ctx := context.Background()
	for i, mode := range attack4Modes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			pid := backendPID(t, conn)
			var note string
			if err := conn.QueryRow(ctx, "SELECT note FROM contacts WHERE id = 1").Scan(&note); err != nil || note != "n1" {
				t.Fatalf("note: %q, %v", note, err)
			}
			old := sprintf("contacts_old%d", i)
			env.ddl(t, "ALTER VIEW contacts RENAME TO "+old,
				"CREATE VIEW contacts AS SELECT id, email AS contact, email AS note FROM patients")
			value := secret("renamed-view")
			_, err := conn.Exec(ctx, "SELECT id FROM contacts WHERE note = $1", value)
			if sqlState(err) == "55000" {
				// The guard found the change: the next try is planned
				// with the view as it now is.
				_, err = conn.Exec(ctx, "SELECT id FROM contacts WHERE note = $1", value)
			}
			refusedWith(t, err, "0A000", "column note of view public.contacts")
			if loggedBy(t, pid, value) {
				t.Error("the value reached the server log")
			}
			env.ddl(t, "DROP VIEW contacts", "ALTER VIEW "+old+" RENAME TO contacts")
		})
	}
}

// Finding 4 (wrong answer). Under a client encoding whose multibyte
// characters may end in a byte that is an ASCII backslash (SJIS, BIG5,
// GBK, UHC, GB18030, JOHAB, SHIFT_JIS_2004), PostgreSQL's COPY TO writes
// such a character as it is, and the proxy read that byte as an escape
// when it split the server's rows: "表N" (SJIS 0x95 0x5C 'N') reached the
// client as 0x95 'N', another character.
func TestAttack4CopyToClientOnlyEncoding(t *testing.T) {
	proxied, direct := copySetup(t)
	ctx := context.Background()
	if _, err := proxied.Exec(ctx, "INSERT INTO copy_pat (id, note, email) VALUES (1, '表N', 'a@x.org'), (2, 'plain', 'b@x.org')"); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Exec(ctx, "INSERT INTO copy_plain (id, note, email) VALUES (1, '表N', 'a@x.org'), (2, 'plain', 'b@x.org')"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*pgx.Conn{proxied, direct} {
		if _, err := c.Exec(ctx, "SET client_encoding = 'SJIS'"); err != nil {
			t.Fatal(err)
		}
	}
	for _, sql := range []string{
		"COPY (SELECT id, note, email FROM copy_pat ORDER BY id) TO STDOUT",
		"COPY copy_pat (id, note, email) TO STDOUT (FORMAT csv)",
	} {
		gotP, errP := copyOut(proxied, sql)
		gotD, errD := copyOut(direct, plainSQL(sql))
		if errD != nil {
			t.Fatalf("%s: direct: %v", sql, errD)
		}
		if errP == nil {
			if gotP != gotD {
				t.Errorf("%s:\nproxy:  %q\ndirect: %q", sql, gotP, gotD)
			}
			continue
		}
		refusedWith(t, errP, "0A000", "client_encoding")
	}
	// ASCII rows and ENCODING 'UTF8' read exactly.
	for _, sql := range []string{
		"COPY (SELECT id, note, email FROM copy_pat WHERE id = 2) TO STDOUT",
		"COPY (SELECT id, note, email FROM copy_pat ORDER BY id) TO STDOUT (ENCODING 'UTF8')",
	} {
		gotP, errP := copyOut(proxied, sql)
		gotD, errD := copyOut(direct, plainSQL(sql))
		if errP != nil || errD != nil || gotP != gotD {
			t.Errorf("%s:\nproxy:  %q %v\ndirect: %q %v", sql, gotP, errP, gotD, errD)
		}
	}
}

// Finding 5 (wrong answer). The proxy reads its catalog again with a
// simple Query, which destroys the client's unnamed prepared statement
// (and unnamed portal): a client that parses the unnamed statement in
// one batch and binds it in the next (pgx's QueryExecModeDescribeExec)
// got "unnamed prepared statement does not exist" (26000) whenever a
// catalog read fell between the two: after DDL, and for a busy session
// every time the read of second names came due (aliasTTL).
func TestAttack4UnnamedStatementSurvivesCatalogRead(t *testing.T) {
	env := attack4ViewsEnv(t, "attack4_unnamed")
	ctx := context.Background()
	conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeDescribeExec })
	rows, err := conn.Query(ctx, "ALTER TABLE patients ADD COLUMN extra int")
	if err != nil {
		t.Fatal(err)
	}
	if rows.Close(); rows.Err() != nil {
		t.Fatalf("DDL in describe-exec mode: %v", rows.Err())
	}
	deadline := time.Now().Add(22 * time.Second) // twice past aliasTTL
	for n := 0; time.Now().Before(deadline); n++ {
		var email string
		if err := conn.QueryRow(ctx, "SELECT email FROM patients WHERE id = $1", 1).Scan(&email); err != nil || email != "ann@example.org" {
			t.Fatalf("query %d: %q, %v", n, email, err)
		}
	}
}
