package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// SQL cursors (issue 10 item 2): a cursor declared in SQL over a policy
// table is described, fetched, moved and closed through phiproxy exactly
// as the same cursor over the plaintext twin of the table directly: same
// RowDescription (names, types, formats), same rows, same command tags and
// SQLSTATEs. The twins live in phiDatabase beside the encrypted tables and
// hold synthetic values (not given to the leak check, which they would
// trip); TestCursorLeak sends its markers through the proxy only.

const cursorPlainSchema = `
CREATE TABLE IF NOT EXISTS cursor_patients_plain (
  id bigint PRIMARY KEY,
  first_name text, last_name text, date_of_birth date, ssn text, email text, phone text,
  address_line1 text, address_line2 text, city text, state text, postal_code text, country text,
  additional_info jsonb, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS cursor_types_plain (
  id int PRIMARY KEY,
  v_text text, v_varchar varchar, v_int4 int4, v_int8 int8, v_numeric numeric, v_bool bool,
  v_date date, v_timestamptz timestamptz, v_uuid uuid, v_jsonb jsonb, v_bytea bytea)`

// cursorEnv holds the rows both sides of the cursor tests read.
type cursorEnv struct {
	tag   string  // distinguishes this run's rows (emails)
	ids   []int64 // patients (and their twins), in id order
	types []int64 // phi_types rows (and their twins)
}

var cursorSetup struct {
	once sync.Once
	env  *cursorEnv
	err  error
}

// cursorRows are the patients both tables get: first name, email, date of
// birth, additional info (the rest NULL).
var cursorRows = [][4]any{
	{"Ada", "ada", "1990-01-02", `{"a": 1}`},
	{"Bo", "bo", nil, nil},
	{"Cy", "cy", "1985-12-31", `[1, "x"]`},
	{"Di", nil, "2001-07-04", `{}`},
}

// cursorTypeRows are phi_types rows: every logical type once.
var cursorTypeRows = [][]any{
	{"alpha", "vc", "42", "9000000000", "1.50", "true", "1999-12-31", "2020-01-01 10:00:00+00",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `{"k": [1, 2.50]}`, `\x00ff41`},
	{"beta", nil, "-7", nil, "0", "false", "1980-02-29", nil, nil, `"s"`, `\x`},
	{nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil},
}

// setupCursors loads the rows through p (encrypted) and directly into the
// twins, once per run.
func setupCursors(t *testing.T, p *testProxy) *cursorEnv {
	t.Helper()
	cursorSetup.once.Do(func() { cursorSetup.env, cursorSetup.err = loadCursors(t, p) })
	if cursorSetup.err != nil {
		t.Fatalf("cursor setup: %v", cursorSetup.err)
	}
	return cursorSetup.env
}

func loadCursors(t *testing.T, p *testProxy) (*cursorEnv, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := make([]byte, 4)
	rand.Read(b)
	env := &cursorEnv{tag: hex.EncodeToString(b)}
	direct, enc := phiDirect(t), phiConn(t, p)
	if _, err := direct.Exec(ctx, cursorPlainSchema); err != nil {
		return nil, err
	}
	created := "2021-03-04 05:06:07.123456+00"
	for _, r := range cursorRows {
		email := r[1]
		if email != nil {
			email = fmt.Sprintf("%s.%s@example.org", email, env.tag)
		}
		var id int64
		err := enc.QueryRow(ctx, `INSERT INTO patients (first_name, email, date_of_birth, additional_info, created_at)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`, r[0], email, r[2], r[3], created).Scan(&id)
		if err != nil {
			return nil, fmt.Errorf("insert patient: %w", err)
		}
		if _, err := direct.Exec(ctx, `INSERT INTO cursor_patients_plain (id, first_name, email, date_of_birth, additional_info, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, id, r[0], email, r[2], r[3], created); err != nil {
			return nil, fmt.Errorf("insert plain patient: %w", err)
		}
		env.ids = append(env.ids, id)
	}
	for _, r := range cursorTypeRows {
		var id int64
		err := enc.QueryRow(ctx, `INSERT INTO phi_types (v_text, v_varchar, v_int4, v_int8, v_numeric, v_bool, v_date,
			v_timestamptz, v_uuid, v_jsonb, v_bytea) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`, r...).Scan(&id)
		if err != nil {
			return nil, fmt.Errorf("insert phi_types: %w", err)
		}
		if _, err := direct.Exec(ctx, `INSERT INTO cursor_types_plain (id, v_text, v_varchar, v_int4, v_int8, v_numeric, v_bool, v_date,
			v_timestamptz, v_uuid, v_jsonb, v_bytea) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, append([]any{id}, r...)...); err != nil {
			return nil, fmt.Errorf("insert plain types: %w", err)
		}
		env.types = append(env.types, id)
	}
	return env, nil
}

// email is the stored email of cursorRows[i].
func (e *cursorEnv) email(i int) string {
	return fmt.Sprintf("%s.%s@example.org", cursorRows[i][1], e.tag)
}

// idList is "(id1, id2, ...)" of ids.
func idList(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return "(" + strings.Join(s, ", ") + ")"
}

// cursorSide is one side of a comparison: a raw session and the names of
// its tables.
type cursorSide struct {
	hc     *pgconn.HijackedConn
	tables *strings.Replacer
}

func newCursorSides(t *testing.T, p *testProxy) (enc, plain cursorSide) {
	enc = cursorSide{rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase)),
		strings.NewReplacer("{patients}", "patients", "{types}", "phi_types")}
	plain = cursorSide{rawSession(t, directDSN(pgcluster.ScramUser, phiDatabase)),
		strings.NewReplacer("{patients}", "cursor_patients_plain", "{types}", "cursor_types_plain")}
	return enc, plain
}

// run sends msgs (with the side's table names in the SQL) and returns the
// answers up to the n-th ReadyForQuery, rendered for comparison: a
// RowDescription without the table OIDs and attribute numbers (the twins
// are other tables), an ErrorResponse as severity, SQLSTATE and message.
func (s cursorSide) run(t *testing.T, n int, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	for _, m := range msgs {
		switch m := m.(type) {
		case *pgproto3.Query:
			q := *m
			q.String = s.tables.Replace(q.String)
			s.hc.Frontend.Send(&q)
		case *pgproto3.Parse:
			q := *m
			q.Query = s.tables.Replace(q.Query)
			s.hc.Frontend.Send(&q)
		default:
			s.hc.Frontend.Send(m)
		}
	}
	if err := s.hc.Frontend.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	_ = s.hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []string
	for n > 0 {
		msg, err := s.hc.Frontend.Receive()
		if err != nil {
			t.Fatalf("receive after %v: %v", out, err)
		}
		switch m := msg.(type) {
		case *pgproto3.RowDescription:
			var f []string
			for _, fd := range m.Fields {
				f = append(f, fmt.Sprintf("%s:%d:%d:%d:%d", fd.Name, fd.DataTypeOID, fd.DataTypeSize, fd.TypeModifier, fd.Format))
			}
			out = append(out, "RowDescription "+strings.Join(f, " "))
			continue
		case *pgproto3.ErrorResponse:
			out = append(out, fmt.Sprintf("ErrorResponse %s %s %s", m.Severity, m.Code, m.Message))
			continue
		case *pgproto3.ParameterStatus, *pgproto3.NoticeResponse:
			continue
		case *pgproto3.ReadyForQuery:
			n--
		}
		b, err := json.Marshal(msg)
		if err != nil {
			t.Fatalf("marshal %T: %v", msg, err)
		}
		out = append(out, string(b))
	}
	return out
}

// cursorStep is one exchange of a script: messages and the number of
// ReadyForQuery that end their answers.
type cursorStep struct {
	msgs []pgproto3.FrontendMessage
	n    int
}

func query(sql string) cursorStep {
	return cursorStep{msgs: []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}, n: 1}
}

// extended is Parse/Bind/Describe portal/Execute/Sync of sql, as libpq's
// PQsendQueryParams sends it (psycopg's force_extended), with text
// parameters and one result format for every column.
func extended(sql string, resultFormat int16, params ...string) cursorStep {
	var vals [][]byte
	for _, p := range params {
		vals = append(vals, []byte(p))
	}
	return cursorStep{msgs: []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: sql, ParameterOIDs: make([]uint32, len(params))},
		&pgproto3.Bind{Parameters: vals, ResultFormatCodes: []int16{resultFormat}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	}, n: 1}
}

// describePortal is psycopg's PQsendDescribePortal of a cursor.
func describePortal(name string) cursorStep {
	return cursorStep{msgs: []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: 'P', Name: name}, &pgproto3.Sync{}}, n: 1}
}

// compareScript runs steps on both sides and fails at the first exchange
// whose answers differ.
func compareScript(t *testing.T, enc, plain cursorSide, steps []cursorStep) {
	t.Helper()
	for i, st := range steps {
		want := plain.run(t, st.n, st.msgs...)
		got := enc.run(t, st.n, st.msgs...)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("step %d (%s): answers differ (-plaintext +proxy):\n%s", i, describeStep(st), diff)
		}
	}
}

func describeStep(st cursorStep) string {
	var s []string
	for _, m := range st.msgs {
		switch m := m.(type) {
		case *pgproto3.Query:
			s = append(s, "Query "+m.String)
		case *pgproto3.Parse:
			s = append(s, "Parse "+m.Query)
		default:
			s = append(s, fmt.Sprintf("%T", m)[len("*pgproto3."):])
		}
	}
	return strings.Join(s, ", ")
}

// TestCursorPsycopg replays what psycopg 3's named cursors send
// (psycopg/_server_cursor_base.py): DECLARE in the extended protocol with
// its parameters, Describe of the cursor's portal, FETCH FORWARD n (a
// simple Query in text, Parse/Bind/Execute for binary), MOVE, CLOSE.
func TestCursorPsycopg(t *testing.T) {
	p := startPHIProxy(t)
	env := setupCursors(t, p)
	ids := idList(env.ids)
	tids := idList(env.types)
	for _, tc := range []struct {
		name   string
		format int16
		steps  []cursorStep
	}{
		{"select star by email", 0, []cursorStep{
			query("BEGIN"),
			extended(`DECLARE "c" CURSOR FOR SELECT * FROM {patients} WHERE email = $1`, 0, env.email(0)),
			describePortal("c"),
			query(`FETCH FORWARD 5 FROM "c"`),
			query(`FETCH FORWARD 5 FROM "c"`),
			query(`CLOSE "c"`),
			query("COMMIT"),
		}},
		{"scroll with hold, text", 0, []cursorStep{
			extended(`DECLARE "c" SCROLL CURSOR WITH HOLD FOR SELECT * FROM {patients} WHERE id IN `+ids+` ORDER BY id`, 0),
			describePortal("c"),
			query(`FETCH FORWARD 2 FROM "c"`),
			query(`MOVE ABSOLUTE 0 FROM "c"`),
			query(`FETCH FORWARD ALL FROM "c"`),
			query(`MOVE -2 FROM "c"`),
			query(`FETCH FORWARD 1 FROM "c"`),
			query(`CLOSE "c"`),
		}},
		{"types, binary fetch", 1, []cursorStep{
			query("BEGIN"),
			extended(`DECLARE "t" NO SCROLL CURSOR FOR SELECT * FROM {types} WHERE id IN `+tids+` ORDER BY id`, 1),
			describePortal("t"),
			extended(`FETCH FORWARD 2 FROM "t"`, 1),
			extended(`FETCH FORWARD 2 FROM "t"`, 1),
			query("SELECT 1 FROM pg_catalog.pg_cursors WHERE name = 't'"),
			query(`CLOSE "t"`),
			query("COMMIT"),
		}},
		{"types, text fetch", 0, []cursorStep{
			query("BEGIN"),
			extended(`DECLARE "t" CURSOR FOR SELECT * FROM {types} WHERE id IN `+tids+` ORDER BY id`, 0),
			describePortal("t"),
			query(`FETCH FORWARD ALL FROM "t"`),
			query("ROLLBACK"),
		}},
		{"binary cursor, simple fetch", 0, []cursorStep{
			query("BEGIN"),
			query(`DECLARE b BINARY SCROLL CURSOR FOR SELECT * FROM {types} WHERE id IN ` + tids + ` ORDER BY id`),
			describePortal("b"),
			query(`FETCH 2 FROM b`),
			query(`FETCH PRIOR FROM b`),
			query(`FETCH ABSOLUTE 3 FROM b`),
			query(`FETCH RELATIVE -2 FROM b`),
			query(`FETCH LAST FROM b`),
			query(`FETCH FIRST FROM b`),
			query(`FETCH BACKWARD ALL FROM b`),
			query(`MOVE LAST IN b; FETCH BACKWARD 2 IN b`),
			query(`CLOSE b`),
			query(`FETCH 1 FROM b`),
			query("ROLLBACK"),
		}},
		{"execute the cursor's portal", 0, []cursorStep{
			query("BEGIN"),
			query(`DECLARE c CURSOR FOR SELECT * FROM {patients} WHERE id IN ` + ids + ` ORDER BY id`),
			{msgs: []pgproto3.FrontendMessage{&pgproto3.Execute{Portal: "c", MaxRows: 2}, &pgproto3.Sync{}}, n: 1},
			{msgs: []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: 'P', Name: "c"}, &pgproto3.Execute{Portal: "c", MaxRows: 1},
				&pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{}}, n: 1},
			query(`FETCH 1 FROM c`),
			query("COMMIT"),
		}},
		{"end of transaction and errors", 0, []cursorStep{
			query(`BEGIN; DECLARE c CURSOR FOR SELECT first_name, email FROM {patients} WHERE id IN ` + ids + ` ORDER BY id;
				DECLARE h CURSOR WITH HOLD FOR SELECT email, date_of_birth FROM {patients} WHERE id IN ` + ids + ` ORDER BY id`),
			query(`FETCH 1 FROM c; FETCH 1 FROM h`),
			query("COMMIT"),
			query(`FETCH 1 FROM c`),
			describePortal("c"),
			{msgs: []pgproto3.FrontendMessage{&pgproto3.Execute{Portal: "c"}, &pgproto3.Sync{}}, n: 1},
			describePortal("h"),
			{msgs: []pgproto3.FrontendMessage{&pgproto3.Execute{Portal: "h", MaxRows: 1}, &pgproto3.Sync{}}, n: 1},
			query(`FETCH 1 FROM h`),
			query(`DECLARE h CURSOR FOR SELECT 1`),
			query(`CLOSE ALL`),
			query(`FETCH 1 FROM h`),
			query(`BEGIN; DECLARE c CURSOR FOR SELECT * FROM {patients} WHERE email = '` + env.email(1) + `'`),
			query(`DECLARE c CURSOR FOR SELECT 1`),
			query("ROLLBACK"),
			query(`BEGIN; DECLARE c CURSOR FOR SELECT * FROM {patients} WHERE email = '` + env.email(2) + `'`),
			describePortal("c"),
			query(`FETCH ALL FROM c`),
			query("COMMIT"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, plain := newCursorSides(t, p)
			compareScript(t, enc, plain, tc.steps)
		})
	}
}
