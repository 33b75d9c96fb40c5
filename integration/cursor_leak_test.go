package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
)

// TestCursorLeak: values in a DECLARE's predicate (literals in the simple
// protocol, parameters in the extended one, a refused DECLARE's, one in a
// DECLARE the server then rejects) and in an UPDATE ... WHERE CURRENT OF
// never reach the server: neither its log nor its files hold them.
func TestCursorLeak(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	email, ssn := secret("declare-email")+"@example.org", secret("declare-ssn")
	conn := phiConn(t, p)
	var id int64
	if err := conn.QueryRow(ctx, "INSERT INTO patients (email, ssn, city) VALUES ($1, $2, $3) RETURNING id", email, ssn, secret("declare-city")).Scan(&id); err != nil {
		t.Fatal(err)
	}
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	literal, param, refused, rejected, updated := secret("declare-literal"), secret("declare-param"), secret("declare-refused"), secret("declare-rejected"), secret("declare-update")
	steps := []struct {
		msgs []pgproto3.FrontendMessage
		want string // a message the answers must hold
	}{
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN; DECLARE c CURSOR FOR SELECT id FROM patients WHERE email IN ('" + literal + "', '" + email + "')"}}, "DECLARE CURSOR"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "FETCH ALL FROM c"}}, `"text":"` + strconv.FormatInt(id, 10) + `"`},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "DECLARE c CURSOR FOR SELECT id FROM patients WHERE ssn = '" + rejected + "'"}}, `"Code":"42P03"`},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "ROLLBACK"}}, "ROLLBACK"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "DECLARE r CURSOR WITH HOLD FOR SELECT * FROM patients WHERE city = '" + refused + "'"}}, `"Code":"0A000"`},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}, "BEGIN"},
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Query: `DECLARE "p" CURSOR FOR SELECT id, email FROM patients WHERE email = $1 OR ssn = $2 FOR UPDATE`},
			&pgproto3.Bind{Parameters: [][]byte{[]byte(param), []byte(ssn)}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}}, "DECLARE CURSOR"},
		{[]pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Sync{}}, `"Name":"email","TableOID"`},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: `FETCH 1 FROM "p"`}}, `"text":"` + email + `"`},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: `UPDATE patients SET city = '` + updated + `' WHERE CURRENT OF "p" RETURNING city`}}, `"text":"` + updated + `"`},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "COMMIT"}}, "COMMIT"},
	}
	for i, st := range steps {
		out := strings.Join(exchange(t, hc, st.msgs...), "\n")
		if !strings.Contains(out, st.want) {
			t.Fatalf("step %d: want %s in:\n%s", i, st.want, out)
		}
	}
	var city string
	if err := phiDirect(t).QueryRow(ctx, "SELECT city FROM patients WHERE id = $1", id).Scan(&city); err != nil {
		t.Fatal(err)
	}
	if !crypto.IsCiphertext([]byte(city)) {
		t.Fatalf("the city written WHERE CURRENT OF is stored as %q", city)
	}
	if _, err := connect(t, cluster.SuperuserDSN("postgres")).Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	found, err := findPlaintext(cluster, []string{email, ssn, literal, param, refused, rejected, updated}, phiLogs.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Fatalf("plaintext reached the server or a log:\n%s", strings.Join(found, "\n"))
	}
}

const cursorDriftPolicy = `
databases: [cursor_drift]
tables:
  - name: public.visits
    columns:
      ssn:  { type: text, blind_index: {} }
      note: { type: text }
`

// TestCursorCatalogDrift: a WITH HOLD cursor outlives its transaction, and
// its rows keep the table OID and attribute numbers of its DECLARE. When
// another connection recreates the table, the session's catalog (read
// again once its guard notices) no longer knows them: a FETCH of the old
// cursor is refused, never answered with ciphertext; declared again, the
// cursor reads the new table.
func TestCursorCatalogDrift(t *testing.T) {
	ctx := context.Background()
	const table = "CREATE TABLE visits (id int PRIMARY KEY, ssn text, ssn_bidx text, note text)"
	env := startCatalogEnv(t, "cursor_drift", cursorDriftPolicy, table)
	direct := env.direct(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			if _, err := direct.Exec(ctx, "DROP TABLE visits; "+table); err != nil {
				t.Fatal(err)
			}
			a := env.conn(t, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
			note := secret("drift-note")
			if _, err := a.Exec(ctx, "INSERT INTO visits VALUES (1, $1, $2)", secret("drift-ssn"), note); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Exec(ctx, "DECLARE h CURSOR WITH HOLD FOR SELECT id, note FROM visits"); err != nil {
				t.Fatal(err)
			}
			var got string
			var n int
			if err := a.QueryRow(ctx, "FETCH ABSOLUTE 1 FROM h").Scan(&n, &got); err != nil || got != note {
				t.Fatalf("FETCH before the change: %q, %v", got, err)
			}
			if _, err := direct.Exec(ctx, "DROP TABLE visits; "+table+"; INSERT INTO visits VALUES (2, NULL, NULL, NULL)"); err != nil {
				t.Fatal(err)
			}
			// A statement on the table: its guard sees the change and the
			// session reads the catalog again (refused once, then run).
			if _, err := a.Exec(ctx, "SELECT note FROM visits WHERE id = 2"); sqlState(err) == "55000" {
				_, err = a.Exec(ctx, "SELECT note FROM visits WHERE id = 2")
				if err != nil {
					t.Fatal(err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			err := a.QueryRow(ctx, "FETCH ABSOLUTE 1 FROM h").Scan(&n, &got)
			if sqlState(err) != "0A000" {
				t.Fatalf("FETCH from the cursor of the dropped table: %q, %v; want refused (0A000)", got, err)
			}
			for _, sql := range []string{"CLOSE h", "DECLARE h CURSOR WITH HOLD FOR SELECT id, note FROM visits"} {
				if _, err := a.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			var note2 *string
			if err := a.QueryRow(ctx, "FETCH 1 FROM h").Scan(&n, &note2); err != nil || n != 2 || note2 != nil {
				t.Fatalf("FETCH from the cursor declared again: %d %v, %v", n, note2, err)
			}
			if _, err := a.Exec(ctx, "CLOSE h"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
