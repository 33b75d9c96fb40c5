package integration

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
)

// liveCatalog reads the policy tables of e's database as `phiproxy
// schema` does (policy.CatalogSQL, all of it: indexes and constraints
// too).
func (e *opsEnv) liveCatalog(t *testing.T) policy.LiveCatalog {
	t.Helper()
	rows, err := e.direct(t).Query(context.Background(), policy.CatalogSQL(e.policy), pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	var raw [][]byte
	for rows.Next() {
		raw = append(raw, append([]byte(nil), rows.RawValues()[0]...))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	live, err := policy.ParseCatalog(raw)
	if err != nil {
		t.Fatal(err)
	}
	return live
}

// TestRefusalMatchesSchema (issue 11, item 1): for each way a table can
// be unfit to serve, the 55000 refusal through the proxy gives the same
// problems, messages and DDL as `phiproxy schema` and `phiproxy check`
// (policy.Diff's Blocks problems): the message is those problems, the
// script schema prints for the table's first step is theirs, and running
// that script makes the proxy serve the table.
func TestRefusalMatchesSchema(t *testing.T) {
	ctx := context.Background()
	e := newOpsEnv(t, "ops_refusal", rotationPolicy)
	p := e.startProxy(t)
	const indexes = "CREATE INDEX ON people (email_bidx); CREATE INDEX ON people (email_bidx_ci);"
	cases := []struct {
		name, ddl string // ddl creates people ("": it is missing)
		blocks    int    // how many problems refuse it
	}{
		{"missing table", "", 1},
		{"missing PHI column", "CREATE TABLE people (id bigserial PRIMARY KEY, email text, email_bidx text, email_bidx_ci text, photo bytea);" + indexes, 1},
		{"storage type", "CREATE TABLE people (id bigserial PRIMARY KEY, name varchar(40), email text, email_bidx text, email_bidx_ci text, photo bytea);" + indexes, 1},
		{"bytea column as text", "CREATE TABLE people (id bigserial PRIMARY KEY, name text, email text, email_bidx text, email_bidx_ci text, photo text);" + indexes, 1},
		{"missing blind-index column", "CREATE TABLE people (id bigserial PRIMARY KEY, name text, email text, email_bidx text, photo bytea); CREATE INDEX ON people (email_bidx);", 1},
		{"blind-index column type", "CREATE TABLE people (id bigserial PRIMARY KEY, name text, email text, email_bidx bytea, email_bidx_ci text, photo bytea);" + indexes, 1},
		{"generated PHI column", "CREATE TABLE people (id bigserial PRIMARY KEY, name text GENERATED ALWAYS AS (email) STORED, email text, email_bidx text, email_bidx_ci text, photo bytea);" + indexes, 1},
		{"two at once", "CREATE TABLE people (id bigserial PRIMARY KEY, name integer, email text, email_bidx text, photo bytea); CREATE INDEX ON people (email_bidx);", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.psqlFile(t, "DROP TABLE IF EXISTS people;\n"+tc.ddl+"\n")
			var blocking []policy.Problem
			var want []string
			for _, pr := range policy.Diff(e.policy, e.liveCatalog(t)) {
				if pr.Blocks {
					blocking = append(blocking, pr)
					want = append(want, pr.Msg+": "+strings.Join(pr.DDL, " "))
				}
			}
			if len(blocking) != tc.blocks {
				t.Fatalf("policy.Diff: %d problems block, want %d: %v", len(blocking), tc.blocks, want)
			}

			conn := connect(t, p.dsn(pgcluster.ScramUser, e.db))
			_, err := conn.Exec(ctx, "SELECT count(*) FROM people")
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "55000" {
				t.Fatalf("through the proxy: %v, want 55000", err)
			}
			if got, wantMsg := pe.Message, "phiproxy: table public.people is not ready for encryption: "+strings.Join(want, " "); got != wantMsg {
				t.Errorf("55000 message\n got: %s\nwant: %s", got, wantMsg)
			}
			if !strings.Contains(pe.Hint, "phiproxy schema") {
				t.Errorf("55000 hint %q does not point to phiproxy schema", pe.Hint)
			}

			schema := e.run(t, "schema", "--config", e.config)
			script := policy.Script(blocking)
			if schema.code != 1 || !strings.Contains(schema.stdout, script) {
				t.Errorf("phiproxy schema does not print the refusal's step:\n%s\n--- want it to contain\n%s", schema, script)
			}
			check := e.run(t, "check", "--config", e.config)
			for _, pr := range blocking {
				what := pr.Table
				if pr.Column != "" {
					what += "." + pr.Column
				}
				if line := "database " + e.db + ": " + what + ": " + pr.Msg; check.code != 1 || !strings.Contains(check.stdout, line) {
					t.Errorf("phiproxy check lacks %q: %s", line, check)
				}
			}

			// The script makes the table servable.
			e.psqlFile(t, script)
			if _, err := connect(t, p.dsn(pgcluster.ScramUser, e.db)).Exec(ctx, "SELECT count(*) FROM people"); err != nil {
				t.Errorf("after the step-1 script: %v", err)
			}
		})
	}
}
