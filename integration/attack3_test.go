package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// The third independent attack on issue 9 (branch attack3): one test per
// finding. Each sends secret() markers where a value is PHI and asserts
// that the proxy refuses the statement or answers as PostgreSQL would on
// the plaintext schema; the suite's leak check then searches the server
// log, the data files and the proxy logs for every marker.

// attackAliasPolicy governs a database of its own with one PHI table.
const attackAliasPolicy = `
databases: [%s]
tables:
  - name: public.visits
    columns:
      ssn: { type: text, blind_index: {} }
`

const attackAliasSchema = "CREATE TABLE visits (id int PRIMARY KEY, ssn text, ssn_bidx text)"

// attackAliasEnv starts a governed database db whose visits table gets the
// second names in ddl, created directly on the server (outside phiproxy)
// and owned by the application's role.
func attackAliasEnv(t *testing.T, db string, ddl ...string) *catalogEnv {
	t.Helper()
	env := startCatalogEnv(t, db, sprintf(attackAliasPolicy, db), attackAliasSchema)
	direct := env.direct(t)
	for _, sql := range ddl {
		if _, err := direct.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return env
}

// storedRows counts the rows of visits, over a direct connection.
func storedRows(t *testing.T, env *catalogEnv) int {
	t.Helper()
	var n int
	if err := env.direct(t).QueryRow(context.Background(), "SELECT count(*) FROM ONLY visits").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Finding 1 (leak). A statement that names a second name of a policy
// table is refused by a whole-word search for the alias's name in the
// text; a Unicode-escaped identifier (U&"visits\005fv") spells the same
// name without its letters, so an INSERT through a view created outside
// phiproxy stores the plaintext in the policy table.
func TestAttack3AliasUnicodeName(t *testing.T) {
	env := attackAliasEnv(t, "attack3_uescape", "CREATE VIEW visits_v AS SELECT * FROM visits")
	ctx := context.Background()
	for _, mode := range reviewModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			for _, sql := range []string{
				`INSERT INTO U&"visits\005fv" (id, ssn) VALUES (1, $1)`,
				`INSERT INTO U&"visits!005fv" UESCAPE '!' (id, ssn) VALUES (2, $1)`,
				`INSERT INTO public.U&"\0076isits_v" (id, ssn) VALUES (3, $1)`,
			} {
				_, err := conn.Exec(ctx, sql, secret("uescape-alias"))
				refusedWith(t, err, "55000", "a Unicode-escaped identifier")
			}
		})
	}
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through the view", n)
	}
}

// Finding 2 (leak). The catalog query finds the relations that read a
// policy table directly (a view's rule depends on its table); a view over
// such a view reads the policy table too, under a name the catalog never
// lists, and INSERT through it stores plaintext.
func TestAttack3NestedView(t *testing.T) {
	env := attackAliasEnv(t, "attack3_nested",
		"CREATE VIEW visits_v AS SELECT * FROM visits",
		"CREATE VIEW visits_vv AS SELECT * FROM visits_v",
		"CREATE TABLE visits_kid () INHERITS (visits)",
		"CREATE TABLE visits_grandkid () INHERITS (visits_kid)")
	ctx := context.Background()
	for _, mode := range reviewModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			for _, sql := range []string{
				"INSERT INTO visits_vv (id, ssn) VALUES (1, $1)",
				"INSERT INTO visits_grandkid (id, ssn) VALUES (2, $1)",
			} {
				_, err := conn.Exec(ctx, sql, secret("nested-alias"))
				refusedWith(t, err, "55000", "a second name for table public.visits")
			}
		})
	}
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through the nested aliases", n)
	}
	var n int
	if err := env.direct(t).QueryRow(ctx, "SELECT count(*) FROM visits").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d rows stored in the inheritance tree (%v)", n, err)
	}
	// The check lists each, with the DDL that detaches it from the alias
	// it reaches the table through.
	var listed []string
	for _, p := range env.check(t) {
		listed = append(listed, p.String())
	}
	all := strings.Join(listed, "\n")
	for _, want := range []string{
		"view public.visits_v", "view public.visits_vv", "DROP VIEW public.visits_vv;",
		"table public.visits_kid inherits it", "ALTER TABLE public.visits_grandkid NO INHERIT public.visits_kid;",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("check %q lacks %q", listed, want)
		}
	}
}

// Finding 3 (leak). A session learns the second names of its database
// when it reads the catalog; one created by another connection afterwards
// is never seen by that session (statements on the alias name no policy
// table, so nothing makes the session check its catalog), nor for 10 s by
// new sessions, and INSERT through it stores plaintext.
//
// Not fixed: closing it needs the catalog guard (or a check like it) in
// front of every batch in a governed database, including the texts that
// name no policy table and are relayed unparsed, with the second-name
// search in the guard. That costs every statement of every application
// and makes statements PostgreSQL refuses in a pipeline (VACUUM, CREATE
// DATABASE, CREATE INDEX CONCURRENTLY on other tables) fail, so it is a
// design decision (an event trigger installed by `phiproxy schema` that
// refuses creating second names is the other way).
func TestAttack3AliasCreatedLater(t *testing.T) {
	env := attackAliasEnv(t, "attack3_later")
	ctx := context.Background()
	for i, mode := range reviewModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			if _, err := conn.Exec(ctx, "SELECT id FROM visits WHERE ssn = $1", secret("later")); err != nil {
				t.Fatal(err)
			}
			view := sprintf("visits_later%d", i)
			if _, err := env.direct(t).Exec(ctx, "CREATE VIEW "+view+" AS SELECT * FROM visits"); err != nil {
				t.Fatal(err)
			}
			_, err := conn.Exec(ctx, "INSERT INTO "+view+" (id, ssn) VALUES ($1, $2)", 10+i, secret("later-alias"))
			refusedWith(t, err, "55000")
			fresh := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			_, err = fresh.Exec(ctx, "INSERT INTO "+view+" (id, ssn) VALUES ($1, $2)", 20+i, secret("later-alias"))
			refusedWith(t, err, "55000")
			if _, err := env.direct(t).Exec(ctx, "DROP VIEW "+view); err != nil {
				t.Fatal(err)
			}
			// Inside a transaction block, where the server takes in other
			// sessions' catalog changes only when asked to, and under
			// REPEATABLE READ, whose snapshot predates the view.
			tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "SELECT id FROM visits WHERE ssn = $1", secret("later")); err != nil {
				t.Fatal(err)
			}
			if _, err := env.direct(t).Exec(ctx, "CREATE VIEW "+view+"_tx AS SELECT * FROM visits"); err != nil {
				t.Fatal(err)
			}
			_, err = tx.Exec(ctx, "INSERT INTO "+view+"_tx (id, ssn) VALUES ($1, $2)", 30+i, secret("later-alias-tx"))
			refusedWith(t, err, "55000")
			tx.Rollback(ctx)
			if _, err := env.direct(t).Exec(ctx, "DROP VIEW "+view+"_tx"); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through a view created after the catalog read", n)
	}
}

// A database whose policy tables lack the catalog epoch's triggers refuses
// what it cannot check (every statement that may name a relation), says
// why with the DDL, and is not ready; installing them serves it again.
func TestAttack3NoEpoch(t *testing.T) {
	env := attackAliasEnv(t, "attack3_noepoch")
	ctx := context.Background()
	su := connect(t, cluster.SuperuserDSN("attack3_noepoch"))
	if _, err := su.Exec(ctx, "DROP EVENT TRIGGER phiproxy_catalog_drop"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range reviewModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			_, err := conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES ($1, $2)", 1, secret("noepoch"))
			refusedWith(t, err, "55000", "catalog triggers")
			_, err = conn.Exec(ctx, "SELECT count(*) FROM pg_class WHERE relname = $1", "visits")
			refusedWith(t, err, "55000", "catalog triggers")
			if _, err := conn.Exec(ctx, "SET application_name = 'x'"); err != nil {
				t.Errorf("SET: %v", err)
			}
		})
	}
	if code, body := env.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "catalog triggers") {
		t.Errorf("/readyz = %d %q, want 503 naming the triggers", code, body)
	}
	if ps := env.check(t); len(ps) == 0 || ps[0].Kind != phi.ProblemEpoch {
		t.Errorf("check = %v, want the epoch problem", ps)
	}
	for _, s := range policy.EpochDDL() {
		if _, err := su.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM pg_class WHERE relname = $1", "visits"); err != nil {
		t.Errorf("after installing the triggers: %v", err)
	}
}

// Finding 4 (wrong answer). Statements that PostgreSQL refuses inside a
// pipeline or transaction block (VACUUM, CREATE INDEX CONCURRENTLY) fail
// through phiproxy on a policy table when the catalog guard runs in front
// of them in the same implicit transaction.
func TestAttack3GuardPipelineOnly(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	for _, mode := range reviewModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := reviewConn(t, p, mode)
			for _, sql := range []string{
				"VACUUM patients",
				"VACUUM (ANALYZE) clinical_notes",
				"CREATE INDEX CONCURRENTLY attack3_ix ON patients (created_at)",
				"DROP INDEX CONCURRENTLY attack3_ix",
				"REINDEX TABLE CONCURRENTLY insurance",
			} {
				if _, err := conn.Exec(ctx, sql); err != nil {
					t.Errorf("%s: %v", sql, err)
				}
			}
		})
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// Finding 5 (leak). PostgreSQL truncates the database name of a startup
// message to 63 bytes (NAMEDATALEN - 1) before looking it up; phiproxy
// compared the name as sent with policy.databases, so a governed database
// whose name is 63 bytes long, asked for with more bytes after them, was
// served untouched: plaintext stored in its PHI columns.
func TestAttack3LongDatabaseName(t *testing.T) {
	db := "attack3_" + strings.Repeat("x", 63-len("attack3_"))
	env := attackAliasEnv(t, db)
	ctx := context.Background()
	for i, suffix := range []string{"", "_and_more", "\u00e9"} {
		conn := connect(t, env.p.dsn(pgcluster.ScramUser, db+suffix))
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil || got != db {
			t.Fatalf("connected to %q (%v)", got, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO visits (id, ssn) VALUES ($1, $2)", i, secret("long-db")); err != nil {
			t.Fatalf("insert through %q: %v", db+suffix, err)
		}
	}
	rows, err := env.direct(t).Query(ctx, "SELECT ssn FROM visits")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(stored) != 3 {
		t.Fatalf("%d rows (%v)", len(stored), err)
	}
	for _, v := range stored {
		if !crypto.IsCiphertext([]byte(v)) {
			t.Errorf("visits.ssn holds plaintext %q", v)
		}
	}
}

// Finding 6 (leak). A statement naming a second name is found by a
// whole-word search for the name; PostgreSQL cuts identifiers to 63
// bytes, so a view with a 63-byte name was reached by that name with more
// characters appended, and INSERT through it stored plaintext.
func TestAttack3AliasLongName(t *testing.T) {
	view := "visits_" + strings.Repeat("v", 63-len("visits_"))
	env := attackAliasEnv(t, "attack3_longalias", "CREATE VIEW "+view+" AS SELECT * FROM visits")
	ctx := context.Background()
	for _, mode := range reviewModes {
		t.Run(mode.String(), func(t *testing.T) {
			conn := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			_, err := conn.Exec(ctx, "INSERT INTO "+view+"_more (id, ssn) VALUES (1, $1)", secret("long-alias"))
			refusedWith(t, err, "55000", "a second name for table public.visits")
		})
	}
	if n := storedRows(t, env); n != 0 {
		t.Errorf("%d rows stored through the view", n)
	}
}
