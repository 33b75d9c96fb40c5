package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
)

// Issue 10 item 5: views over a policy table. A view created on the
// server whose PHI columns are plain column references is read through
// phiproxy exactly as PostgreSQL reads the same view over the plaintext
// table; what would make PostgreSQL compute on its ciphertext is refused,
// and so is every write through it. A view that computes on PHI columns
// stays a second name that refuses the table (issue 9).

const viewsPolicy = `
databases: [catalog_views]
tables:
  - name: public.patients
    columns:
      email:         { type: text, blind_index: {} }
      date_of_birth: { type: date }
      visits:        { type: int4 }
`

// viewsSchema has patients and its plaintext twin plain_patients (same
// columns, logical types, no blind index).
const viewsSchema = `
CREATE TABLE patients (id int PRIMARY KEY, name text, email text, email_bidx text, date_of_birth text, visits text);
CREATE INDEX ON patients (email_bidx);
CREATE TABLE plain_patients (id int PRIMARY KEY, name text, email text, date_of_birth date, visits int4);
`

// viewsDDL creates the views over the table named prefix+"patients", as
// the owner does on the server: contacts (PHI columns renamed, filtered
// and ordered by other columns), mails (over contacts) and labels (no
// PHI column).
func viewsDDL(prefix string) []string {
	return []string{
		fmt.Sprintf("CREATE OR REPLACE VIEW %[1]scontacts AS SELECT id, name, email, date_of_birth AS born, visits FROM %[1]spatients WHERE id > 1 ORDER BY id", prefix),
		fmt.Sprintf("CREATE OR REPLACE VIEW %[1]smails AS SELECT c.id, c.email AS mail FROM %[1]scontacts c", prefix),
		fmt.Sprintf("CREATE OR REPLACE VIEW %[1]slabels AS SELECT id, name AS label FROM %[1]spatients", prefix),
	}
}

// viewsRows are the rows of both tables (synthetic values, also stored in
// plaintext in the twin: not given to the leak check).
var viewsRows = [][]any{
	{1, "n1", "ann@example.org", "1990-01-02", 3},
	{2, "n2", "bob@example.org", "1985-12-31", nil},
	{3, "n3", nil, nil, 7},
	{4, "n4", "dee@example.org", "2001-07-04", 0},
}

// startViewsEnv creates the database, fills patients through the proxy
// and the twin directly, and creates the views on both.
func startViewsEnv(t *testing.T) *catalogEnv {
	t.Helper()
	ctx := context.Background()
	env := startCatalogEnv(t, "catalog_views", viewsPolicy, viewsSchema)
	enc, direct := env.conn(t), env.direct(t)
	for _, r := range viewsRows {
		if _, err := enc.Exec(ctx, "INSERT INTO patients (id, name, email, date_of_birth, visits) VALUES ($1, $2, $3, $4, $5)", r...); err != nil {
			t.Fatal(err)
		}
		if _, err := direct.Exec(ctx, "INSERT INTO plain_patients (id, name, email, date_of_birth, visits) VALUES ($1, $2, $3, $4, $5)", r...); err != nil {
			t.Fatal(err)
		}
	}
	env.ddl(t, append(viewsDDL(""), viewsDDL("plain_")...)...)
	return env
}

// ddl runs statements directly on the server, as another connection.
func (e *catalogEnv) ddl(t *testing.T, sqls ...string) {
	t.Helper()
	direct := e.direct(t)
	for _, sql := range sqls {
		if _, err := direct.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// viewResult is what a client sees of a query: the columns as
// RowDescription gives them (name, type, size, modifier) and the rows.
type viewResult struct {
	Columns []string
	Rows    []string
	Code    string
}

func viewQuery(c *pgx.Conn, mode pgx.QueryExecMode, sql string, args ...any) viewResult {
	var res viewResult
	rows, err := c.Query(context.Background(), sql, append([]any{mode}, args...)...)
	if err == nil {
		for _, f := range rows.FieldDescriptions() {
			res.Columns = append(res.Columns, fmt.Sprintf("%s:%d/%d/%d", f.Name, f.DataTypeOID, f.DataTypeSize, f.TypeModifier))
		}
		for rows.Next() {
			vals, verr := rows.Values()
			if verr != nil {
				err = verr
				break
			}
			res.Rows = append(res.Rows, fmt.Sprint(vals))
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	res.Code = sqlState(err)
	if res.Code == "client" {
		res.Code = "client: " + err.Error()
	}
	return res
}

// viewModes are the ways pgx sends a query: prepared and described,
// described each time, and the simple protocol with the values inline.
var viewModes = []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeSimpleProtocol}

// TestViewsMatchPlaintext: SELECT * and SELECT of columns from views over
// patients through phiproxy give what the same views over the plaintext
// twin give directly: the same columns (names, types) and the same rows.
func TestViewsMatchPlaintext(t *testing.T) {
	env := startViewsEnv(t)
	enc, direct := env.conn(t), env.direct(t)
	twin := strings.NewReplacer("contacts", "plain_contacts", "mails", "plain_mails", "labels", "plain_labels", "patients", "plain_patients")
	for _, tc := range []struct {
		sql  string
		args []any
		rows int
	}{
		{"SELECT * FROM contacts", nil, 3},
		{"SELECT id, email, born, visits FROM contacts WHERE id = $1", []any{2}, 1},
		{"SELECT c.born, c.email FROM contacts c WHERE c.id > $1 ORDER BY c.id DESC", []any{2}, 2},
		{"SELECT * FROM mails", nil, 3},
		{"SELECT m.mail, l.label FROM mails m JOIN labels l ON l.id = m.id ORDER BY m.id", nil, 3},
		{"SELECT count(email), count(born), count(*) FROM contacts", nil, 1},
		{"SELECT id FROM contacts WHERE email IS NULL", nil, 1},
		{"SELECT c.email, p.name FROM contacts c JOIN patients p ON p.id = c.id WHERE p.visits IS NOT NULL ORDER BY c.id", nil, 2},
		{"TABLE mails", nil, 3},
		{"SELECT label FROM labels WHERE label = $1", []any{"n2"}, 1},
	} {
		for _, mode := range viewModes {
			t.Run(fmt.Sprintf("%s/%v", tc.sql, mode), func(t *testing.T) {
				want := viewQuery(direct, mode, twin.Replace(tc.sql), tc.args...)
				got := viewQuery(enc, mode, tc.sql, tc.args...)
				if want.Code != "" || len(want.Rows) != tc.rows {
					t.Fatalf("the plaintext twin answers %+v", want)
				}
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("through phiproxy (-plaintext +phiproxy):\n%s", d)
				}
			})
		}
	}
}

// TestViewsDecryptAndRefuse: a PHI value written through phiproxy reads
// back through the views decrypted (the server holds ciphertext); what
// would compute on a view's PHI column, and every write through a view,
// is refused before anything reaches the server.
func TestViewsDecryptAndRefuse(t *testing.T) {
	ctx := context.Background()
	env := startViewsEnv(t)
	direct := env.direct(t)
	email := secret("email")
	if _, err := env.conn(t).Exec(ctx, "INSERT INTO patients (id, name, email, date_of_birth) VALUES (10, 'n10', $1, '2001-02-03')", email); err != nil {
		t.Fatal(err)
	}
	for _, mode := range viewModes {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			c := env.conn(t)
			for _, sql := range []string{"SELECT email FROM contacts WHERE id = $1", "SELECT mail FROM mails WHERE id = $1"} {
				var got string
				if err := c.QueryRow(ctx, sql, mode, 10).Scan(&got); err != nil || got != email {
					t.Errorf("%s: %q, %v", sql, got, err)
				}
			}
			pid := backendPID(t, c)
			value := secret("refused")
			for _, tc := range []struct {
				sql  string
				args []any
				msg  string
			}{
				{"SELECT id FROM contacts WHERE email = $1", []any{value}, "= on column email of view public.contacts is not supported: it returns PHI column public.patients.email"},
				{"SELECT id FROM mails WHERE mail IN ($1, 'x')", []any{value}, "column mail of view public.mails"},
				{"SELECT id FROM contacts WHERE email LIKE $1", []any{value}, "column email of view public.contacts"},
				{"SELECT id FROM contacts ORDER BY born", nil, "ORDER BY on column born of view public.contacts"},
				{"SELECT lower(email) FROM contacts", nil, "column email of view public.contacts"},
				{"SELECT DISTINCT mail FROM mails", nil, "column mail of view public.mails"},
				{"SELECT c FROM contacts c", nil, "whole-row reference"},
				{"SELECT p.id FROM patients p JOIN contacts c ON c.email = p.email", nil, "column email of view public.contacts"},
				{"INSERT INTO contacts (id, name, email) VALUES (20, 'n20', $1)", []any{value}, "writing through view public.contacts is not supported"},
				{"UPDATE contacts SET email = $1 WHERE id = 2", []any{value}, "writing through view public.contacts"},
				{"UPDATE labels SET label = $1 WHERE id = 2", []any{value}, "writing through view public.labels"},
				{"DELETE FROM mails WHERE id = 2", nil, "writing through view public.mails"},
			} {
				_, err := c.Exec(ctx, tc.sql, append([]any{mode}, tc.args...)...)
				refusedWith(t, err, "0A000", tc.msg)
			}
			if loggedBy(t, pid, value) {
				t.Errorf("the refused value reached the server log")
			}
		})
	}
	var n int
	var stored string
	if err := direct.QueryRow(ctx, "SELECT count(*), max(email) FILTER (WHERE id = 10) FROM patients").Scan(&n, &stored); err != nil || n != len(viewsRows)+1 {
		t.Errorf("rows: %d, %v", n, err)
	}
	if !strings.HasPrefix(stored, crypto.TextPrefix) {
		t.Errorf("the server holds %q, want ciphertext", stored)
	}
	var viaView string
	if err := direct.QueryRow(ctx, "SELECT email FROM contacts WHERE id = 10").Scan(&viaView); err != nil || viaView != stored {
		t.Errorf("the view read directly: %q, %v", viaView, err)
	}
}

// TestViewsThatComputeOnPHI: a view created on the server that computes on
// a PHI column (lower(email)) or filters on one is a second name phiproxy
// cannot decrypt: the table, the views over it and the view itself are
// refused (55000) naming it, until it is dropped (through phiproxy).
// Through phiproxy, CREATE VIEW is allowed for a view it can decrypt and
// refused for the others.
func TestViewsThatComputeOnPHI(t *testing.T) {
	ctx := context.Background()
	env := startViewsEnv(t)
	for _, tc := range []struct {
		name, create, why string
	}{
		{"lowered", "CREATE VIEW lowered AS SELECT id, lower(email) AS e FROM patients", "function lower() on PHI column public.patients.email"},
		{"filtered", "CREATE VIEW filtered AS SELECT id, name FROM patients WHERE email IS NOT NULL", "it reads PHI or blind-index columns other than as plain output columns"},
		{"everything", "CREATE VIEW everything AS SELECT * FROM patients", "is internal to phiproxy: it holds a blind index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env.ddl(t, tc.create)
			c := env.conn(t) // a new session reads the views at once
			for _, sql := range []string{"SELECT email FROM patients WHERE id = 2", "SELECT email FROM contacts WHERE id = 2"} {
				_, err := c.Exec(ctx, sql)
				refusedWith(t, err, "55000", "view public."+tc.name+" reads it under a second name that phiproxy does not govern", tc.why, "DROP VIEW public."+tc.name+";")
			}
			_, err := c.Exec(ctx, "SELECT * FROM "+tc.name)
			refusedWith(t, err, "55000", "the statement names public."+tc.name+", a second name for table public.patients")
			if _, err := c.Exec(ctx, "DROP VIEW "+tc.name); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := c.QueryRow(ctx, "SELECT email FROM contacts WHERE id = 2").Scan(&got); err != nil || got != "bob@example.org" {
				t.Errorf("after the DROP: %q, %v", got, err)
			}
		})
	}
	t.Run("created through phiproxy", func(t *testing.T) {
		c := env.conn(t)
		if _, err := c.Exec(ctx, "CREATE VIEW born_after AS SELECT p.id, p.date_of_birth FROM patients p WHERE p.id > 1"); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := c.QueryRow(ctx, "SELECT date_of_birth::text FROM born_after WHERE id = 2").Scan(&got); err == nil {
			t.Errorf("a cast on a view's PHI column was answered: %q", got)
		}
		var born any
		if err := c.QueryRow(ctx, "SELECT date_of_birth FROM born_after WHERE id = 2").Scan(&born); err != nil || fmt.Sprint(born) != "1985-12-31 00:00:00 +0000 UTC" {
			t.Errorf("read through the new view: %v, %v", born, err)
		}
		for _, sql := range []string{
			"CREATE VIEW lowered AS SELECT id, lower(email) AS e FROM patients",
			"CREATE VIEW by_email AS SELECT id FROM patients WHERE email = 'x@example.org'",
			"CREATE OR REPLACE VIEW contacts AS SELECT id, name, upper(email) AS email, date_of_birth AS born, visits FROM patients",
		} {
			_, err := c.Exec(ctx, sql)
			refusedWith(t, err, "0A000", "a view over PHI tables may only select PHI columns as plain column references")
		}
		if _, err := c.Exec(ctx, "DROP VIEW born_after"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestViewsReplaced: another connection replaces, renames or drops a view
// (or creates one) after a session read the catalog. The session never
// answers from its old reading of the view: the catalog guard in front of
// the statement fails (55000, nothing run, nothing logged) and the next
// try is planned with the view as it now is. That includes a transaction
// whose snapshot is older than the replacement (REPEATABLE READ), where
// the statement sees the new definition and a query of the catalog the
// old one.
func TestViewsReplaced(t *testing.T) {
	ctx := context.Background()
	env := startViewsEnv(t)
	const changed = "changed since this session read their definitions"
	for _, mode := range viewModes {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			a := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			pid := backendPID(t, a)
			emailOf := func(id int) (string, error) {
				var s *string
				err := a.QueryRow(ctx, "SELECT email FROM contacts WHERE id = $1", id).Scan(&s)
				if s == nil {
					return "", err
				}
				return *s, err
			}
			// eventually runs op until it passes, allowing one refusal by
			// the guard, or of a statement pgx prepared before the change.
			eventually := func(t *testing.T, op func() error) {
				t.Helper()
				err := op()
				for i := 0; i < 2 && (sqlState(err) == "55000" || sqlState(err) == "0A000" && strings.Contains(err.Error(), "prepare it again")); i++ {
					err = op()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			restore := func(t *testing.T) {
				t.Helper()
				env.ddl(t, viewsDDL("")...)
				eventually(t, func() error {
					got, err := emailOf(2)
					if err == nil && got != "bob@example.org" {
						t.Fatalf("read %q", got)
					}
					return err
				})
			}
			restore(t)

			t.Run("a PHI column turned into an expression", func(t *testing.T) {
				env.ddl(t, "CREATE OR REPLACE VIEW contacts AS SELECT id, name, lower(email) AS email, date_of_birth AS born, visits FROM patients WHERE id > 1 ORDER BY id")
				for _, want := range [][]string{{changed}, {"the statement names public.contacts, a second name for table public.patients", "function lower() on PHI column public.patients.email"}} {
					got, err := emailOf(2)
					refusedWith(t, err, "55000", want...)
					if got != "" {
						t.Errorf("read %q", got)
					}
				}
				restore(t)
			})
			t.Run("a plain column turned into a PHI one", func(t *testing.T) {
				var id int
				if err := a.QueryRow(ctx, "SELECT id FROM labels WHERE label = $1", "n2").Scan(&id); err != nil || id != 2 {
					t.Fatalf("by label: %d, %v", id, err)
				}
				env.ddl(t, "CREATE OR REPLACE VIEW labels AS SELECT id, email AS label FROM patients")
				value := secret("label")
				_, err := a.Exec(ctx, "SELECT id FROM labels WHERE label = $1", value)
				refusedWith(t, err, "55000", changed)
				_, err = a.Exec(ctx, "SELECT id FROM labels WHERE label = $1", value)
				refusedWith(t, err, "0A000", "= on column label of view public.labels is not supported: it returns PHI column public.patients.email")
				if loggedBy(t, pid, value) {
					t.Error("the value reached the server log")
				}
				restore(t)
			})
			t.Run("replaced after a REPEATABLE READ snapshot", func(t *testing.T) {
				tx, err := a.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback(ctx)
				var n int
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM patients").Scan(&n); err != nil { // the snapshot
					t.Fatal(err)
				}
				env.ddl(t, "CREATE OR REPLACE VIEW labels AS SELECT id, email AS label FROM patients")
				value := secret("label")
				_, err = tx.Exec(ctx, "SELECT id FROM labels WHERE label = $1", value)
				refusedWith(t, err, "55000", changed)
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
				_, err = a.Exec(ctx, "SELECT id FROM labels WHERE label = $1", value)
				refusedWith(t, err, "0A000", "column label of view public.labels")
				if loggedBy(t, pid, value) {
					t.Error("the value reached the server log")
				}
				restore(t)
			})
			t.Run("a column renamed", func(t *testing.T) {
				env.ddl(t, "ALTER VIEW contacts RENAME COLUMN email TO contact")
				value := secret("contact")
				_, err := a.Exec(ctx, "SELECT id FROM contacts WHERE contact = $1", value)
				refusedWith(t, err, "55000", changed)
				_, err = a.Exec(ctx, "SELECT id FROM contacts WHERE contact = $1", value)
				refusedWith(t, err, "0A000", "column contact of view public.contacts")
				if loggedBy(t, pid, value) {
					t.Error("the value reached the server log")
				}
				env.ddl(t, "ALTER VIEW contacts RENAME COLUMN contact TO email")
				restore(t)
			})
			t.Run("dropped", func(t *testing.T) {
				env.ddl(t, "DROP VIEW mails")
				eventually(t, func() error {
					var got string
					err := a.QueryRow(ctx, "SELECT email FROM patients WHERE id = $1", 2).Scan(&got)
					if err == nil && got != "bob@example.org" {
						t.Fatalf("read %q", got)
					}
					return err
				})
				restore(t)
			})
		})
	}
}

// TestViewsCreatedWhileBusy: a view created by another connection changes
// the catalog epoch, so a busy session's next batch is refused once
// (55000) and planned with the view known from then on: a value compared
// with its PHI column is never sent in plaintext, and its rows come back
// decrypted.
func TestViewsCreatedWhileBusy(t *testing.T) {
	ctx := context.Background()
	env := startViewsEnv(t)
	a := env.conn(t)
	read := func(sql string) (string, error) {
		var s string
		err := a.QueryRow(ctx, sql, 2).Scan(&s)
		return s, err
	}
	if _, err := read("SELECT email FROM patients WHERE id = $1"); err != nil {
		t.Fatal(err)
	}
	env.ddl(t, "CREATE VIEW fresh AS SELECT id, email FROM patients")
	const byEmail = "SELECT id FROM fresh WHERE email = $1"
	_, err := a.Prepare(ctx, "by_email", byEmail)
	refusedWith(t, err, "55000", "send the statement again")
	pid, value := backendPID(t, a), secret("email")
	_, err = a.Exec(ctx, byEmail, value)
	refusedWith(t, err, "0A000", "column email of view public.fresh")
	if loggedBy(t, pid, value) {
		t.Error("the value reached the server log")
	}
	if got, err := read("SELECT email FROM fresh WHERE id = $1"); err != nil || got != "bob@example.org" {
		t.Fatalf("read through the new view: %q, %v", got, err)
	}
}
