package integration

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/crypto"
)

// The tenth independent attack on issue 9 (branch attack10): the whole
// PHI path, values that reach PHI columns by indirect routes. One test per
// finding, then the variants that held and no other test covers. Each PHI
// value is a secret() marker; the suite's leak check searches the server
// log, the data files and the proxy logs for every one.

// a10Refused sends each statement (with {M} replaced by a fresh marker)
// in the simple and the extended protocol, wants 0A000 for each, and
// checks that no marker reached the server or a PHI column.
func a10Refused(t *testing.T, label string, sqls []string) {
	t.Helper()
	p := startPHIProxy(t)
	ctx := context.Background()
	var markers []string
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		conn := phiConn(t, p, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
		for _, sql := range sqls {
			m := secret(label)
			markers = append(markers, m)
			text := strings.ReplaceAll(sql, "{M}", m)
			_, err := conn.Exec(ctx, text)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "0A000" {
				t.Errorf("%v: %s: got %v, want 0A000", mode, text, err)
			}
		}
	}
	noMarkerInServerLog(t, markers)
	noMarkerStored(t, markers)
	rows, err := phiDirect(t).Query(ctx, "SELECT first_name FROM patients WHERE first_name IS NOT NULL")
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range names {
		if !crypto.IsCiphertext([]byte(v)) {
			t.Errorf("patients.first_name holds a value that is not ciphertext")
		}
	}
}

// Finding 1 (leak, wrong answer). A set operation is refused when its
// result holds a PHI column, found by lining up the branches' columns
// with the left one's; a left branch whose columns the analysis does not
// list (VALUES, a set-returning function's rows through *, a CTE over
// VALUES) lined up nothing, so the right branch's PHI column went
// unseen: the literal was compared with ciphertext in plaintext (in the
// server's log; EXCEPT returned a row PostgreSQL does not return on the
// plaintext schema when the value is stored) and UNION returned
// ciphertext to the client.
func TestAttack10SetOperationLeftBranch(t *testing.T) {
	a10Refused(t, "a10-setop", []string{
		"VALUES ('{M}') EXCEPT SELECT ssn FROM patients",
		"VALUES ('{M}') INTERSECT SELECT ssn FROM patients",
		"VALUES ('{M}') UNION SELECT email FROM patients",
		"SELECT * FROM (VALUES ('{M}')) v(s) EXCEPT SELECT ssn FROM patients",
		"SELECT * FROM unnest(ARRAY['{M}']) EXCEPT SELECT ssn FROM patients",
		"WITH x AS (VALUES ('{M}')) SELECT * FROM x EXCEPT SELECT ssn FROM patients",
		"SELECT count(*) FROM (VALUES ('{M}') INTERSECT SELECT ssn FROM patients) x",
		"SELECT 1 WHERE EXISTS (VALUES ('{M}') INTERSECT SELECT ssn FROM patients)",
		"VALUES (1, '{M}') EXCEPT SELECT 1, ssn FROM patients",
	})
}

// Finding 3 (leak: plaintext stored). The rewriter pairs an INSERT's
// values with its columns by position; a row expansion ((expr).*, v.*, a
// bare * in a SELECT list) is one item to it and several columns to the
// server, which put the values after the first into PHI columns the
// rewriter had paired with nothing: INSERT INTO patients (id, first_name)
// VALUES ((ROW(1, 'Ada')).*) stored 'Ada' in plaintext. Without a column
// list the rewriter wrote one as wide as the items it counted, and the
// server refused the wider row, with the value in its log.
//
// Finding 4 (leak: plaintext stored). A set operation keeps its rows in
// its branches: INSERT INTO patients SELECT 1, 'Ada' UNION ALL SELECT …
// (or VALUES … UNION ALL VALUES …) has an empty SELECT list of its own,
// so the rewriter wrote out no column list, and the server put the values
// in the table's columns in order, first_name in plaintext.
//
// Both are refused now: row expansions in an INSERT into a policy table
// (0A000), and a set operation's column list is written out from its
// left-most branch, whose PHI columns make it an INSERT ... SELECT.
func TestAttack10InsertRowWidth(t *testing.T) {
	a10Refused(t, "a10-width", []string{
		"INSERT INTO patients (id, first_name) VALUES ((ROW(910001, '{M}')).*)",
		"INSERT INTO patients (id, first_name) VALUES ((ROW(910002, '{M}')::record).*)",
		"INSERT INTO patients (id, first_name) SELECT (ROW(910003, '{M}')).*",
		"INSERT INTO patients SELECT * FROM (VALUES (910004, '{M}')) v",
		"INSERT INTO patients SELECT v.* FROM (VALUES (910005, '{M}')) v",
		"INSERT INTO patients SELECT (v).* FROM (VALUES (910006, '{M}')) v",
		"INSERT INTO patients SELECT 910007, '{M}' UNION ALL SELECT 910008, 'x'",
		"INSERT INTO patients VALUES (910009, '{M}') UNION ALL VALUES (910010, 'x')",
		"INSERT INTO patients (SELECT 910011, 'x' UNION SELECT 910012, '{M}')",
		"INSERT INTO patients SELECT 910013, '{M}' EXCEPT SELECT 0, 'x'",
	})
}

// Finding 2 (wrong answer). A name parameter in binary format is read by
// namerecv, which refuses 64 bytes or more ("identifier too long",
// 42622); the proxy clipped it to 63 bytes as name's text input does and
// stored it.
func TestAttack10BinaryNameTooLong(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := phiDirect(t)
	if _, err := direct.Exec(ctx, "CREATE TEMP TABLE a10_plain (id int, city text)"); err != nil {
		t.Fatal(err)
	}
	value := secret("a10-name")
	long := value + strings.Repeat("n", 64-len(value))
	send := func(conn *pgconn.PgConn, sql string, v string) error {
		return conn.ExecParams(ctx, sql, [][]byte{[]byte(v)}, []uint32{pgtype.NameOID}, []int16{1}, nil).Read().Err
	}
	want := send(direct.PgConn(), "INSERT INTO a10_plain (city) VALUES ($1)", "plain-"+strings.Repeat("n", 58))
	refusedWith(t, want, "42622")
	proxied := phiConn(t, p).PgConn()
	refusedWith(t, send(proxied, "INSERT INTO patients (city) VALUES ($1)", long), "42622")
	refusedWith(t, send(proxied, "SELECT id FROM patients WHERE ssn = $1", long), "42622")
	short := long[:63]
	if err := send(proxied, "SELECT id FROM patients WHERE ssn = $1", short); err != nil {
		t.Errorf("63 bytes: %v", err)
	}
	noMarkerInServerLog(t, []string{value})
}

// Finding 5: a server-side function that changes DateStyle (or TimeZone)
// by itself, earlier in a text or a pipeline, made the values after it
// read and the dates after it shown under the settings last reported:
// SELECT f(); INSERT … VALUES ('01/02/2020') stored 2 January where
// PostgreSQL stores 1 February. The checks in front of later statements
// now compare the settings too and refuse the rest (55000); a function
// that leaves them alone costs nothing.
func TestAttack10DateStyleChangedByFunction(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := phiDirect(t)
	for _, sql := range []string{
		"CREATE OR REPLACE FUNCTION a10_dmy() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('datestyle', 'SQL, DMY', false); RETURN 1; END$$",
		"CREATE OR REPLACE FUNCTION a10_zone() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('timezone', 'Asia/Tokyo', false); RETURN 1; END$$",
		"CREATE OR REPLACE FUNCTION a10_scs() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('standard_conforming_strings', 'off', false); RETURN 1; END$$",
		"CREATE OR REPLACE FUNCTION a10_same() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('application_name', 'a10', false); RETURN 1; END$$",
	} {
		if _, err := direct.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	conn := phiConn(t, p)
	var id int64
	if err := conn.QueryRow(ctx, "INSERT INTO patients (first_name, date_of_birth) VALUES ($1, '1985-03-14') RETURNING id", secret("a10-dob")).Scan(&id); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, answers []queryAnswer) {
		t.Helper()
		last := answers[len(answers)-1]
		if !strings.HasPrefix(last.Err, "55000") || !strings.Contains(last.Err, "or standard_conforming_strings changed") {
			t.Errorf("%s: %+v, want 55000 (a setting changed)", what, answers)
		}
	}
	count := func() (n int) {
		t.Helper()
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM patients").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	refused("insert after a function set DateStyle", runText(t, conn.PgConn(),
		"SELECT a10_dmy(); INSERT INTO patients (first_name, date_of_birth) VALUES ('"+secret("a10-datestyle")+"', '01/02/2020') RETURNING date_of_birth"))
	read := "SELECT date_of_birth FROM patients WHERE id = " + strconv.FormatInt(id, 10)
	refused("date shown after a function set DateStyle", runText(t, conn.PgConn(), "SELECT a10_dmy(); "+read))
	refused("date shown after a function set TimeZone", runText(t, conn.PgConn(), "SELECT a10_zone(); "+read))
	// The client's literals were read under standard_conforming_strings
	// on; the server would read the rest of the text under off.
	refused("insert after a function set standard_conforming_strings", runText(t, conn.PgConn(),
		"SELECT a10_scs(); INSERT INTO patients (first_name) VALUES ('"+secret("a10-scs")+"')"))

	// A pipeline: the guard in front of the INSERT checks them.
	b := &pgx.Batch{}
	b.Queue("SELECT a10_dmy()")
	b.Queue("INSERT INTO patients (first_name, date_of_birth) VALUES ($1, $2)", secret("a10-pipeline"), "01/02/2020")
	err := conn.SendBatch(ctx, b).Close()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "55000" || !strings.Contains(pe.Message, "or standard_conforming_strings changed") {
		t.Errorf("pipeline: %v, want 55000 (a setting changed)", err)
	}
	if n := count(); n != before {
		t.Errorf("%d rows stored by the refused statements", n-before)
	}

	// Settings left alone, or changed by a statement the proxy reads
	// (the values after it refused as before): answered as directly.
	got := runText(t, conn.PgConn(), "SELECT a10_same(); "+read)
	want := runText(t, direct.PgConn(), "SELECT a10_same(); SELECT '1985-03-14'::date AS date_of_birth")
	if len(got) != 2 || len(want) != 2 || got[1].Err != "" || len(got[1].Rows) != 1 || got[1].Rows[0][0] != want[1].Rows[0][0] {
		t.Errorf("a function leaving DateStyle alone:\n got %+v\nwant %+v", got, want)
	}
	if got := runText(t, conn.PgConn(), "SET datestyle = 'SQL, DMY'; SELECT 1 AS one"); len(got) != 2 || got[1].Err != "" {
		t.Errorf("SET then a statement without dates: %+v", got)
	}
	runText(t, conn.PgConn(), "RESET datestyle")
}

// Found nothing: values bound for PHI columns by other indirect routes are
// refused (0A000) and never reach the server.
func TestAttack10IndirectValuesRefused(t *testing.T) {
	a10Refused(t, "a10-held", []string{
		"INSERT INTO patients (city) WITH v AS (SELECT '{M}' AS c) SELECT c FROM v",
		"WITH v(c) AS (VALUES ('{M}')) INSERT INTO patients (city) SELECT c FROM v",
		"INSERT INTO patients (city) VALUES ((SELECT '{M}'))",
		"INSERT INTO patients (city) VALUES ('{M}' COLLATE \"C\")",
		"INSERT INTO patients (first_name, city) VALUES ('a', '{M}') ON CONFLICT (id) DO UPDATE SET city = EXCLUDED.city || 'x'",
		"INSERT INTO patients (id, city) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET city = EXCLUDED.state /* {M} */",
		"INSERT INTO patients (additional_info['a']) VALUES ('\"{M}\"')",
		"INSERT INTO patients (ssn) SELECT ssn FROM json_populate_record(null::patients, '{\"ssn\":\"{M}\"}')",
		"UPDATE patients SET (city, state) = (SELECT '{M}', 'y') WHERE id = 0",
		"UPDATE patients SET (city, state) = ROW('{M}', 'y') WHERE id = 0",
		"UPDATE patients p SET city = v.c FROM (VALUES ('{M}')) v(c) WHERE p.id = 0",
		"UPDATE patients SET additional_info['a'] = '\"{M}\"' WHERE id = 0",
		"MERGE INTO patients p USING (SELECT 0 AS id) s ON p.id = s.id WHEN NOT MATCHED THEN INSERT (city) VALUES ('{M}')",
		"DELETE FROM patients USING (VALUES ('{M}')) v(s) WHERE patients.ssn = v.s",
		"SELECT id FROM patients WHERE ssn = ANY('{{M},y}')",
		"SELECT id FROM patients WHERE ssn = ANY(string_to_array('{M}', ','))",
		"SELECT id FROM patients WHERE ssn IN (VALUES ('{M}'))",
		"SELECT id FROM patients WHERE ssn = (SELECT '{M}')",
		"SELECT id FROM patients WHERE (ssn, id) = ('{M}', 1)",
		"SELECT id FROM patients WHERE ssn COLLATE \"C\" = '{M}'",
		"SELECT id FROM patients WHERE ssn = '{M}'::char(20)",
		"SELECT id FROM patients WHERE ssn = '{M}'::text::varchar",
		"SELECT id FROM patients WHERE ssn = '{M}'::\"char\"",
		"SELECT * FROM patients JOIN (SELECT '{M}' AS ssn) x USING (ssn)",
		"SELECT * FROM (SELECT ssn AS s FROM patients UNION ALL SELECT ssn FROM patients) x WHERE s = '{M}'",
		"SELECT count(*) FROM patients GROUP BY id HAVING max(ssn) = '{M}'",
		"SELECT coalesce(ssn, '{M}') FROM patients",
		"SELECT ssn || '{M}' FROM patients",
	})
}

// Found nothing: a parameter bound for a PHI column and reused as a plain
// value is refused; typed and binary parameters are read as the server
// reads them (name clipped, bpchar trimmed, jsonb normalized, int4 in a
// text column printed as the server prints it).
func TestAttack10ParametersAnswerAsDirect(t *testing.T) {
	p := startPHIProxy(t)
	ctx := context.Background()
	direct := phiDirect(t)
	if _, err := direct.Exec(ctx, "CREATE TEMP TABLE a10_plain (id int, city text)"); err != nil {
		t.Fatal(err)
	}
	proxied := phiConn(t, p).PgConn()
	for _, sql := range []string{
		"SELECT $1::text AS v, id FROM patients WHERE ssn = $1",
		"SELECT id FROM patients WHERE ssn = $1 OR $1 IS NULL",
		"INSERT INTO patients (city) VALUES ($1) RETURNING $1",
		"SELECT pg_notify($1, $1) FROM patients WHERE ssn = $1",
	} {
		m := secret("a10-param")
		err := proxied.ExecParams(ctx, sql, [][]byte{[]byte(m)}, nil, nil, nil).Read().Err
		refusedWith(t, err, "0A000")
		noMarkerInServerLog(t, []string{m})
	}
	for i, c := range []struct {
		oid    uint32
		format int16
		value  string
	}{
		{pgtype.NameOID, 0, "a10-name-" + strings.Repeat("n", 60)},
		{pgtype.BPCharOID, 0, "a10-bpchar  "},
		{pgtype.BPCharOID, 1, "a10-bpchar-binary  "},
		{pgtype.JSONBOID, 0, `{"b": 1,  "a": [2]}`},
		{pgtype.JSONOID, 0, `{"b": 1,  "a": [2]}`},
		{pgtype.Int4OID, 0, " 007 "},
		{pgtype.BoolOID, 0, "YES"},
		{pgtype.UUIDOID, 0, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"},
		{pgtype.VarcharOID, 0, "a10-varchar  "},
	} {
		id := 920000 + i
		v := [][]byte{[]byte(c.value)}
		if err := proxied.ExecParams(ctx, "INSERT INTO patients (id, city) VALUES ("+strconv.Itoa(id)+", $1)", v, []uint32{c.oid}, []int16{c.format}, nil).Read().Err; err != nil {
			t.Fatalf("oid %d: %v", c.oid, err)
		}
		if err := direct.PgConn().ExecParams(ctx, "INSERT INTO a10_plain (id, city) VALUES ("+strconv.Itoa(id)+", $1)", v, []uint32{c.oid}, []int16{c.format}, nil).Read().Err; err != nil {
			t.Fatalf("oid %d direct: %v", c.oid, err)
		}
		var got, want string
		if err := phiConn(t, p).QueryRow(ctx, "SELECT city FROM patients WHERE id = $1", id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if err := direct.QueryRow(ctx, "SELECT city FROM a10_plain WHERE id = $1", id).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("oid %d format %d: stored %q, PostgreSQL stores %q", c.oid, c.format, got, want)
		}
		if _, err := direct.Exec(ctx, "DELETE FROM patients WHERE id = $1", id); err != nil {
			t.Fatal(err)
		}
	}
}
