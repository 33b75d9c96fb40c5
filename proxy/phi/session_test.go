package phi

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Scripted conversations through the PHI layer (script_test.go): what the
// server receives and what the client sees, message by message.

var patientsRD = &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
	field("id", 6, 23), field("email", 1, 25), field("email_bidx", 2, 25), field("date_of_birth", 3, 25),
}}

func TestScriptSimpleQuery(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		// A literal is encrypted and indexed in place.
		f.expect("Query INSERT INTO patients (email, email_bidx) VALUES ('ENC(public.patients.email:a@x.org)', 'IDX-public.patients.email-a@x.org')")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		f.ready()
		// Rows are decrypted by table OID and attribute number; the
		// blind index is hidden and the logical types shown.
		f.expect("Query SELECT * FROM patients WHERE email_bidx = 'IDX-public.patients.email-a@x.org'")
		f.rows(patientsRD,
			[]string{"1", "ENC(public.patients.email:a@x.org)", "IDX-public.patients.email-a@x.org", "ENC(public.patients.date_of_birth:1990-01-02)"},
			[]string{"2", "NULL", "NULL", "NULL"})
		f.ready()
		// A text that names no policy table goes through untouched.
		f.expect("Query SELECT 1")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("?column?", 0, 23)}}, []string{"1"})
		f.ready()
	})
	c.send(&pgproto3.Query{String: "INSERT INTO patients (email) VALUES ('a@x.org')"})
	c.expect("CommandComplete INSERT 0 1", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT * FROM patients WHERE email = 'a@x.org'"})
	c.expect("RowDescription id:23/0 email:25/0 date_of_birth:1082/0",
		`DataRow "1" "a@x.org" "1990-01-02"`, `DataRow "2" NULL NULL`,
		"CommandComplete SELECT 2", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT 1"})
	c.expect("RowDescription ?column?:23/0", `DataRow "1"`, "CommandComplete SELECT 1", "ReadyForQuery I")
}

func TestScriptExtended(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		// Parse declares the storage type of the PHI parameter and a text
		// blind index; Bind sends the ciphertext and the index.
		f.expect(
			`Parse "s1" SELECT id, email, date_of_birth FROM patients WHERE email_bidx = $1 [25]`,
			"Describe S \"s1\"",
			"Sync")
		f.send(&pgproto3.ParseComplete{},
			&pgproto3.ParameterDescription{ParameterOIDs: []uint32{25}},
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23), field("email", 1, 25), field("date_of_birth", 3, 25)}})
		f.ready()
		f.expect(
			`Bind "" "s1" [0] ["IDX-public.patients.email-b@x.org"] [0 1 1]`,
			`Execute ""`,
			"Sync")
		f.send(&pgproto3.BindComplete{})
		f.rows(nil, []string{"\x00\x00\x00\x07", "ENC(public.patients.email:b@x.org)", "ENC(public.patients.date_of_birth:2000-02-29)"})
		f.ready()
	})
	c.send(&pgproto3.Parse{Name: "s1", Query: "SELECT id, email, date_of_birth FROM patients WHERE email = $1"},
		&pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ParameterDescription [25]",
		"RowDescription id:23/0 email:25/0 date_of_birth:1082/0", "ReadyForQuery I")
	c.send(&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("b@x.org")}, ResultFormatCodes: []int16{0, 1, 1}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	// date_of_birth in binary: days since 2000-01-01.
	c.expect("BindComplete", `DataRow "\x00\x00\x00\a" "b@x.org" "\x00\x00\x00;"`, "CommandComplete SELECT 1", "ReadyForQuery I")
}

// TestScriptUndescribedPortal: the client executes a portal it never
// described; the proxy describes it itself, unseen.
func TestScriptUndescribedPortal(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Parse "" SELECT email FROM patients WHERE id = $1 [0]`,
			`Bind "" "" [0] ["6"] []`, `Describe P ""`, `Execute ""`, "Sync")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("email", 1, 25)}})
		f.rows(nil, []string{"ENC(public.patients.email:c@x.org)"})
		f.ready()
	})
	c.send(&pgproto3.Parse{Query: "SELECT email FROM patients WHERE id = $1"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("6")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ParseComplete", "BindComplete", `DataRow "c@x.org"`, "CommandComplete SELECT 1", "ReadyForQuery I")
}

// TestScriptRaise: a refused statement is raised by the server itself, in
// both protocols; the DO block's Where and File never reach the client.
func TestScriptRaise(t *testing.T) {
	raiseErr := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "0A000",
		Message: "phiproxy: …", Where: "PL/pgSQL function inline_code_block line 1 at RAISE", File: "pl_exec.c", Line: 3911}
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect("Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…")
		f.send(raiseErr)
		f.ready()
		f.expect(`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…`,
			`Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, raiseErr)
		f.ready()
	})
	c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email LIKE '%x%'"})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: …", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Query: "SELECT id FROM patients WHERE email LIKE $1"},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: …", "ReadyForQuery I")
}

// TestScriptDecryptFailure: a value that does not decrypt ends its result
// with XX001 naming the column; the server's answers up to ReadyForQuery
// are dropped and the session goes on.
func TestScriptDecryptFailure(t *testing.T) {
	c, eng := scripted(t, func(f *fakeServer) {
		f.expect("Query SELECT email FROM patients; SELECT 2")
		rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("email", 1, 25)}}
		f.rows(rd, []string{"ENC(public.patients.email:ok)"}, []string{"plaintext"}, []string{"ENC(public.patients.email:later)"})
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("?column?", 0, 23)}}, []string{"2"})
		f.ready()
		f.expect("Query SELECT 3")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("?column?", 0, 23)}}, []string{"3"})
		f.ready()
	})
	c.send(&pgproto3.Query{String: "SELECT email FROM patients; SELECT 2"})
	c.expect("RowDescription email:25/0", `DataRow "ok"`,
		"ErrorResponse ERROR XX001 phiproxy: decryption failed for column public.patients.email", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT 3"})
	c.expect("RowDescription ?column?:23/0", `DataRow "3"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	if got := counter(t, eng.metrics.decryptFailure.WithLabelValues("not_ciphertext")); got != 1 {
		t.Errorf("decryption failures counted: %v, want 1", got)
	}
}

// TestScriptStatementTracking: the server's answers decide which statement
// a name holds. A named Parse the server refuses leaves the old statement;
// a Bind pipelined after an unanswered redefinition in an earlier batch is
// refused rather than guessed; a Close confirmed by the server forgets it.
func TestScriptStatementTracking(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Parse "s" SELECT 1 []`, "Sync")
		f.send(&pgproto3.ParseComplete{})
		f.ready()
		// The redefinition with PHI fails on the server (say, a duplicate
		// name): the name keeps the passthrough statement.
		f.expect(`Parse "s" SELECT email FROM patients WHERE email_bidx = $1 [25]`, "Sync")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P05", Message: "prepared statement \"s\" already exists"})
		f.ready()
		// Its portal's rows may still hold PHI: described, unseen.
		f.expect(`Bind "" "s" [] [] []`, `Describe P ""`, `Execute ""`, "Sync")
		f.send(&pgproto3.BindComplete{}, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("?column?", 0, 23)}})
		f.rows(nil, []string{"1"})
		f.ready()
		// A redefinition and, in the next batch before its answer, a Bind.
		f.expect(`Parse "s" SELECT email FROM patients WHERE email_bidx = $1 [25]`, "Sync",
			`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO …`, `Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.ParseComplete{})
		f.ready()
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: "55000", Message: "phiproxy: …"})
		f.ready()
		// Close, confirmed: a later Bind of the name is forwarded raw.
		f.expect(`Close S "s"`, "Sync")
		f.send(&pgproto3.CloseComplete{})
		f.ready()
		f.expect(`Bind "" "s" [] [] []`, "Sync")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "26000", Message: "prepared statement \"s\" does not exist"})
		f.ready()
	})
	c.send(&pgproto3.Parse{Name: "s", Query: "SELECT 1"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Name: "s", Query: "SELECT email FROM patients WHERE email = $1"}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 42P05 prepared statement \"s\" already exists", "ReadyForQuery I")
	c.send(&pgproto3.Bind{PreparedStatement: "s"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("BindComplete", `DataRow "1"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Name: "s", Query: "SELECT email FROM patients WHERE email = $1"}, &pgproto3.Sync{},
		&pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("x")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ReadyForQuery I")
	c.expect("ErrorResponse ERROR 55000 phiproxy: …", "ReadyForQuery I")
	c.send(&pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{})
	c.expect("CloseComplete", "ReadyForQuery I")
	c.send(&pgproto3.Bind{PreparedStatement: "s"}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 26000 prepared statement \"s\" does not exist", "ReadyForQuery I")
}

// TestScriptCatalogReload: DDL marks the catalog stale; it is read again,
// unseen, before the next statement, and the new blind-index column is
// used at once. Until then a table that is not ready is refused (55000),
// and each refusal has the catalog read again before the next statement.
func TestScriptCatalogReload(t *testing.T) {
	noBidx := [][]string{testCatalog[0], testCatalog[2], testCatalog[3], testCatalog[4], testCatalog[5]}
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect("Query ALTER TABLE patients DROP COLUMN email_bidx")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("ALTER TABLE")})
		f.ready()
		f.catalog(noBidx)
		f.expect("Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '55000'…")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "55000", Message: "phiproxy: table public.patients is not ready…"})
		f.ready()
		f.catalog(noBidx) // after a refusal: read again, in case it was fixed
		f.expect("Query ALTER TABLE patients ADD COLUMN email_bidx text")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("ALTER TABLE")})
		f.ready()
		f.catalog(testCatalog)
		f.expect("Query SELECT id FROM patients WHERE email_bidx = 'IDX-public.patients.email-d@x.org'")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23)}})
		f.ready()
	})
	c.send(&pgproto3.Query{String: "ALTER TABLE patients DROP COLUMN email_bidx"})
	c.expect("CommandComplete ALTER TABLE", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email = 'd@x.org'"})
	c.expect("ErrorResponse ERROR 55000 phiproxy: table public.patients is not ready…", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "ALTER TABLE patients ADD COLUMN email_bidx text"})
	c.expect("CommandComplete ALTER TABLE", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email = 'd@x.org'"})
	c.expect("RowDescription id:23/0", "CommandComplete SELECT 0", "ReadyForQuery I")
}

// TestScriptRefusals: invalid values, a wrong parameter count and
// standard_conforming_strings off are refused with their SQLSTATEs, raised
// by the server.
func TestScriptRefusals(t *testing.T) {
	raised := func(f *fakeServer, code string) {
		f.expect(`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '`+code+`'…`,
			`Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: code, Message: "phiproxy: …"})
		f.ready()
	}
	c, eng := scripted(t, func(f *fakeServer) {
		f.expect(`Parse "" INSERT INTO patients (date_of_birth) VALUES ($1) [25]`, "Sync")
		f.send(&pgproto3.ParseComplete{})
		f.ready()
		// Not a date: the marker goes in its place, and the server's
		// error for it becomes the proxy's.
		f.expect(`Bind "" "" [0] ["\xff\xfe phiproxy invalid value"] []`, `Describe P ""`, `Execute ""`, "Sync")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "22021", Message: `invalid byte sequence for encoding "UTF8": 0xff`,
			Where: "unnamed portal parameter $1"})
		f.ready()
		raised(f, "08P01") // two values for one parameter
		f.expect("Query SET standard_conforming_strings = off")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("SET")},
			&pgproto3.ParameterStatus{Name: "standard_conforming_strings", Value: "off"})
		f.ready()
		// Without a backslash the text reads the same either way.
		f.expect("Query SELECT id FROM patients WHERE email_bidx = 'IDX-public.patients.email-e@x.org'")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23)}})
		f.ready()
		// With a backslash, the simple protocol's lexer reads it as the
		// server will ('\x40' is '@'); Parse's pg_query cannot.
		f.expect("Query SELECT id FROM patients WHERE email_bidx = 'IDX-public.patients.email-e@x.org'")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23)}})
		f.ready()
		f.expect(`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…`,
			`Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "phiproxy: …"})
		f.ready()
		// A text that is not ASCII, pipelined behind a statement that may
		// change client_encoding, cannot be read for certain.
		f.expect("Query SET client_encoding = 'SJIS'", "Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("SET")})
		f.ready()
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "phiproxy: …"})
		f.ready()
	})
	c.send(&pgproto3.Parse{Query: "INSERT INTO patients (date_of_birth) VALUES ($1)"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ReadyForQuery I")
	c.send(&pgproto3.Bind{Parameters: [][]byte{[]byte("not a date")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 22007 phiproxy: invalid input syntax for type date (parameter $1 for public.patients.date_of_birth)", "ReadyForQuery I")
	c.send(&pgproto3.Bind{Parameters: [][]byte{[]byte("2000-01-01"), []byte("x")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 08P01 phiproxy: …", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SET standard_conforming_strings = off"})
	c.expect("CommandComplete SET", "ParameterStatus", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email = 'e@x.org'"})
	c.expect("RowDescription id:23/0", "CommandComplete SELECT 0", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: `SELECT id FROM patients WHERE email = 'e\x40x.org'`})
	c.expect("RowDescription id:23/0", "CommandComplete SELECT 0", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Query: `SELECT id FROM patients WHERE email = 'e\x40x.org'`}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: …", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SET client_encoding = 'SJIS'"}, &pgproto3.Query{String: "SELECT id FROM patients WHERE email = 'é@x.org'"})
	c.expect("CommandComplete SET", "ReadyForQuery I")
	c.expect("ErrorResponse ERROR 0A000 phiproxy: …", "ReadyForQuery I")
	for reason, want := range map[string]float64{"invalid_value": 1, "protocol": 1, "settings": 2} {
		if got := counter(t, eng.metrics.statements.WithLabelValues("rejected_"+reason)); got != want {
			t.Errorf("rejected_%s = %v, want %v", reason, got, want)
		}
	}
}

// TestScriptPortals: a passthrough statement's portal, described by the
// client, still decrypts the PHI its rows hold (FETCH from a cursor), and
// a closed portal is forgotten.
func TestScriptPortals(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Parse "" FETCH 1 FROM cur []`, `Bind "p" "" [] [] []`, `Describe P "p"`, `Execute "p"`, `Close P "p"`, "Sync")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("email", 1, 25), field("email_bidx", 2, 25)}})
		f.rows(nil, []string{"ENC(public.patients.email:f@x.org)", "IDX-public.patients.email-f@x.org"})
		f.send(&pgproto3.CloseComplete{})
		f.ready()
	})
	c.send(&pgproto3.Parse{Query: "FETCH 1 FROM cur"}, &pgproto3.Bind{DestinationPortal: "p"},
		&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p"},
		&pgproto3.Close{ObjectType: 'P', Name: "p"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "BindComplete", "RowDescription email:25/0", `DataRow "f@x.org"`,
		"CommandComplete SELECT 1", "CloseComplete", "ReadyForQuery I")
}

// TestScriptForgets: the session forgets what PostgreSQL forgets, so a
// client that prepares and closes many statements, or binds many named
// portals, holds bounded memory in the proxy (issue 9, item 9).
func TestScriptForgets(t *testing.T) {
	const n = 2000
	var sess *session
	c, _ := scripted(t, func(f *fakeServer) {
		for i := range n {
			f.expect(fmt.Sprintf(`Parse "s%d" SELECT email FROM patients WHERE email_bidx = $1 [25]`, i),
				fmt.Sprintf(`Bind "p%d" "s%d" [0] ["IDX-public.patients.email-x"] []`, i, i),
				fmt.Sprintf(`Close S "s%d"`, i), "Sync")
			f.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CloseComplete{})
			f.ready()
		}
	}, func(s *session) { sess = s })
	for i := range n {
		c.send(&pgproto3.Parse{Name: fmt.Sprintf("s%d", i), Query: "SELECT email FROM patients WHERE email = $1"},
			&pgproto3.Bind{DestinationPortal: fmt.Sprintf("p%d", i), PreparedStatement: fmt.Sprintf("s%d", i), Parameters: [][]byte{[]byte("x")}},
			&pgproto3.Close{ObjectType: 'S', Name: fmt.Sprintf("s%d", i)}, &pgproto3.Sync{})
		c.expect("ParseComplete", "BindComplete", "CloseComplete", "ReadyForQuery I")
	}
	// The session's maps are read here only after its last batch was
	// answered: clientToServer is waiting for the client.
	if len(sess.statements) > 2*minSweep || len(sess.portals) > 1 {
		t.Errorf("after %d closed statements and ended portals: %d statements, %d portals kept", n, len(sess.statements), len(sess.portals))
	}
}

// TestScriptSimpleQueryShapes: texts of one shape, as a driver sends them
// with their values as literals, are rewritten each with its own values:
// the first analyzed, the second made from the cached shape, the next
// from the session's template of it (rewrite.SimpleScratch). A literal
// the shape forwards (id) goes as written.
func TestScriptSimpleQueryShapes(t *testing.T) {
	emails := []string{"a@x.org", "b@x.org", "c@x.org", "d@x.org"}
	c, _ := scripted(t, func(f *fakeServer) {
		for i, e := range emails {
			f.expect(fmt.Sprintf("Query INSERT INTO patients (id, email, email_bidx) VALUES ('%d', 'ENC(public.patients.email:%s)', 'IDX-public.patients.email-%[2]s')",
				i, e))
			f.send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
			f.ready()
			f.expect(fmt.Sprintf("Query SELECT id FROM patients WHERE email_bidx = 'IDX-public.patients.email-%s' AND id <> '%d'", e, i))
			f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23)}}, []string{fmt.Sprint(i)})
			f.ready()
		}
	})
	for i, e := range emails {
		c.send(&pgproto3.Query{String: fmt.Sprintf("INSERT INTO patients (id, email) VALUES ('%d', '%s')", i, e)})
		c.expect("CommandComplete INSERT 0 1", "ReadyForQuery I")
		c.send(&pgproto3.Query{String: fmt.Sprintf("SELECT id FROM patients WHERE email = '%s' AND id <> '%d'", e, i)})
		c.expect("RowDescription id:23/0", fmt.Sprintf("DataRow %q", fmt.Sprint(i)), "CommandComplete SELECT 1", "ReadyForQuery I")
	}
}
