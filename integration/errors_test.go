package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// Errors a psql user can act on (issue 10 item 7): a statement the parser
// refuses gets PostgreSQL's own SQLSTATE, message, hint and position
// through the proxy; refusals keep a short message and list the supported
// forms in HINT; blind-index columns are refused wherever a client names
// them. Each case is compared with the same text sent directly to
// errPlainSchema.patients, the plaintext twin of the PHI table (same
// columns, no blind indexes), so that every position counts the same
// characters.

// errPlainSchema holds the plaintext twin; a direct connection reaches it
// through search_path.
const errPlainSchema = "errs_plain"

var errPlainOnce struct {
	sync.Once
	err error
}

// errPlainDirect connects straight to PostgreSQL with errPlainSchema
// first in search_path, creating the twin once.
func errPlainDirect(t *testing.T) *pgx.Conn {
	t.Helper()
	setupPHI(t)
	errPlainOnce.Do(func() {
		_, errPlainOnce.err = phiDirect(t).Exec(context.Background(), `CREATE SCHEMA `+errPlainSchema+`;
CREATE TABLE `+errPlainSchema+`.patients (
  id bigserial PRIMARY KEY,
  first_name text, last_name text, date_of_birth date, ssn text, email text UNIQUE, phone text,
  address_line1 text, address_line2 text, city text, state text, postal_code text, country text,
  additional_info jsonb,
  created_at timestamptz NOT NULL DEFAULT now())`)
	})
	if errPlainOnce.err != nil {
		t.Fatalf("plaintext twin: %v", errPlainOnce.err)
	}
	return connect(t, directDSN(pgcluster.ScramUser, phiDatabase)+" search_path="+errPlainSchema)
}

// pgErrFields is what a client sees of an ErrorResponse (File, Line and
// Routine name the server's source, which the proxy need not match).
type pgErrFields struct {
	Severity, Code, Message, Detail, Hint string
	Position                              int32
}

func errFields(err error) pgErrFields {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return pgErrFields{Message: fmt.Sprintf("not a server error: %v", err)}
	}
	return pgErrFields{Severity: pe.Severity, Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint, Position: pe.Position}
}

// syntaxCases are texts PostgreSQL's parser refuses, each naming the PHI
// table, so that the proxy analyses them. None holds a secret(): sent
// directly, they reach the server log.
var syntaxCases = []struct{ name, sql string }{
	{"near a keyword", "SELECT * FORM patients"},
	{"end of input", "SELECT * FROM patients WHERE"},
	{"second statement", "SELECT 1; SELECT * FORM patients"},
	{"characters not bytes", "SELECT 'é', 'ü'; SELECT * FROM patients WHERE email = 'ö' AND AND"},
	{"unclosed VALUES", "INSERT INTO patients (email) VALUES ('x'"},
	{"unquoted value", "INSERT INTO patients (first_name, email) VALUES (John Smith)"},
	{"second line", "SELECT id\nFROM patients\nWHERE email = 'a' AND AND"},
	{"unterminated string", "SELECT id FROM patients WHERE email = 'unterminated"},
	{"hint", "SELECT * FROM patients LIMIT 1,2"},
	{"windowing error", "SELECT count(*) OVER (ROWS UNBOUNDED FOLLOWING) FROM patients"},
	{"escape error", `SELECT id FROM patients WHERE email = E'\u12'`},
}

// TestErrorsSyntax sends each text the parser refuses directly and
// through the proxy, in the simple and the extended protocol, in and out
// of an aborted transaction: the same SQLSTATE, message, hint and
// position.
func TestErrorsSyntax(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := errPlainDirect(t)
	proxied := phiConn(t, p)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		for _, aborted := range []bool{false, true} {
			for _, c := range syntaxCases {
				name := mode.String() + "/" + c.name
				if aborted {
					name = mode.String() + "/aborted/" + c.name
				}
				t.Run(name, func(t *testing.T) {
					run := func(conn *pgx.Conn) pgErrFields {
						if aborted {
							tx, err := conn.Begin(ctx)
							if err != nil {
								t.Fatal(err)
							}
							defer tx.Rollback(ctx)
							if _, err := tx.Exec(ctx, "SELECT 1/0"); err == nil {
								t.Fatal("1/0 did not fail")
							}
						}
						_, err := conn.Exec(ctx, c.sql, mode)
						return errFields(err)
					}
					want, got := run(direct), run(proxied)
					if want.Code == "" || want.Position == 0 {
						t.Fatalf("the direct connection's answer is not a positioned error: %+v", want)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("%q: error (-direct +proxy):\n%s", c.sql, diff)
					}
				})
			}
		}
	}
	// The session goes on after the errors.
	var one int
	if err := proxied.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
}

// TestErrorsSyntaxPsql: psql draws its LINE n: ... ^ from the position, so
// what its user reads is the same through the proxy.
func TestErrorsSyntaxPsql(t *testing.T) {
	p := startPHIProxy(t)
	errPlainDirect(t)
	for _, c := range []string{
		"SELECT * FORM patients",
		"SELECT 'é'; SELECT id\nFROM patients\nWHERE email = 'é' AND AND",
		"SELECT * FROM patients LIMIT 1,2",
	} {
		t.Run(strings.Fields(c)[1], func(t *testing.T) {
			want := runPsql(t, directDSN(pgcluster.ScramUser, phiDatabase), "-c", c)
			got := runPsql(t, p.dsn(pgcluster.ScramUser, phiDatabase), "-c", c)
			if want.Exit == 0 || !strings.Contains(want.Stderr, "LINE ") {
				t.Fatalf("psql direct: %+v", want)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("psql (-direct +proxy):\n%s", diff)
			}
		})
	}
}

// TestErrorsRefusalHint reads the ErrorResponse of refusals off the wire:
// a short message, the supported forms in HINT, the position of the
// construct refused.
func TestErrorsRefusalHint(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	tests := []struct {
		name, sql, at string // at: the text the position points to
		msg, hint     string // substrings
	}{
		{"LIKE", "SELECT id FROM patients WHERE email LIKE 'a%'", "email LIKE",
			"LIKE on PHI column public.patients.email is not supported", "Supported on PHI columns: col = / <> value"},
		{"no blind index", "SELECT id FROM patients WHERE city = 'x'", "= 'x'",
			"column public.patients.city has no blind index", "Add blind_index to its policy. Supported on PHI columns:"},
		{"blind-index column selected", "SELECT id, email_bidx FROM patients", "email_bidx",
			"column email_bidx is internal to phiproxy", "Select, compare and write email itself"},
		{"blind-index column compared", "SELECT id FROM patients WHERE email_bidx = 'x'", "email_bidx",
			"column email_bidx is internal to phiproxy", "Select, compare and write email itself"},
		{"blind-index column returned", "DELETE FROM patients WHERE id = -1 RETURNING ssn_bidx_digits", "ssn_bidx_digits",
			"column ssn_bidx_digits is internal to phiproxy", "Select, compare and write ssn itself"},
		{"position after a hidden column", "SELECT * FROM patients ORDER BY 6", "6",
			"ORDER BY 6 names a column by its position after blind-index column ssn_bidx", "Name the column instead of its position."},
	}
	for _, mode := range []string{"simple", "extended"} {
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				var msgs []pgproto3.FrontendMessage
				if mode == "simple" {
					msgs = []pgproto3.FrontendMessage{&pgproto3.Query{String: tt.sql}}
				} else {
					msgs = []pgproto3.FrontendMessage{&pgproto3.Parse{Query: tt.sql}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}}
				}
				for _, m := range msgs {
					hc.Frontend.Send(m)
				}
				if err := hc.Frontend.Flush(); err != nil {
					t.Fatal(err)
				}
				var er *pgproto3.ErrorResponse
				for {
					msg, err := hc.Frontend.Receive()
					if err != nil {
						t.Fatal(err)
					}
					if e, ok := msg.(*pgproto3.ErrorResponse); ok {
						c := *e
						er = &c
					}
					if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
						break
					}
				}
				if er == nil {
					t.Fatalf("%q: no error", tt.sql)
				}
				wantPos := int32(len([]rune(tt.sql[:strings.LastIndex(tt.sql, tt.at)])) + 1)
				if er.Code != "0A000" || !strings.Contains(er.Message, tt.msg) || strings.Contains(er.Message, "upported on") ||
					!strings.Contains(er.Hint, tt.hint) || er.Position != wantPos {
					t.Fatalf("%q: got %s %q hint %q position %d; want 0A000 %q, hint %q, position %d",
						tt.sql, er.Code, er.Message, er.Hint, er.Position, tt.msg, tt.hint, wantPos)
				}
			})
		}
	}
}

// TestErrorsStarHidesBlindIndexes: SELECT * and RETURNING * through the
// proxy describe exactly the plaintext twin's columns.
func TestErrorsStarHidesBlindIndexes(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := errPlainDirect(t)
	proxied := phiConn(t, p)
	fields := func(conn *pgx.Conn, sql string) []string {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		defer rows.Close()
		var out []string
		for _, fd := range rows.FieldDescriptions() {
			out = append(out, fmt.Sprintf("%s:%d", fd.Name, fd.DataTypeOID))
		}
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	for _, sql := range []string{
		"SELECT * FROM patients WHERE id = -1",
		"SELECT p.* FROM patients p WHERE id = -1",
		"SELECT * FROM (SELECT * FROM patients) s WHERE id = -1",
		"DELETE FROM patients WHERE id = -1 RETURNING *",
	} {
		want, got := fields(direct, sql), fields(proxied, sql)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: columns (-plaintext +proxy):\n%s", sql, diff)
		}
		if strings.Contains(strings.Join(got, " "), "_bidx") {
			t.Errorf("%s: a blind-index column is shown: %v", sql, got)
		}
	}
}

// TestErrorsSyntaxNoLeak: PostgreSQL's message quotes the text near the
// error, which may be a PHI value the client forgot to quote. The client
// that sent it is told, as PostgreSQL would tell it; the server (which
// only ever sees the raise) and the proxy's logs are not (the suite's
// leak check searches both, and the WAL and tables, for every secret).
func TestErrorsSyntaxNoLeak(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	conn := phiConn(t, p)
	b := make([]byte, 6)
	rand.Read(b)
	ident := remember("leakident" + hex.EncodeToString(b)) // a bare word: no '-'

	quoted := secret("leakquoted")
	cases := []struct{ sql, msg string }{
		{"INSERT INTO patients (first_name, last_name) VALUES (Pat " + ident + ")", `syntax error at or near "` + ident + `"`},
		{"INSERT INTO patients (first_name) VALUES ('" + quoted, `unterminated quoted string at or near "'` + quoted + `"`},
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		for _, c := range cases {
			_, err := conn.Exec(ctx, c.sql, mode)
			if got := errFields(err); got.Code != "42601" || got.Message != c.msg {
				t.Fatalf("%s: got %+v, want 42601 %q", mode, got, c.msg)
			}
		}
	}
	noMarkerInServerLog(t, []string{ident, quoted})
	for _, m := range []string{ident, quoted} {
		if strings.Contains(p.logs.String(), m) {
			t.Errorf("marker %s reached the proxy's log", m)
		}
	}
}

// TestErrorsSyntaxNonStandardStrings: with standard_conforming_strings
// off, a text with a backslash in a value reads differently to pg_query,
// so the proxy analyses its shape, with $n for its literals: the position
// and message are still those PostgreSQL gives the client's own text.
func TestErrorsSyntaxNonStandardStrings(t *testing.T) {
	p := startPHIProxy(t)
	errPlainDirect(t)
	sessions := map[string]*pgconn.HijackedConn{
		"direct": rawSession(t, directDSN(pgcluster.ScramUser, phiDatabase)+" search_path="+errPlainSchema),
		"proxy":  rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase)),
	}
	answer := func(hc *pgconn.HijackedConn, sql string) pgErrFields {
		var f pgErrFields
		for _, m := range exchange(t, hc, &pgproto3.Query{String: sql}) {
			var er pgproto3.ErrorResponse
			if strings.Contains(m, `"Type":"ErrorResponse"`) {
				if err := json.Unmarshal([]byte(m), &er); err != nil {
					t.Fatal(err)
				}
				f = pgErrFields{Severity: er.Severity, Code: er.Code, Message: er.Message, Detail: er.Detail, Hint: er.Hint, Position: er.Position}
			}
		}
		return f
	}
	for _, hc := range sessions {
		if f := answer(hc, "SET standard_conforming_strings = off"); f.Code != "" {
			t.Fatalf("SET standard_conforming_strings: %+v", f)
		}
	}
	for _, sql := range []string{
		`SELECT id FROM patients WHERE city = 'a\'b' AND state = 'é' AND AND`,
		`SELECT id FROM patients WHERE email = 'x\\y' OR email = 'Köln' ORDER BY BY`,
		`SELECT id FROM FROM patients WHERE city = 'M\'ünster'`,
	} {
		want, got := answer(sessions["direct"], sql), answer(sessions["proxy"], sql)
		if want.Code == "" || want.Position == 0 {
			t.Fatalf("%q: the direct answer is not a positioned error: %+v", sql, want)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%q: error (-direct +proxy):\n%s", sql, diff)
		}
	}
}

// TestErrorsServerPosition: an error the server finds in a statement the
// proxy rewrote carries a position in the rewritten text; the client is
// told the position in its own text, between rewritten places too.
func TestErrorsServerPosition(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := errPlainDirect(t)
	proxied := phiConn(t, p)
	cases := []struct {
		name, sql string
		args      []any
	}{
		{"after the rewritten value", "SELECT id FROM patients WHERE email = 'pos@example.org' AND nosuchcol = 1", nil},
		{"before it", "SELECT nosuchcol FROM patients WHERE email = 'pos@example.org'", nil},
		{"after a multibyte value", "SELECT id FROM patients WHERE email = 'zürich@example.org' AND nosuchcol = 1", nil},
		{"INSERT", "INSERT INTO patients (first_name, email) VALUES ('Ann', 'pos@example.org') RETURNING nosuchcol", nil},
		{"between two", "SELECT id FROM patients WHERE email = 'pos@example.org' AND nosuchcol = 1 AND phone = '555'", nil},
		{"between two in INSERT", "INSERT INTO patients (email, created_at, phone) VALUES ('pos@example.org', nosuchcol, '555')", nil},
		{"parameters", "SELECT id FROM patients WHERE email = $1 AND nosuchcol = $2", []any{"pos@example.org", 1}},
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		for _, c := range cases {
			t.Run(mode.String()+"/"+c.name, func(t *testing.T) {
				run := func(conn *pgx.Conn) pgErrFields {
					tx, err := conn.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					defer tx.Rollback(ctx)
					_, err = tx.Exec(ctx, c.sql, append([]any{mode}, c.args...)...)
					return errFields(err)
				}
				want, got := run(direct), run(proxied)
				if want.Code != "42703" || want.Position == 0 {
					t.Fatalf("direct: %+v", want)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%q: error (-direct +proxy):\n%s", c.sql, diff)
				}
			})
		}
	}
}
