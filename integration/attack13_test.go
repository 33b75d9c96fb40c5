package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// The thirteenth independent attack on issue 9 (branch attack13): a
// simple Query inside the client's own open extended batch (no Sync of
// the proxy's after it since f0192e0), the guard after every Execute, and
// COPY FROM STDIN behind unanswered statements. One test per finding, then
// the variants that held.

// a13Step is one exchange: messages sent together and the number of
// ReadyForQuery that answer them.
type a13Step struct {
	msgs []pgproto3.FrontendMessage
	n    int
}

// a13Brief renders a backend message short: its type, and an error's
// SQLSTATE.
func a13Brief(m pgproto3.BackendMessage) string {
	switch m := m.(type) {
	case *pgproto3.ErrorResponse:
		return "E" + m.Code
	case *pgproto3.ReadyForQuery:
		return "Z" + string(m.TxStatus)
	case *pgproto3.DataRow:
		var vals []string
		for _, v := range m.Values {
			vals = append(vals, string(v))
		}
		return "D(" + strings.Join(vals, ",") + ")"
	case *pgproto3.CommandComplete:
		return "C(" + string(m.CommandTag) + ")"
	default:
		return strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3.")
	}
}

// a13Run sends steps over a new raw session of dsn, then SELECT 2, and
// returns what came back, rendered short; a session that stops answering
// (a missing ReadyForQuery) ends with "broken".
func a13Run(t *testing.T, dsn string, steps ...a13Step) string {
	t.Helper()
	hc := rawSession(t, dsn)
	return a13On(hc, steps...)
}

func a13On(hc *pgconn.HijackedConn, steps ...a13Step) string {
	steps = append(steps, a13Step{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "SELECT 2"}}, 1})
	var out []string
	for _, st := range steps {
		for _, m := range st.msgs {
			hc.Frontend.Send(m)
		}
		if err := hc.Frontend.Flush(); err != nil {
			return strings.Join(append(out, "broken: "+err.Error()), " ")
		}
		_ = hc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for n := st.n; n > 0; {
			m, err := hc.Frontend.Receive()
			if err != nil {
				return strings.Join(append(out, "broken"), " ")
			}
			out = append(out, a13Brief(m))
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				n--
			}
		}
		out = append(out, "|")
	}
	return strings.Join(out, " ")
}

func a13Q(sql string) *pgproto3.Query { return &pgproto3.Query{String: sql} }

// a13PBE is an unnamed Parse, Bind and Execute of sql.
func a13PBE(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Execute{}}
}

func a13Msgs(parts ...any) []pgproto3.FrontendMessage {
	var out []pgproto3.FrontendMessage
	for _, p := range parts {
		switch p := p.(type) {
		case pgproto3.FrontendMessage:
			out = append(out, p)
		case []pgproto3.FrontendMessage:
			out = append(out, p...)
		}
	}
	return out
}

// Orders of messages around a guarded Query inside an open batch: the
// proxy refuses the Query (finding 1), and answers as PostgreSQL answers
// when that Query fails (or is skipped after an earlier error).
func TestAttack13QueryInOpenBatch(t *testing.T) {
	p := startPHIProxy(t)
	const q = "SELECT id FROM patients WHERE false"
	sync, flush := &pgproto3.Sync{}, &pgproto3.Flush{}
	for _, c := range []struct {
		name  string
		steps func(query func(string) *pgproto3.Query) []a13Step
	}{
		{"query then flush, sync later", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q(q), flush), 1}, {a13Msgs(sync), 1}}
		}},
		{"query then flush after an error", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1/0"), Q(q), flush, sync), 1}}
		}},
		{"query then more extended", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q(q), a13PBE(q), sync), 2}}
		}},
		{"query then failing extended", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q(q), a13PBE("SELECT 1/0"), a13PBE(q), sync), 2}}
		}},
		{"two queries", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q(q), Q(q+" OR false"), sync), 3}}
		}},
		{"two queries after an error", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1/0"), Q(q), Q(q+" OR false"), sync), 1}}
		}},
		{"query with several statements", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q(q+"; SELECT 3"), a13PBE(q), sync), 2}}
		}},
		{"query in a transaction block", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13Q("BEGIN")), 1}, {a13Msgs(a13PBE("SELECT 1"), Q(q), sync), 2}, {a13Msgs(a13Q("COMMIT")), 1}}
		}},
		{"copy to as the query", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q("COPY (SELECT id FROM patients WHERE false) TO STDOUT"), sync), 2}}
		}},
		{"copy with a PHI column to as the query", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q("COPY (SELECT id, email FROM patients WHERE false) TO STDOUT"), sync), 2}}
		}},
		{"copy table to as the query", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1"), Q("COPY patients (id, email) TO STDOUT"), sync), 2}}
		}},
		{"copy to after an error", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(a13PBE("SELECT 1/0"), Q("COPY (SELECT id, email FROM patients WHERE false) TO STDOUT"), sync), 1}}
		}},
		{"execute with row limit, query, execute again", func(Q func(string) *pgproto3.Query) []a13Step {
			return []a13Step{{a13Msgs(&pgproto3.Parse{Query: "SELECT 1 UNION ALL SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, Q(q), &pgproto3.Execute{}, sync), 2}}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			direct := a13Run(t, directDSN(pgcluster.ScramUser, phiDatabase), c.steps(func(string) *pgproto3.Query { return a13Q("SELECT 1/0") })...)
			proxied := a13Run(t, p.dsn(pgcluster.ScramUser, phiDatabase), c.steps(a13Q)...)
			if a13Shape(direct) != a13Shape(proxied) || strings.Contains(proxied, "E22012") && !strings.Contains(direct, "E22012") {
				t.Errorf("\ndirect (failing): %s\nproxy:            %s", direct, proxied)
			}
		})
	}
	// Queries that need no guard (in a database with the epoch, only
	// transaction control, settings and maintenance) go through as before.
	steps := []a13Step{{a13Msgs(a13PBE("SELECT 1"), a13Q("SHOW DateStyle"), a13PBE("SELECT 6"), sync), 2}}
	if d, p := a13Run(t, directDSN(pgcluster.ScramUser, phiDatabase), steps...), a13Run(t, p.dsn(pgcluster.ScramUser, phiDatabase), steps...); d != p {
		t.Errorf("unguarded Query in an open batch:\ndirect: %s\nproxy:  %s", d, p)
	}
}

// a13Shape is a13Run's output with the errors' SQLSTATEs left out, for
// comparing a refusal with the error PostgreSQL raises in its place.
func a13Shape(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		if strings.HasPrefix(w, "E") && len(w) == 6 {
			f[i] = "E"
		}
	}
	return strings.Join(f, " ")
}

// A Query the proxy refuses itself (a raise) inside an open batch is
// answered as PostgreSQL answers one that fails.
func TestAttack13RefusedQueryInOpenBatch(t *testing.T) {
	p := startPHIProxy(t)
	refused := "SELECT id FROM patients WHERE email LIKE 'a%'"
	for _, c := range []struct {
		name string
		pre  string
	}{{"after success", "SELECT 1"}, {"after an error", "SELECT 1/0"}} {
		t.Run(c.name, func(t *testing.T) {
			steps := func(q string) []a13Step {
				return []a13Step{{a13Msgs(a13PBE(c.pre), a13Q(q), a13PBE("SELECT 4"), &pgproto3.Sync{}), 2}}
			}
			if c.pre == "SELECT 1/0" {
				steps = func(q string) []a13Step {
					return []a13Step{{a13Msgs(a13PBE(c.pre), a13Q(q), a13PBE("SELECT 4"), &pgproto3.Sync{}), 1}}
				}
			}
			direct := a13Shape(a13Run(t, directDSN(pgcluster.ScramUser, phiDatabase), steps("SELECT 1/0")...))
			proxied := a13Run(t, p.dsn(pgcluster.ScramUser, phiDatabase), steps(refused)...)
			if direct != a13Shape(proxied) {
				t.Errorf("\ndirect (failing): %s\nproxy (refused):  %s", direct, proxied)
			}
		})
	}
}

// a13DDLFunction changes visits' columns from inside a function, which the
// proxy cannot see: the guard of the statement after it fails.
const a13DDLFunction = `CREATE FUNCTION a13_ddl() RETURNS int LANGUAGE plpgsql AS $$
BEGIN ALTER TABLE visits ADD COLUMN IF NOT EXISTS a13x int; RETURN 1; END $$`

// Finding 1 (desync). A guarded Query inside the client's open batch
// whose guard fails (a function of the batch changed the policy table)
// gets the guard's error, after which the server skips everything up to
// the client's Sync: one ReadyForQuery where PostgreSQL, had the Query
// itself failed, sends two (the Query's, then the Sync's), and the
// messages after the Query are not run. A client waiting for the Query's
// ReadyForQuery takes the Sync's for it and waits for ever.
func TestAttack13GuardFailsInOpenBatch(t *testing.T) {
	env := attackAliasEnv(t, "attack13_guard", a13DDLFunction)
	ctx := context.Background()
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT id FROM visits"); err != nil {
		t.Fatal(err)
	}
	hc, err := conn.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Conn.Close() })
	q := "SELECT id FROM visits WHERE false"
	got := a13On(hc, a13Step{a13Msgs(a13PBE("SELECT a13_ddl()"), a13Q(q), a13PBE("SELECT 4"), &pgproto3.Sync{}), 2})
	// PostgreSQL, with the Query failing in its place.
	want := a13Shape(a13On(rawSessionOf(t, env), a13Step{a13Msgs(a13PBE("SELECT 1"), a13Q("SELECT 1/0"), a13PBE("SELECT 4"), &pgproto3.Sync{}), 2}))
	if a13Shape(got) != want {
		t.Errorf("\nwant the shape of: %s\nproxy:             %s", want, got)
	}
	// The Parse of a COPY's query, which the proxy describes before the
	// COPY, failing: the server skips to Sync as after the guard.
	copyQ := "COPY (SELECT id, ssn FROM visits WHERE id = 'x'::int) TO STDOUT"
	got = a13On(rawSession(t, env.p.dsn(pgcluster.ScramUser, env.db)), a13Step{a13Msgs(a13PBE("SELECT 1"), a13Q(copyQ), a13PBE("SELECT 4"), &pgproto3.Sync{}), 2})
	want = a13On(rawSessionOf(t, env), a13Step{a13Msgs(a13PBE("SELECT 1"), a13Q(copyQ), a13PBE("SELECT 4"), &pgproto3.Sync{}), 2})
	if a13Shape(got) != a13Shape(want) {
		t.Errorf("COPY (query) TO STDOUT whose query fails:\ndirect: %s\nproxy:  %s", want, got)
	}
}

// rawSessionOf is a raw direct session to env's database.
func rawSessionOf(t *testing.T, env *catalogEnv) *pgconn.HijackedConn {
	return rawSession(t, directDSN(pgcluster.ScramUser, env.db))
}

// COPY FROM STDIN as the Query inside an open batch, with data that holds
// no PHI: refused (the catalog cannot be read first while the batch is
// open) or run as PostgreSQL runs it, and the session stays in step.
func TestAttack13CopyFromInOpenBatch(t *testing.T) {
	p := startPHIProxy(t)
	for _, pre := range []string{"SELECT 1", "SELECT 1/0"} {
		n := 2
		if pre == "SELECT 1/0" {
			n = 1
		}
		steps := []a13Step{{a13Msgs(a13PBE(pre), a13Q("COPY patients (id) FROM STDIN"),
			&pgproto3.CopyData{Data: []byte("991301\n")}, &pgproto3.CopyDone{}, a13PBE("SELECT 4"), &pgproto3.Sync{}), n}}
		got := a13Run(t, p.dsn(pgcluster.ScramUser, phiDatabase), steps...)
		t.Logf("%s: %s", pre, got)
		if strings.Contains(got, "broken") {
			t.Errorf("%s: %s", pre, got)
		}
	}
	phiDirect(t).Exec(context.Background(), "DELETE FROM patients WHERE id = 991301")
}

// JDBC-style batches (Parse once, then Bind and Execute for each row, one
// Sync) and portals executed in turn, with a guard after every Execute:
// answered as PostgreSQL answers them.
func TestAttack13ExecuteBatches(t *testing.T) {
	p := startPHIProxy(t)
	const sel = "SELECT id FROM patients WHERE id = $1 UNION ALL SELECT $1::int8 UNION ALL SELECT 7"
	bind := func(portal, v string) *pgproto3.Bind {
		return &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: "a13s", Parameters: [][]byte{[]byte(v)}}
	}
	var jdbc []pgproto3.FrontendMessage
	jdbc = append(jdbc, &pgproto3.Parse{Name: "a13s", Query: sel})
	for i := 0; i < 5; i++ {
		jdbc = append(jdbc, bind("", strconv.Itoa(i)), &pgproto3.Execute{})
	}
	portals := a13Msgs(&pgproto3.Parse{Name: "a13s", Query: sel}, bind("p1", "1"), bind("p2", "2"),
		&pgproto3.Execute{Portal: "p1", MaxRows: 1}, &pgproto3.Execute{Portal: "p2", MaxRows: 1},
		&pgproto3.Execute{Portal: "p1"}, &pgproto3.Execute{Portal: "p2"})
	failing := a13Msgs(&pgproto3.Parse{Name: "a13s", Query: sel}, bind("", "1"), &pgproto3.Execute{}, bind("", "x"), &pgproto3.Execute{}, bind("", "3"), &pgproto3.Execute{})
	for name, msgs := range map[string][]pgproto3.FrontendMessage{"jdbc": jdbc, "portals": portals, "failing": failing} {
		steps := []a13Step{{append(msgs, &pgproto3.Sync{}), 1}}
		direct := a13Run(t, directDSN(pgcluster.ScramUser, phiDatabase), steps...)
		proxied := a13Run(t, p.dsn(pgcluster.ScramUser, phiDatabase), steps...)
		if direct != proxied {
			t.Errorf("%s:\ndirect: %s\nproxy:  %s", name, direct, proxied)
		}
	}
}

// Finding 2 (wrong answer). COPY FROM STDIN sent as a simple Query inside
// the client's open batch, after the batch's earlier messages were
// answered (Execute of a function that sets DateStyle, Flush, its answer
// read): nothing is pending, so the proxy reads the data under the
// settings last reported (ISO, MDY), while the server, which reports the
// function's setting only at ReadyForQuery, reads it under SQL, DMY:
// '01/02/2020' stored as 2 January where PostgreSQL stores 1 February.
// Now such dates are refused inside an open batch (noteCopyBehind), and
// the settings count as moved until its Sync is answered.
func TestAttack13CopyFromAfterFunctionInOpenBatch(t *testing.T) {
	p := startPHIProxy(t)
	a11Setup(t, p)
	for i, c := range []struct{ date, want string }{{"01/02/2020", "2020-02-01"}, {"2020-03-04", "2020-03-04"}} {
		hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
		id := 991302 + i
		for _, m := range a13Msgs(a13PBE("SELECT a11_dmy()"), &pgproto3.Flush{}) {
			hc.Frontend.Send(m)
		}
		if err := hc.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = hc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			m, err := hc.Frontend.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*pgproto3.CommandComplete); ok {
				break
			}
		}
		out := a13On(hc,
			a13Step{a13Msgs(a13Q("COPY patients (id, date_of_birth) FROM STDIN"), &pgproto3.CopyData{Data: []byte(strconv.Itoa(id) + "\t" + c.date + "\n")},
				&pgproto3.CopyDone{}, &pgproto3.Sync{}), 2},
			a13Step{a13Msgs(a13Q("RESET datestyle")), 1})
		d := a12StoredDate(t, p, int64(id))
		switch {
		case d != "" && d != c.want:
			t.Errorf("%s: the proxy stored %q where PostgreSQL stores %s (read under SQL, DMY)\n%s", c.date, d, c.want, out)
		case d == "" && (i > 0 || !strings.Contains(out, "CopyInResponse E0A000 ZI ZI")):
			t.Errorf("%s: nothing stored: %s", c.date, out)
		}
		phiDirect(t).Exec(context.Background(), "DELETE FROM patients WHERE id = "+strconv.Itoa(id))
	}
}

// Finding 3 (wrong answer). A function of the pipeline that sets
// client_encoding (set_config in its body, which phiproxy never sees),
// then a read of a PHI column holding non-ASCII text in the same
// pipeline: the server reports the new encoding only at ReadyForQuery, and
// the proxy sent the decrypted text in UTF-8 where PostgreSQL sends
// LATIN1 (and would have encrypted the client's LATIN1 bytes as they
// came). Now the settings check compares client_encoding too: 55000.
func TestAttack13EncodingByFunction(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	if _, err := phiDirect(t).Exec(ctx, "CREATE OR REPLACE FUNCTION a13_latin1() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('client_encoding', 'LATIN1', false); RETURN 1; END$$"); err != nil {
		t.Fatal(err)
	}
	name := secret("a13enc") + "é"
	var id int64
	if err := phiConn(t, p).QueryRow(ctx, "INSERT INTO patients (first_name) VALUES ($1) RETURNING id", name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	for _, m := range a13Msgs(a13PBE("SELECT a13_latin1()"), a13PBE("SELECT first_name FROM patients WHERE id = "+strconv.FormatInt(id, 10)), &pgproto3.Sync{}) {
		hc.Frontend.Send(m)
	}
	if err := hc.Frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = hc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []string
	for {
		m, err := hc.Frontend.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			got = append(got, fmt.Sprintf("%q", m.Values[0]))
		case *pgproto3.ErrorResponse:
			got = append(got, "E"+m.Code+" "+m.Message)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	want := strings.TrimSuffix(name, "é") + "\xe9"
	if len(got) != 2 || got[1] != fmt.Sprintf("%q", want) && !strings.HasPrefix(got[1], "E55000") {
		t.Errorf("PHI text read after a function set client_encoding LATIN1: %v, PostgreSQL sends %q", got, want)
	}
}
