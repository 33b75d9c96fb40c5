package integration

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// Error precedence (issue 14): a statement with an invalid PHI value and
// another error fails with the error PostgreSQL gives on the plaintext
// schema, whichever comes first in its analysis (WHERE before UPDATE's
// SET list, a cast before the values of its row are assigned, parameters
// in order at Bind), and the invalid value never reaches the server. Each
// statement is sent through the proxy to phi_types and directly to its
// plaintext twin; the values here are no secrets (they reach the server
// log on the direct side), the leak test sends secret ones.

// precPlainSchema holds the plaintext twin of phi_types.
const precPlainSchema = "prec_plain"

var precPlainOnce struct {
	sync.Once
	err error
}

// precPlainDirect connects straight to PostgreSQL with precPlainSchema
// first in search_path, creating the twin once.
func precPlainDirect(t *testing.T) *pgx.Conn {
	t.Helper()
	setupPHI(t)
	precPlainOnce.Do(func() {
		_, precPlainOnce.err = phiDirect(t).Exec(context.Background(), `CREATE SCHEMA `+precPlainSchema+`;
CREATE TABLE `+precPlainSchema+`.phi_types (
  id serial PRIMARY KEY,
  v_text text, v_varchar varchar, v_int4 int4, v_int8 int8, v_numeric numeric, v_bool bool, v_date date,
  v_timestamptz timestamptz, v_uuid uuid, v_jsonb jsonb, v_bytea bytea)`)
	})
	if precPlainOnce.err != nil {
		t.Fatalf("plaintext twin: %v", precPlainOnce.err)
	}
	return connect(t, directDSN(pgcluster.ScramUser, phiDatabase)+" search_path="+precPlainSchema)
}

// precedenceCases fail on both sides; want is PostgreSQL's SQLSTATE on the
// plaintext twin (checked too, so that a case tests what it says).
var precedenceCases = []struct{ name, sql, want string }{
	// UPDATE analyzes FROM, WHERE and RETURNING before SET; in SET, the
	// casts of every item before the values are assigned, in order.
	{"update where before set", `UPDATE phi_types SET v_date = 'not a date' WHERE id = 'abc'`, "22P02"},
	{"update where phi before set", `UPDATE phi_types SET v_date = 'not a date' WHERE v_int4 = '2147483648'`, "22003"},
	{"update returning before set", `UPDATE phi_types SET v_date = 'not a date' WHERE id = 1 RETURNING 'abc'::int4`, "22P02"},
	{"update set order", `UPDATE phi_types SET v_int4 = 'abc', v_date = '2020-13-01' WHERE id = 1`, "22P02"},
	{"update set order reversed", `UPDATE phi_types SET v_date = '2020-13-01', v_int4 = 'abc' WHERE id = 1`, "22008"},
	{"update plain set before", `UPDATE phi_types SET id = 'abc', v_date = 'x' WHERE id = 1`, "22P02"},
	{"update plain set after", `UPDATE phi_types SET v_date = 'x', id = 'abc' WHERE id = 1`, "22007"},
	{"update cast after wins", `UPDATE phi_types SET v_date = 'x', id = 'abc'::int4 WHERE id = 1`, "22P02"},
	{"update phi cast wins", `UPDATE phi_types SET id = 'abc', v_date = 'x'::date WHERE id = 1`, "22007"},
	{"update phi cast after wins", `UPDATE phi_types SET v_int4 = 'abc', v_date = 'x'::date WHERE id = 1`, "22007"},
	{"update bytea", `UPDATE phi_types SET v_bytea = '\xzz', id = 'abc' WHERE id = 1`, "22023"},
	{"update type error", `UPDATE phi_types SET v_date = 5, id = 'abc' WHERE id = 1`, "42804"},
	{"update type error after where", `UPDATE phi_types SET v_date = 5 WHERE id = 'abc'`, "22P02"},
	{"update planned", `UPDATE phi_types SET v_int4 = 99999999999 WHERE id = 1/0`, "22003"},
	{"update planned after analysis", `UPDATE phi_types SET v_int4 = 99999999999 WHERE id = 'abc'`, "22P02"},
	// INSERT: each row's expressions, then its values assigned in order,
	// row after row; then ON CONFLICT, then RETURNING.
	{"insert plain before", `INSERT INTO phi_types (id, v_date) VALUES ('abc', 'x')`, "22P02"},
	{"insert plain after", `INSERT INTO phi_types (v_date, id) VALUES ('x', 'abc')`, "22007"},
	{"insert cast after", `INSERT INTO phi_types (v_date, id) VALUES ('x', 'abc'::int4)`, "22P02"},
	{"insert multi first row", `INSERT INTO phi_types (id, v_date) VALUES (1, 'x'), ('abc', '2020-01-01')`, "22007"},
	{"insert multi plain row first", `INSERT INTO phi_types (id, v_date) VALUES ('abc', '2020-01-01'), (1, 'x')`, "22P02"},
	{"insert multi second row plain before", `INSERT INTO phi_types (id, v_date) VALUES (1, '2020-01-01'), ('abc', 'x')`, "22P02"},
	{"insert multi second row plain after", `INSERT INTO phi_types (v_date, id) VALUES ('2020-01-01', 1), ('x', 'abc')`, "22007"},
	{"insert multi second row cast after", `INSERT INTO phi_types (v_date, id) VALUES ('2020-01-01', 1), ('x', 'abc'::int4)`, "22P02"},
	{"insert multi third row", `INSERT INTO phi_types (id, v_int4, v_uuid) VALUES (1, '1', NULL), (2, '2', NULL), ('abc', 'x', 'y')`, "22P02"},
	{"insert multi two phi", `INSERT INTO phi_types (id, v_int4, v_uuid) VALUES (1, '1', NULL), (2, 'x', 'y'), (3, 'z', 'w')`, "22P02"},
	{"insert positional", `INSERT INTO phi_types VALUES ('abc', 't', 'v', 'bad')`, "22P02"},
	{"insert positional phi first", `INSERT INTO phi_types VALUES (1, 't', 'v', 'bad', 'abc'::int8)`, "22P02"},
	{"insert positional second row", `INSERT INTO phi_types VALUES (1, 't', 'v', '1'), ('abc', 't', 'v', 'bad')`, "22P02"},
	{"insert bytea", `INSERT INTO phi_types (id, v_bytea) VALUES (1, '\x0'), ('abc', '\x00')`, "22023"},
	{"insert bytea second row", `INSERT INTO phi_types (id, v_bytea) VALUES (1, '\x00'), ('abc', '\x0')`, "22P02"},
	{"insert values before on conflict", `INSERT INTO phi_types (id, v_date) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET id = 'abc'`, "22007"},
	{"insert on conflict set", `INSERT INTO phi_types (id, v_int4) VALUES ('abc', 5) ON CONFLICT (id) DO UPDATE SET v_date = 'x'`, "22P02"},
	{"insert on conflict set phi", `INSERT INTO phi_types (id, v_int4) VALUES (1, 5) ON CONFLICT (id) DO UPDATE SET v_date = 'x', id = 'abc'`, "22007"},
	{"insert on conflict set before where", `INSERT INTO phi_types (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET v_date = 'x' WHERE phi_types.id = 'abc'`, "22007"},
	{"insert multi later row and on conflict", `INSERT INTO phi_types (id, v_jsonb, v_bool) VALUES (1, NULL, 'true'), (2, '[1]', 'true'), ('abc', 'NaN', 't') ON CONFLICT (id) DO UPDATE SET v_int4 = ''`, "22P02"},
	{"insert multi later row phi and on conflict", `INSERT INTO phi_types (id, v_jsonb, v_bool) VALUES (1, NULL, 'true'), (2, '[1]', 'true'), (3, 'NaN', 't') ON CONFLICT (id) DO UPDATE SET v_int4 = ''`, "22P02"},
	{"insert returning after", `INSERT INTO phi_types (id, v_uuid) VALUES (1, 'nope') RETURNING 'abc'::int4`, "22P02"},
	// DELETE and SELECT: comparisons in the order they are written.
	{"delete phi first", `DELETE FROM phi_types WHERE v_date = 'x' AND id = 'abc'`, "22007"},
	{"delete plain first", `DELETE FROM phi_types WHERE id = 'abc' AND v_date = 'x'`, "22P02"},
	{"select in list", `SELECT id FROM phi_types WHERE v_uuid IN ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'nope') AND id = 'abc'`, "22P02"},
	{"select plain first", `SELECT id FROM phi_types WHERE id = 'abc' OR v_uuid IN ('nope')`, "22P02"},
	{"select target list before where", `SELECT 'abc'::int4 FROM phi_types WHERE v_date = 'x'`, "22P02"},
	{"select where before order by", `SELECT id FROM phi_types WHERE v_date = 'x' ORDER BY 'abc'::int4`, "22007"},
	{"select comparison output", `SELECT v_int4 = 'x', 'abc'::int4 FROM phi_types`, "22P02"},
	{"second statement", `SELECT 1; UPDATE phi_types SET v_date = 'x' WHERE id = 1`, "22007"},
}

// TestPrecedenceLiterals compares the SQLSTATE of each case through the
// proxy with PostgreSQL's on the twin, in the simple protocol and with the
// literals in a Parse.
func TestPrecedenceLiterals(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := precPlainDirect(t)
	proxied := phiConn(t, p)
	// "simple again" sends each text a second time: its shape is cached,
	// so the proxy makes its plan from the shape's in the session's
	// scratch (rewrite.SimpleScratch), with the text's own positions.
	for _, mode := range []string{"simple", "simple again", "extended"} {
		for _, c := range precedenceCases {
			if mode == "extended" && strings.Contains(c.sql, ";") {
				continue
			}
			run := func(conn *pgx.Conn) pgErrFields {
				if mode != "extended" {
					_, err := conn.Exec(ctx, c.sql, pgx.QueryExecModeSimpleProtocol)
					return errFields(err)
				}
				// Parse, Bind, Describe, Execute: pgx would send a text
				// without arguments as a simple Query.
				return errFields(conn.PgConn().ExecParams(ctx, c.sql, nil, nil, nil, nil).Read().Err)
			}
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				want, got := run(direct), run(proxied)
				if want.Code != c.want {
					t.Fatalf("%s: PostgreSQL says %s %q, the case expects %s", c.sql, want.Code, want.Message, c.want)
				}
				if got.Code != want.Code {
					t.Fatalf("%s: SQLSTATE through the proxy %s %q, PostgreSQL's %s %q", c.sql, got.Code, got.Message, want.Code, want.Message)
				}
				if want.Position != 0 && got.Position != want.Position {
					t.Errorf("%s: position through the proxy %d, PostgreSQL's %d (%s)", c.sql, got.Position, want.Position, want.Message)
				}
			})
		}
	}
}

// TestPrecedenceParams: at Bind, PostgreSQL reads the parameters in order,
// so the first invalid one, plain or PHI, gives the error.
func TestPrecedenceParams(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := precPlainDirect(t).PgConn()
	proxied := phiConn(t, p).PgConn()
	cases := []struct {
		name, sql string
		params    []string
		want      string
	}{
		{"phi first", `UPDATE phi_types SET v_date = $1 WHERE id = $2`, []string{"not a date", "abc"}, "22007"},
		{"plain first", `UPDATE phi_types SET id = $1 WHERE v_date = $2`, []string{"abc", "not a date"}, "22P02"},
		{"plain first, phi used twice", `UPDATE phi_types SET id = $1 WHERE v_int4 = $2 OR v_int4 = $2`, []string{"abc", "x"}, "22P02"},
		{"phi first, indexed", `INSERT INTO phi_types (v_uuid, id) VALUES ($1, $2)`, []string{"nope", "abc"}, "22P02"},
		{"phi second", `INSERT INTO phi_types (id, v_uuid, v_int4) VALUES ($1, $2, $3)`, []string{"7", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "2147483648"}, "22003"},
		{"in list", `SELECT id FROM phi_types WHERE v_int4 IN ($1, $2) AND id = $3`, []string{"1", "x", "abc"}, "22P02"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			params := make([][]byte, len(c.params))
			for i, v := range c.params {
				params[i] = []byte(v)
			}
			want := errFields(direct.ExecParams(ctx, c.sql, params, nil, nil, nil).Read().Err)
			got := errFields(proxied.ExecParams(ctx, c.sql, params, nil, nil, nil).Read().Err)
			if want.Code != c.want {
				t.Fatalf("%s: PostgreSQL says %s %q, the case expects %s", c.sql, want.Code, want.Message, c.want)
			}
			if got.Code != want.Code {
				t.Fatalf("%s: SQLSTATE through the proxy %s %q, PostgreSQL's %s %q", c.sql, got.Code, got.Message, want.Code, want.Message)
			}
		})
	}
}

// TestPrecedenceNoLeak sends invalid PHI values that are secrets through
// the proxy, in statements that also hold an invalid plain value before
// or after them: whichever error wins, the values never reach the server
// (its log is searched here, and again by the suite's leak check).
func TestPrecedenceNoLeak(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	conn := phiConn(t, p)
	var sent []string
	bad := func(label string) string {
		v := secret(label) // not a date, an integer or a uuid
		sent = append(sent, v)
		return v
	}
	cases := []struct{ sql, want string }{
		{`UPDATE phi_types SET v_date = '` + bad("date") + `' WHERE id = 'abc'`, "22P02"},
		{`UPDATE phi_types SET v_date = '` + bad("date") + `', id = 'abc' WHERE id = 1`, "22007"},
		{`INSERT INTO phi_types (id, v_int4) VALUES (1, '1'), (2, '` + bad("int") + `')`, "22P02"},
		{`INSERT INTO phi_types (id, v_uuid) VALUES (1, '` + bad("uuid") + `') ON CONFLICT (id) DO UPDATE SET v_date = '` + bad("date") + `'`, "22P02"},
		{`SELECT id FROM phi_types WHERE v_int4 = '` + bad("int") + `' AND id = 'abc'`, "22P02"},
	}
	for _, c := range cases {
		_, err := conn.Exec(ctx, c.sql, pgx.QueryExecModeSimpleProtocol)
		if got := errFields(err); got.Code != c.want {
			t.Errorf("%s: %s %q, want %s", c.sql, got.Code, got.Message, c.want)
		}
		err = conn.PgConn().ExecParams(ctx, c.sql, nil, nil, nil, nil).Read().Err
		if got := errFields(err); got.Code != c.want {
			t.Errorf("%s (extended): %s %q, want %s", c.sql, got.Code, got.Message, c.want)
		}
	}
	for _, c := range []struct {
		sql  string
		oids []uint32
		want string
	}{
		{`UPDATE phi_types SET v_date = $1 WHERE id = $2`, nil, "22007"},
		{`UPDATE phi_types SET v_uuid = $1 WHERE id = $2`, nil, "22P02"},
		{`SELECT id FROM phi_types WHERE v_uuid = $1 AND id <> $2`, nil, "22P02"},
		{`SELECT id FROM phi_types WHERE v_uuid = $1 AND id <> $2`, []uint32{2950, 0}, "22P02"},
		{`INSERT INTO phi_types (v_uuid, id) VALUES ($1, $2)`, []uint32{2950, 0}, "22P02"},
	} {
		err := conn.PgConn().ExecParams(ctx, c.sql, [][]byte{[]byte(bad("uuid")), []byte("1")}, c.oids, nil, nil).Read().Err
		if got := errFields(err); got.Code != c.want {
			t.Errorf("%s: %s %q, want %s", c.sql, got.Code, got.Message, c.want)
		}
	}
	noMarkerInServerLog(t, sent)
}
