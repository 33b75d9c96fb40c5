package integration

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// cursorScript is a sequence of statements on a cursor, with {patients}
// and {types} standing for the encrypted tables or their twins, and $1 for
// a parameter.
type cursorScript struct {
	name  string
	stmts []string
	args  map[int][]any // arguments of stmts[i]
}

func cursorScripts(env *cursorEnv) []cursorScript {
	ids, tids := idList(env.ids), idList(env.types)
	return []cursorScript{
		{name: "scroll", stmts: []string{
			"BEGIN",
			"DECLARE c SCROLL CURSOR FOR SELECT * FROM {patients} WHERE id IN " + ids + " ORDER BY id",
			"FETCH 2 FROM c",
			"MOVE ABSOLUTE 0 IN c",
			"FETCH ALL FROM c",
			"FETCH BACKWARD 1 FROM c",
			"FETCH ABSOLUTE -1 FROM c",
			"FETCH RELATIVE -2 FROM c",
			"MOVE FIRST IN c",
			"FETCH PRIOR FROM c",
			"FETCH NEXT FROM c",
			"CLOSE c",
			"COMMIT",
		}},
		{name: "with hold across commit", stmts: []string{
			"BEGIN",
			"DECLARE h NO SCROLL CURSOR WITH HOLD FOR SELECT first_name, email, date_of_birth, additional_info FROM {patients} WHERE email = $1",
			"COMMIT",
			"FETCH ALL FROM h",
			"FETCH ALL FROM h",
			"CLOSE h",
		}, args: map[int][]any{1: {env.email(2)}}},
		{name: "types", stmts: []string{
			"BEGIN",
			"DECLARE t CURSOR FOR SELECT * FROM {types} WHERE id IN " + tids + " ORDER BY id",
			"FETCH 1 FROM t",
			"FETCH FORWARD 5 FROM t",
			"CLOSE ALL",
			"ROLLBACK",
		}},
		{name: "for update and where current of", stmts: []string{
			"BEGIN",
			"DECLARE u CURSOR FOR SELECT id, first_name, email FROM {patients} WHERE id IN " + ids + " ORDER BY id FOR UPDATE",
			"FETCH 1 FROM u",
			"UPDATE {patients} SET first_name = 'Renamed', email = $1 WHERE CURRENT OF u RETURNING first_name, email",
			"FETCH 1 FROM u",
			"DELETE FROM {patients} WHERE CURRENT OF u RETURNING first_name",
			"SELECT first_name FROM {patients} WHERE email = $1",
			"ROLLBACK",
		}, args: map[int][]any{3: {"renamed." + env.tag + "@example.org"}, 6: {"renamed." + env.tag + "@example.org"}}},
	}
}

// TestCursorPgx runs the cursor scripts with pgx in each of its query
// modes (the simple protocol, and prepared FETCHes whose result formats
// pgx gives per column), through the proxy and on the twins directly.
func TestCursorPgx(t *testing.T) {
	p := startPHIProxy(t)
	env := setupCursors(t, p)
	ctx := context.Background()
	run := func(t *testing.T, conn *pgx.Conn, tables *strings.Replacer, sc cursorScript) []rowsResult {
		var out []rowsResult
		for i, s := range sc.stmts {
			out = append(out, queryAll(ctx, conn, tables.Replace(s), sc.args[i]...))
		}
		return out
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement,
		pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec} {
		opt := func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode }
		for _, sc := range cursorScripts(env) {
			t.Run(fmt.Sprintf("%v/%s", mode, sc.name), func(t *testing.T) {
				plain := run(t, connect(t, directDSN(pgcluster.ScramUser, phiDatabase), opt),
					strings.NewReplacer("{patients}", "cursor_patients_plain", "{types}", "cursor_types_plain"), sc)
				enc := run(t, phiConn(t, p, opt), strings.NewReplacer("{patients}", "patients", "{types}", "phi_types"), sc)
				if diff := cmp.Diff(plain, enc, cmpOpts); diff != "" {
					t.Fatalf("results differ (-plaintext +proxy):\n%s", diff)
				}
			})
		}
	}
}

// TestCursorLibPQ runs the cursor scripts with lib/pq through
// database/sql (a simple Query for each statement without arguments).
func TestCursorLibPQ(t *testing.T) {
	p := startPHIProxy(t)
	env := setupCursors(t, p)
	run := func(t *testing.T, dsn string, tables *strings.Replacer, sc cursorScript) []string {
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := db.Conn(ctx) // one session for the whole script
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var out []string
		for i, s := range sc.stmts {
			rows, err := conn.QueryContext(ctx, tables.Replace(s), sc.args[i]...)
			if err != nil {
				out = append(out, "error: "+err.Error())
				continue
			}
			cols, _ := rows.ColumnTypes()
			var head []string
			for _, c := range cols {
				head = append(head, c.Name()+":"+c.DatabaseTypeName())
			}
			out = append(out, strings.Join(head, " "))
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for j := range vals {
					ptrs[j] = &vals[j]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				out = append(out, fmt.Sprintf("%q", vals))
			}
			if err := rows.Err(); err != nil {
				out = append(out, "error: "+err.Error())
			}
			rows.Close()
		}
		return out
	}
	for _, sc := range cursorScripts(env) {
		t.Run(sc.name, func(t *testing.T) {
			plain := run(t, directDSN(pgcluster.ScramUser, phiDatabase),
				strings.NewReplacer("{patients}", "cursor_patients_plain", "{types}", "cursor_types_plain"), sc)
			enc := run(t, p.dsn(pgcluster.ScramUser, phiDatabase), strings.NewReplacer("{patients}", "patients", "{types}", "phi_types"), sc)
			if diff := cmp.Diff(plain, enc); diff != "" {
				t.Fatalf("results differ (-plaintext +proxy):\n%s", diff)
			}
		})
	}
}

// TestCursorPsql: psql's FETCH_COUNT reads a SELECT through a cursor of
// its own (BEGIN; DECLARE _psql_cursor NO SCROLL CURSOR FOR ...; FETCH
// FORWARD n; CLOSE; COMMIT), and a script declares, fetches, moves and
// closes one; the output is psql's on the plaintext twins.
func TestCursorPsql(t *testing.T) {
	p := startPHIProxy(t)
	env := setupCursors(t, p)
	ids, tids := idList(env.ids), idList(env.types)
	for _, args := range [][]string{
		{"-v", "FETCH_COUNT=2", "-c", "SELECT * FROM {patients} WHERE id IN " + ids + " ORDER BY id"},
		{"-v", "FETCH_COUNT=1", "-c", "SELECT * FROM {types} WHERE id IN " + tids + " ORDER BY id"},
		{"-c", "BEGIN", "-c", "DECLARE c SCROLL CURSOR FOR SELECT first_name, email, date_of_birth FROM {patients} WHERE id IN " + ids + " ORDER BY id",
			"-c", "FETCH 2 FROM c", "-c", "MOVE LAST IN c", "-c", "FETCH BACKWARD 3 FROM c", "-c", "CLOSE c", "-c", "COMMIT"},
	} {
		plain, enc := make([]string, len(args)), make([]string, len(args))
		for i, a := range args {
			plain[i] = strings.NewReplacer("{patients}", "cursor_patients_plain", "{types}", "cursor_types_plain").Replace(a)
			enc[i] = strings.NewReplacer("{patients}", "patients", "{types}", "phi_types").Replace(a)
		}
		want := runPsql(t, directDSN(pgcluster.ScramUser, phiDatabase), plain...)
		got := runPsql(t, p.dsn(pgcluster.ScramUser, phiDatabase), enc...)
		if want.Exit != 0 || got != want {
			t.Fatalf("psql %q differs\nplaintext: %+v\nproxy:     %+v", args, want, got)
		}
	}
}
