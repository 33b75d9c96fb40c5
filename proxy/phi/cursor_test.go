package phi

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/rewrite"
)

// cursorFields is how the fake server describes a cursor over the test
// table: email, its blind index, date_of_birth and id.
var cursorFields = &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
	field("email", 1, 25), field("email_bidx", 2, 25), field("date_of_birth", 3, 25), field("id", 6, 23)}}

// cursorRow is a row of that cursor as stored.
var cursorRow = []string{"ENC(public.patients.email:f@x.org)", "IDX-public.patients.email-f@x.org", "ENC(public.patients.date_of_birth:1990-01-02)", "5"}

// TestScriptCursorPsycopg: psycopg 3's named cursor. The DECLARE goes in
// the extended protocol with its parameter indexed; the Describe of the
// cursor's portal, which the proxy never saw bound, is answered as a
// SELECT's (logical types, no blind index); FETCH rows are decrypted; the
// session remembers the cursor until CLOSE.
func TestScriptCursorPsycopg(t *testing.T) {
	var sess *session
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Parse "" DECLARE "c" CURSOR FOR SELECT * FROM patients WHERE email_bidx = $1 [25]`,
			`Bind "" "" [0] ["IDX-public.patients.email-f@x.org"] [0]`, `Describe P ""`, `Execute ""`, "Sync")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{},
			&pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
		f.expect(`Describe P "c"`, "Sync")
		f.send(cursorFields, &pgproto3.ReadyForQuery{TxStatus: 'T'})
		f.expect(`Query FETCH FORWARD 2 FROM "c"`)
		f.rows(cursorFields, cursorRow)
		f.send(&pgproto3.ReadyForQuery{TxStatus: 'T'})
		f.expect(`Query CLOSE "c"`)
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("CLOSE CURSOR")}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
	}, func(s *session) { sess = s })
	c.send(&pgproto3.Parse{Query: `DECLARE "c" CURSOR FOR SELECT * FROM patients WHERE email = $1`, ParameterOIDs: []uint32{0}},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("f@x.org")}, ResultFormatCodes: []int16{0}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ParseComplete", "BindComplete", "NoData", "CommandComplete DECLARE CURSOR", "ReadyForQuery T")
	if k := sess.cursors["c"]; k == nil || k.hold || k.db != sess.db {
		t.Fatalf("cursor c remembered as %+v", k)
	}
	c.send(&pgproto3.Describe{ObjectType: 'P', Name: "c"}, &pgproto3.Sync{})
	c.expect("RowDescription email:25/0 date_of_birth:1082/0 id:23/0", "ReadyForQuery T")
	c.send(&pgproto3.Query{String: `FETCH FORWARD 2 FROM "c"`})
	c.expect("RowDescription email:25/0 date_of_birth:1082/0 id:23/0", `DataRow "f@x.org" "1990-01-02" "5"`, "CommandComplete SELECT 1", "ReadyForQuery T")
	c.send(&pgproto3.Query{String: `CLOSE "c"`})
	c.expect("CommandComplete CLOSE CURSOR", "ReadyForQuery T")
	if len(sess.cursors) != 0 {
		t.Errorf("cursors after CLOSE: %v", sess.cursors)
	}
}

// TestScriptCursorExecute: an Execute of a cursor's portal gets a hidden
// Describe in front, whose description decrypts its rows; a FETCH bound
// with a format per column the client sees gets them mapped onto the
// server's columns, blind index included.
func TestScriptCursorExecute(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Query DECLARE c CURSOR FOR SELECT * FROM patients`)
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
		f.expect(`Describe P "c"`, `Execute "c"`, "Sync")
		f.send(cursorFields)
		f.be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(cursorRow[0]), []byte(cursorRow[1]), nil, []byte(cursorRow[3])}})
		f.send(&pgproto3.PortalSuspended{}, &pgproto3.ReadyForQuery{TxStatus: 'T'})
		f.expect(`Parse "f" FETCH 1 FROM c []`, `Describe S "f"`, "Sync")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{}, cursorFields, &pgproto3.ReadyForQuery{TxStatus: 'T'})
		f.expect(`Bind "" "f" [] [] [1 0 1 1]`, `Describe P ""`, `Execute ""`, "Sync")
		f.send(&pgproto3.BindComplete{}, withFormats(cursorFields, 1, 0, 1, 1))
		f.rows(nil)
		f.send(&pgproto3.ReadyForQuery{TxStatus: 'T'})
	})
	c.send(&pgproto3.Query{String: "DECLARE c CURSOR FOR SELECT * FROM patients"})
	c.expect("CommandComplete DECLARE CURSOR", "ReadyForQuery T")
	c.send(&pgproto3.Execute{Portal: "c", MaxRows: 1}, &pgproto3.Sync{})
	c.expect(`DataRow "f@x.org" NULL "5"`, "PortalSuspended", "ReadyForQuery T")
	c.send(&pgproto3.Parse{Name: "f", Query: "FETCH 1 FROM c"}, &pgproto3.Describe{ObjectType: 'S', Name: "f"}, &pgproto3.Sync{})
	c.expect("ParseComplete", "ParameterDescription []", "RowDescription email:25/0 date_of_birth:1082/0 id:23/0", "ReadyForQuery T")
	c.send(&pgproto3.Bind{PreparedStatement: "f", ResultFormatCodes: []int16{1, 1, 1}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("BindComplete", "CommandComplete SELECT 0", "ReadyForQuery T")
}

// withFormats is rd with the given result formats.
func withFormats(rd *pgproto3.RowDescription, formats ...int16) *pgproto3.RowDescription {
	out := &pgproto3.RowDescription{Fields: append([]pgproto3.FieldDescription(nil), rd.Fields...)}
	for i := range out.Fields {
		out.Fields[i].Format = formats[i]
	}
	return out
}

// TestScriptCursorLifetime: the session forgets a cursor when PostgreSQL
// drops it — CLOSE ALL, DISCARD ALL, a protocol Close, another DECLARE of
// its name without PHI, the end of its transaction unless WITH HOLD — and
// remembers at most maxCursors.
func TestScriptCursorLifetime(t *testing.T) {
	var sess *session
	ok := func(f *fakeServer, status byte, tags ...string) {
		for _, tag := range tags {
			f.be.Send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
		}
		f.send(&pgproto3.ReadyForQuery{TxStatus: status})
	}
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Query BEGIN; DECLARE a CURSOR FOR SELECT id FROM patients; DECLARE h CURSOR WITH HOLD FOR SELECT email FROM patients`)
		ok(f, 'T', "BEGIN", "DECLARE CURSOR", "DECLARE CURSOR")
		f.expect(`Query COMMIT`)
		ok(f, 'I', "COMMIT")
		f.expect(`Query SELECT 1`)
		ok(f, 'I', "SELECT 1")
		f.expect(`Query DECLARE h CURSOR FOR SELECT 1`)
		ok(f, 'I', "DECLARE CURSOR")
		f.expect(`Query DECLARE x CURSOR WITH HOLD FOR SELECT id FROM patients; DECLARE y CURSOR WITH HOLD FOR SELECT id FROM patients`)
		ok(f, 'I', "DECLARE CURSOR", "DECLARE CURSOR")
		f.expect(`Close P "x"`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		f.expect(`Query DISCARD ALL`)
		ok(f, 'I', "DISCARD ALL")
		for i := range maxCursors + 10 {
			f.expect(fmt.Sprintf(`Query DECLARE c%d CURSOR WITH HOLD FOR SELECT id FROM patients`, i))
			ok(f, 'I', "DECLARE CURSOR")
		}
		f.expect(`Query CLOSE ALL`)
		ok(f, 'I', "CLOSE CURSOR ALL")
	}, func(s *session) { sess = s })
	names := func() []string {
		var out []string
		for n := range sess.cursors {
			out = append(out, n)
		}
		return out
	}
	c.send(&pgproto3.Query{String: "BEGIN; DECLARE a CURSOR FOR SELECT id FROM patients; DECLARE h CURSOR WITH HOLD FOR SELECT email FROM patients"})
	c.expect("CommandComplete BEGIN", "CommandComplete DECLARE CURSOR", "CommandComplete DECLARE CURSOR", "ReadyForQuery T")
	if len(sess.cursors) != 2 {
		t.Fatalf("cursors %v, want a and h", names())
	}
	c.send(&pgproto3.Query{String: "COMMIT"})
	c.expect("CommandComplete COMMIT", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT 1"}) // the next batch sweeps
	c.expect("CommandComplete SELECT 1", "ReadyForQuery I")
	if k := sess.cursors["h"]; len(sess.cursors) != 1 || k == nil || !k.hold {
		t.Fatalf("after COMMIT: cursors %v, want h (WITH HOLD)", names())
	}
	c.send(&pgproto3.Query{String: "DECLARE h CURSOR FOR SELECT 1"})
	c.expect("CommandComplete DECLARE CURSOR", "ReadyForQuery I")
	if len(sess.cursors) != 0 {
		t.Fatalf("after h declared again without PHI: cursors %v", names())
	}
	c.send(&pgproto3.Query{String: "DECLARE x CURSOR WITH HOLD FOR SELECT id FROM patients; DECLARE y CURSOR WITH HOLD FOR SELECT id FROM patients"})
	c.expect("CommandComplete DECLARE CURSOR", "CommandComplete DECLARE CURSOR", "ReadyForQuery I")
	c.send(&pgproto3.Close{ObjectType: 'P', Name: "x"}, &pgproto3.Sync{})
	c.expect("CloseComplete", "ReadyForQuery I")
	if len(sess.cursors) != 1 || sess.cursors["y"] == nil {
		t.Fatalf("after Close of x: cursors %v, want y", names())
	}
	c.send(&pgproto3.Query{String: "DISCARD ALL"})
	c.expect("CommandComplete DISCARD ALL", "ReadyForQuery I")
	if len(sess.cursors) != 0 {
		t.Fatalf("after DISCARD ALL: cursors %v", names())
	}
	for i := range maxCursors + 10 {
		c.send(&pgproto3.Query{String: fmt.Sprintf("DECLARE c%d CURSOR WITH HOLD FOR SELECT id FROM patients", i)})
		c.expect("CommandComplete DECLARE CURSOR", "ReadyForQuery I")
	}
	if len(sess.cursors) != maxCursors || sess.cursors["c0"] != nil || sess.cursors[fmt.Sprintf("c%d", maxCursors+9)] == nil {
		t.Fatalf("after %d cursors: %d remembered, the first %v, the last %v", maxCursors+10, len(sess.cursors),
			sess.cursors["c0"] != nil, sess.cursors[fmt.Sprintf("c%d", maxCursors+9)] != nil)
	}
	c.send(&pgproto3.Query{String: "CLOSE ALL"})
	c.expect("CommandComplete CLOSE CURSOR ALL", "ReadyForQuery I")
	if len(sess.cursors) != 0 {
		t.Fatalf("after CLOSE ALL: %d cursors", len(sess.cursors))
	}
}

// TestCursorWords: which texts are parsed for their cursor statements.
func TestCursorWords(t *testing.T) {
	for _, tc := range []struct {
		sql         string
		first, some bool
	}{
		{`FETCH FORWARD 5 FROM "c"`, true, true},
		{"  /* a /* nested */ comment */ -- and a line\n move c", true, true},
		{"Close ALL", true, true},
		{"DISCARD ALL", true, true},
		{"declare c cursor for select 1", true, true},
		{"BEGIN; FETCH 1 FROM c", false, true},
		{"SELECT 'close' FROM t", false, true}, // a word in a literal: a parse for nothing
		{"SELECT fetched, closed_at, move_id FROM t", false, false},
		{"SELECT 1", false, false},
		{"", false, false},
	} {
		if got := cursorWords(tc.sql, true); got != tc.first {
			t.Errorf("cursorWords(%q, first) = %v, want %v", tc.sql, got, tc.first)
		}
		if got := cursorWords(tc.sql, false); got != tc.some {
			t.Errorf("cursorWords(%q) = %v, want %v", tc.sql, got, tc.some)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		cursorWords("SELECT id, email FROM patients WHERE email_bidx = $1", true)
		cursorWords("SELECT id, email FROM patients WHERE email_bidx = $1", false)
	}); n != 0 {
		t.Errorf("cursorWords allocates %v times per text", n)
	}
}

// BenchmarkCursorStmts is the cost cursors add to a statement that is not
// one: a Parse's first word, and a simple Query's words while the session
// holds portals or cursors.
func BenchmarkCursorStmts(b *testing.B) {
	s := &session{portals: map[string]*portal{"": {}}, cursors: map[string]*cursor{}}
	plan := &rewrite.Plan{Passthrough: true}
	const sql = "SELECT o.id, o.total, o.status, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1 AND o.status <> 'shipped'"
	for _, simple := range []bool{false, true} {
		b.Run(fmt.Sprintf("simple=%v", simple), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if s.cursorStmts(sql, plan, simple) != nil {
					b.Fatal("cursor statements found")
				}
			}
		})
	}
}
