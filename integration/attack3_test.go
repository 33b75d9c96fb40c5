package integration

import (
	"context"
	"fmt"
	"testing"

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
