package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// Issue 9, items 3, 5 and 6: what the catalog read finds in a governed
// database (missing tables, second names) and how a session keeps up with
// DDL made by other connections. Each test has a database and a policy of
// its own, so that its DDL disturbs no other test.

// catalogEnv is a database of its own, governed by a policy of its own,
// behind a PHI proxy.
type catalogEnv struct {
	db  string
	pol *policy.Policy
	p   *testProxy
}

// startCatalogEnv creates database db (dropping any left from an earlier
// run) with schema, as the PHI schema's owner, and a proxy that enforces
// policyYAML with the suite's keyring.
func startCatalogEnv(t *testing.T, db, policyYAML, schema string) *catalogEnv {
	t.Helper()
	setupPHI(t)
	ctx := context.Background()
	su := connect(t, cluster.SuperuserDSN("postgres"))
	for _, sql := range []string{
		fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", db),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, pgcluster.ScramUser.Name),
	} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if schema != "" {
		if _, err := connect(t, directDSN(pgcluster.ScramUser, db)).Exec(ctx, schema); err != nil {
			t.Fatalf("schema of %s: %v", db, err)
		}
	}
	pol, err := policy.Parse([]byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	phiLogs.add(logs)
	reg := prometheus.NewRegistry()
	eng, err := phi.New(pol, phi.KeyringKeys(phiEnv.keyring), reg, phi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(baseConfig(), slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg, proxy.WithInterceptor(eng))
	if err != nil {
		t.Fatal(err)
	}
	return &catalogEnv{db: db, pol: pol, p: runProxy(t, srv, logs)}
}

// conn connects through the proxy; direct connects to PostgreSQL.
func (e *catalogEnv) conn(t *testing.T, opts ...func(*pgx.ConnConfig)) *pgx.Conn {
	return connect(t, e.p.dsn(pgcluster.ScramUser, e.db), opts...)
}

func (e *catalogEnv) direct(t *testing.T) *pgx.Conn {
	return connect(t, directDSN(pgcluster.ScramUser, e.db))
}

// readyz asks the proxy's /readyz.
func (e *catalogEnv) readyz() (int, string) {
	rec := httptest.NewRecorder()
	e.p.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// check runs phi.CheckDatabase as `phiproxy check` would, on a direct
// connection.
func (e *catalogEnv) check(t *testing.T) []phi.Problem {
	t.Helper()
	conn := e.direct(t)
	problems, err := phi.CheckDatabase(context.Background(), e.pol, func(ctx context.Context, sql string) ([][][]byte, error) {
		rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out [][][]byte
		for rows.Next() {
			raw := rows.RawValues()
			vals := make([][]byte, len(raw))
			for i, v := range raw {
				if v != nil {
					vals[i] = append([]byte{}, v...)
				}
			}
			out = append(out, vals)
		}
		return out, rows.Err()
	})
	if err != nil {
		t.Fatalf("CheckDatabase: %v", err)
	}
	return problems
}

// refusedWith fails unless err is a server error with code whose message
// holds each of parts.
func refusedWith(t *testing.T, err error, code string, parts ...string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("got %v, want SQLSTATE %s", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(pe.Message, p) {
			t.Errorf("message %q lacks %q", pe.Message, p)
		}
	}
}

// backendPID is the server process of a session.
func backendPID(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var pid int
	if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// loggedBy reports whether the server log has a statement of process pid
// that contains s (log_line_prefix '%m [%p] ...').
func loggedBy(t *testing.T, pid int, s string) bool {
	t.Helper()
	log, err := cluster.LogContents()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "["+strconv.Itoa(pid)+"]") && strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// catalogQueryStart is how the server log shows the catalog query.
const catalogQueryStart = "WITH t AS (SELECT c.oid, n.nspname"

// TestCatalogGovernedDatabases (item 5): the policy names public.encounter,
// the database has public.encounters. In the governed database a statement
// on encounter is refused with the DDL that creates it, /readyz says not
// ready, and the check finds the table the policy probably meant; once the
// table exists, the same session serves it, encrypting. A session on a
// database the policy does not govern runs no catalog query and is
// relayed untouched.
func TestCatalogGovernedDatabases(t *testing.T) {
	ctx := context.Background()
	env := startCatalogEnv(t, "catalog_gov", `
databases: [catalog_gov]
tables:
  - name: public.encounter
    columns:
      diagnosis:  { type: text }
      medication: { type: text, blind_index: {} }
`, "CREATE TABLE encounters (id serial PRIMARY KEY, diagnosis text, medication text)")
	conn := env.conn(t)
	_, err := conn.Exec(ctx, "INSERT INTO encounter (diagnosis, medication) VALUES ($1, $2)", secret("dx"), secret("med"))
	refusedWith(t, err, "55000", "table public.encounter is not ready for encryption: it does not exist",
		strings.Join(policy.CreateTableSQL(env.pol.Table("public", "encounter"), policy.CreateOptions{}), " "))
	if code, body := env.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "database catalog_gov: table public.encounter: it does not exist") {
		t.Errorf("/readyz = %d %q, want 503 naming public.encounter", code, body)
	}
	problems := env.check(t)
	if len(problems) != 1 || problems[0].Kind != phi.ProblemMissing || !strings.Contains(problems[0].Message, "public.encounters has all its PHI columns") {
		t.Errorf("check = %+v, want public.encounter missing, public.encounters its likely name", problems)
	}
	governedPID := backendPID(t, conn)

	// The app database is not governed: no catalog query, nothing rewritten.
	app := connect(t, env.p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	appPID := backendPID(t, app)
	var echoed string
	if err := app.QueryRow(ctx, "SELECT $1::text AS diagnosis", "not-phi-here").Scan(&echoed); err != nil || echoed != "not-phi-here" {
		t.Errorf("ungoverned session: %q, %v", echoed, err)
	}
	if !loggedBy(t, governedPID, catalogQueryStart) {
		t.Error("the governed session's catalog query is not in the server log")
	}
	if loggedBy(t, appPID, catalogQueryStart) {
		t.Error("the session on the ungoverned database ran the catalog query")
	}

	// Created directly: the session reads its catalog again after the
	// refusal, and serves the table.
	direct := env.direct(t)
	if _, err := direct.Exec(ctx, "CREATE TABLE encounter (id serial PRIMARY KEY, diagnosis text, medication text, medication_bidx text)"); err != nil {
		t.Fatal(err)
	}
	dx := secret("dx")
	if _, err := conn.Exec(ctx, "INSERT INTO encounter (diagnosis, medication) VALUES ($1, $2)", dx, secret("med")); err != nil {
		t.Fatalf("insert once the table exists: %v", err)
	}
	var stored string
	if err := direct.QueryRow(ctx, "SELECT diagnosis FROM encounter").Scan(&stored); err != nil || !strings.HasPrefix(stored, crypto.TextPrefix) {
		t.Errorf("stored %q, %v: want ciphertext", stored, err)
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT diagnosis FROM encounter").Scan(&got); err != nil || got != dx {
		t.Errorf("read back %q, %v", got, err)
	}
	if code, body := env.readyz(); code != http.StatusOK {
		t.Errorf("/readyz = %d %q once the table exists", code, body)
	}
	if problems := env.check(t); len(problems) != 0 {
		t.Errorf("check once the table exists = %+v", problems)
	}
}

// driftPolicy is the policy of TestCatalogDrift's database.
const driftPolicy = `
databases: [catalog_drift]
tables:
  - name: public.visits
    columns:
      ssn:  { type: text, blind_index: {} }
      note: { type: text }
`

// TestCatalogDrift (item 6): session A reads through the proxy; then
// another connection creates, alters or recreates the table; A's next read
// and write are correct or refused (55000, or 0A000 for a statement A
// prepared before), never ciphertext, never plaintext stored, and the one
// after a refusal is correct. With the pipeline of the extended protocol
// (pgx's statement cache) and with the simple protocol.
func TestCatalogDrift(t *testing.T) {
	ctx := context.Background()
	env := startCatalogEnv(t, "catalog_drift", driftPolicy, "")
	direct := env.direct(t)
	ddl := func(t *testing.T, sqls ...string) {
		t.Helper()
		for _, sql := range sqls {
			if _, err := direct.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
	}
	const table = "CREATE TABLE visits (id int PRIMARY KEY, label text, ssn text, ssn_bidx text, note text)"
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		opt := func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode }
		// once runs op; when the proxy refuses it because the catalog
		// changed (or a statement prepared before no longer fits), it runs
		// it again, which must succeed.
		once := func(t *testing.T, what string, op func() error) {
			t.Helper()
			err := op()
			if c := sqlState(err); c == "55000" || c == "0A000" {
				t.Logf("%s refused once: %v", what, err)
				err = op()
			}
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		// read checks that A reads want as the note of row id, decrypted.
		read := func(t *testing.T, a *pgx.Conn, id int, want string) {
			t.Helper()
			once(t, "read", func() error {
				var got string
				err := a.QueryRow(ctx, "SELECT note FROM visits WHERE id = $1", id).Scan(&got)
				if err == nil && got != want {
					t.Fatalf("read %q, want %q: a stale catalog served ciphertext", got, want)
				}
				return err
			})
		}
		// stored checks row id as PostgreSQL holds it: ciphertext in ssn
		// and note, and label as given.
		stored := func(t *testing.T, id int, label string) {
			t.Helper()
			var l, ssn, note *string
			if err := direct.QueryRow(ctx, "SELECT label, ssn, note FROM visits WHERE id = $1", id).Scan(&l, &ssn, &note); err != nil {
				t.Fatalf("row %d: %v", id, err)
			}
			if l == nil || *l != label {
				t.Errorf("row %d: label %s, want %q (a PHI value in a plain column?)", id, deref(l), label)
			}
			for _, v := range []*string{ssn, note} {
				if v == nil || !strings.HasPrefix(*v, crypto.TextPrefix) {
					t.Errorf("row %d: PHI column holds %s, want ciphertext", id, deref(v))
				}
			}
		}
		t.Run(fmt.Sprintf("mode %v", mode), func(t *testing.T) {
			t.Run("table created after the session started", func(t *testing.T) {
				ddl(t, "DROP TABLE IF EXISTS visits")
				a := env.conn(t, opt)
				_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), secret("note"))
				refusedWith(t, err, "55000", "table public.visits is not ready for encryption: it does not exist")
				ddl(t, table)
				note := secret("note")
				once(t, "positional insert", func() error {
					_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), note)
					return err
				})
				stored(t, 1, "l1")
				read(t, a, 1, note)
			})
			t.Run("blind-index column added", func(t *testing.T) {
				ddl(t, "DROP TABLE IF EXISTS visits", "CREATE TABLE visits (id int PRIMARY KEY, label text, ssn text, note text)")
				a := env.conn(t, opt)
				ssn := secret("ssn")
				_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", ssn, secret("note"))
				refusedWith(t, err, "55000", "ALTER TABLE public.visits ADD COLUMN ssn_bidx text; CREATE INDEX CONCURRENTLY visits_ssn_bidx_idx ON public.visits (ssn_bidx);")
				ddl(t, "ALTER TABLE visits ADD COLUMN ssn_bidx text", "CREATE INDEX ON visits (ssn_bidx)")
				note := secret("note")
				once(t, "positional insert", func() error {
					_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", ssn, note)
					return err
				})
				stored(t, 1, "l1")
				once(t, "search by the new index", func() error {
					var got string
					err := a.QueryRow(ctx, "SELECT note FROM visits WHERE ssn = $1", ssn).Scan(&got)
					if err == nil && got != note {
						t.Fatalf("read %q, want %q", got, note)
					}
					return err
				})
			})
			t.Run("table recreated", func(t *testing.T) {
				ddl(t, "DROP TABLE IF EXISTS visits", table)
				a, b := env.conn(t, opt), env.conn(t)
				first := secret("note")
				once(t, "insert", func() error {
					_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), first)
					return err
				})
				read(t, a, 1, first)
				ddl(t, "DROP TABLE visits", table)
				second := secret("note")
				once(t, "B's insert", func() error {
					_, err := b.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), second)
					return err
				})
				read(t, a, 1, second)
			})
			t.Run("column renamed", func(t *testing.T) {
				ddl(t, "DROP TABLE IF EXISTS visits", table)
				a, b := env.conn(t, opt), env.conn(t)
				first := secret("note")
				once(t, "insert", func() error {
					_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), first)
					return err
				})
				read(t, a, 1, first)
				// The old values move to note_old; note is a new column.
				ddl(t, "ALTER TABLE visits RENAME COLUMN note TO note_old", "ALTER TABLE visits ADD COLUMN note text")
				second := secret("note")
				once(t, "B's update", func() error {
					_, err := b.Exec(ctx, "UPDATE visits SET note = $1 WHERE id = 1", second)
					return err
				})
				read(t, a, 1, second)
			})
			t.Run("columns reordered", func(t *testing.T) {
				ddl(t, "DROP TABLE IF EXISTS visits", table)
				a := env.conn(t, opt)
				once(t, "insert", func() error {
					_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), secret("note"))
					return err
				})
				// Now (id, ssn, ssn_bidx, note, label): a positional INSERT
				// planned with the old order would store the SSN in label,
				// in plaintext.
				ddl(t, "ALTER TABLE visits DROP COLUMN label", "ALTER TABLE visits ADD COLUMN label text")
				note := secret("note")
				once(t, "positional insert in the new order", func() error {
					_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 2, secret("ssn"), note, "l2")
					return err
				})
				stored(t, 2, "l2")
				read(t, a, 2, note)
			})
			t.Run("change seen before the statement when idle", func(t *testing.T) {
				ddl(t, "DROP TABLE IF EXISTS visits", table)
				a, b := env.conn(t, opt), env.conn(t)
				first := secret("note")
				once(t, "insert", func() error {
					_, err := a.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), first)
					return err
				})
				read(t, a, 1, first)
				ddl(t, "DROP TABLE visits", table)
				second := secret("note")
				once(t, "B's insert", func() error {
					_, err := b.Exec(ctx, "INSERT INTO visits VALUES ($1, $2, $3, $4)", 1, "l1", secret("ssn"), second)
					return err
				})
				// Idle for longer than the recheck interval (1 s): the
				// session checks its catalog before the statement, which
				// then runs at once. A statement pgx prepared before is
				// still refused once (its table changed).
				time.Sleep(1500 * time.Millisecond)
				var got string
				err := a.QueryRow(ctx, "SELECT note FROM visits WHERE id = $1", 1).Scan(&got)
				if mode == pgx.QueryExecModeCacheStatement && sqlState(err) == "0A000" {
					err = a.QueryRow(ctx, "SELECT note FROM visits WHERE id = $1", 1).Scan(&got)
				}
				if err != nil || got != second {
					t.Fatalf("read after an idle second: %q, %v (want %q at once)", got, err, second)
				}
			})
		})
	}
}

// TestCatalogAliases (item 3): second names for a policy table created
// outside phiproxy (a view, an inheritance child, a foreign table pointing
// at it, a trigger with a transition table, a function returning its
// rows) refuse the table and every statement that names them, with a 55000
// naming the alias; /readyz and the check list them. Dropping them,
// through the proxy, restores service.
func TestCatalogAliases(t *testing.T) {
	ctx := context.Background()
	env := startCatalogEnv(t, "catalog_alias", `
databases: [catalog_alias]
tables:
  - name: public.visits
    columns:
      ssn: { type: text, blind_index: {} }
`, "CREATE TABLE visits (id int PRIMARY KEY, ssn text, ssn_bidx text)")
	su := connect(t, cluster.SuperuserDSN(env.db))
	for _, sql := range []string{
		"CREATE VIEW visits_v AS SELECT * FROM visits",
		"CREATE TABLE visits_kid () INHERITS (visits)",
		"CREATE EXTENSION postgres_fdw",
		"CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'catalog_alias')",
		"CREATE FOREIGN TABLE remote_visits (id int, ssn text) SERVER loop OPTIONS (table_name 'visits')",
		"CREATE FUNCTION visits_noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
		"CREATE TRIGGER visits_tt AFTER INSERT ON visits REFERENCING NEW TABLE AS fresh FOR EACH STATEMENT EXECUTE FUNCTION visits_noop()",
		"CREATE FUNCTION all_visits() RETURNS SETOF visits LANGUAGE sql AS 'SELECT * FROM visits'",
		fmt.Sprintf("ALTER TABLE visits_v OWNER TO %s", pgcluster.ScramUser.Name),
		fmt.Sprintf("ALTER FOREIGN TABLE remote_visits OWNER TO %s", pgcluster.ScramUser.Name),
		fmt.Sprintf("ALTER TABLE visits_kid OWNER TO %s", pgcluster.ScramUser.Name),
		fmt.Sprintf("ALTER FUNCTION all_visits() OWNER TO %s", pgcluster.ScramUser.Name),
	} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn := env.conn(t)
	_, err := conn.Exec(ctx, "SELECT id FROM visits WHERE ssn = $1", secret("ssn"))
	refusedWith(t, err, "55000", "table public.visits is not ready for encryption: a second name bypasses phiproxy: ",
		"view public.visits_v reads it under a second name that phiproxy does not govern (column ssn_bidx is internal to phiproxy: it holds a blind index of PHI column public.visits.ssn): DROP VIEW public.visits_v;")
	// Through the alias itself: refused, nothing stored.
	for _, sql := range []string{
		"INSERT INTO visits_v (id, ssn) VALUES (1, $1)",
		"INSERT INTO visits_kid (id, ssn) VALUES (1, $1)",
		"INSERT INTO remote_visits (id, ssn) VALUES (1, $1)",
		"SELECT * FROM all_visits() WHERE ssn = $1",
	} {
		_, err := conn.Exec(ctx, sql, secret("ssn"))
		refusedWith(t, err, "55000", "a second name for table public.visits that phiproxy does not govern")
	}
	var n int
	if err := su.QueryRow(ctx, "SELECT count(*) FROM ONLY visits").Scan(&n); err != nil || n != 0 {
		t.Errorf("rows stored: %d, %v", n, err)
	}
	wantAliases := []string{"view public.visits_v", "table public.visits_kid inherits it", "foreign table public.remote_visits",
		"trigger visits_tt on public.visits", "function public.all_visits() takes or returns its rows"}
	code, body := env.readyz()
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d with aliases", code)
	}
	problems := env.check(t)
	var listed []string
	for _, p := range problems {
		if p.Kind != phi.ProblemAlias {
			t.Errorf("unexpected problem %+v", p)
		}
		listed = append(listed, p.String())
	}
	for _, a := range wantAliases {
		if !strings.Contains(body, a) {
			t.Errorf("/readyz %q lacks %q", body, a)
		}
		if !strings.Contains(strings.Join(listed, "\n"), a) {
			t.Errorf("check %q lacks %q", listed, a)
		}
	}

	// Removed through the proxy, with the DDL the problems name.
	for _, sql := range []string{
		"DROP VIEW visits_v",
		"ALTER TABLE visits_kid NO INHERIT visits",
		"DROP FOREIGN TABLE remote_visits",
		"DROP TRIGGER visits_tt ON visits",
		"DROP FUNCTION all_visits()",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	ssn := secret("ssn")
	if _, err := conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES (1, $1)", ssn); err != nil {
		t.Fatalf("insert once the aliases are gone: %v", err)
	}
	var id int
	if err := conn.QueryRow(ctx, "SELECT id FROM visits WHERE ssn = $1", ssn).Scan(&id); err != nil || id != 1 {
		t.Errorf("search: %d, %v", id, err)
	}
	if code, body := env.readyz(); code != http.StatusOK {
		t.Errorf("/readyz = %d %q once the aliases are gone", code, body)
	}
}

// deref prints a nullable text value.
func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return strconv.Quote(*s)
}

// TestCatalogGuardTransactions: the catalog guard joins the client's
// transaction without changing what it does: simple-protocol texts with
// BEGIN and COMMIT inside, explicit blocks rolled back, savepoints after
// an error, and pipelined batches.
func TestCatalogGuardTransactions(t *testing.T) {
	ctx := context.Background()
	env := startCatalogEnv(t, "catalog_tx", `
databases: [catalog_tx]
tables:
  - name: public.visits
    columns:
      note: { type: text }
`, "CREATE TABLE visits (id int PRIMARY KEY, note text)")
	direct := env.direct(t)
	count := func() int {
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM visits").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	simple := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol })
	// BEGIN and COMMIT inside one simple Query.
	if _, err := simple.Exec(ctx, fmt.Sprintf("BEGIN; INSERT INTO visits VALUES (1, '%s'); INSERT INTO visits VALUES (2, '%s'); COMMIT", secret("note"), secret("note"))); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Fatalf("rows after a committed text: %d", n)
	}
	// An explicit block rolled back, the guard's work with it.
	for _, sql := range []string{"BEGIN", fmt.Sprintf("INSERT INTO visits VALUES (3, '%s')", secret("note")), "ROLLBACK"} {
		if _, err := simple.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if n := count(); n != 2 {
		t.Fatalf("rows after ROLLBACK: %d", n)
	}
	// A savepoint after an error: the guarded statements run after
	// ROLLBACK TO, and COMMIT keeps them.
	for _, step := range []struct {
		sql     string
		failing bool
	}{
		{"BEGIN", false},
		{"SAVEPOINT s", false},
		{fmt.Sprintf("INSERT INTO visits VALUES (1, '%s')", secret("note")), true}, // duplicate key
		{"SELECT note FROM visits WHERE id = 1", true},                             // transaction aborted
		{"ROLLBACK TO SAVEPOINT s", false},
		{fmt.Sprintf("INSERT INTO visits VALUES (4, '%s')", secret("note")), false},
		{"COMMIT", false},
	} {
		_, err := simple.Exec(ctx, step.sql)
		if (err != nil) != step.failing {
			t.Fatalf("%.30s: %v", step.sql, err)
		}
	}
	if n := count(); n != 3 {
		t.Fatalf("rows after the savepoint: %d", n)
	}
	// A pipeline of extended batches, several guarded.
	ext := env.conn(t)
	batch := &pgx.Batch{}
	note := secret("note")
	batch.Queue("INSERT INTO visits VALUES ($1, $2)", 5, note)
	batch.Queue("SELECT note FROM visits WHERE id = $1", 5)
	batch.Queue("UPDATE visits SET note = $1 WHERE id = $2", note, 4)
	results := ext.SendBatch(ctx, batch)
	if _, err := results.Exec(); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := results.QueryRow().Scan(&got); err != nil || got != note {
		t.Fatalf("read in the batch: %q, %v", got, err)
	}
	if _, err := results.Exec(); err != nil {
		t.Fatal(err)
	}
	if err := results.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 4 {
		t.Fatalf("rows after the batch: %d", n)
	}
}
