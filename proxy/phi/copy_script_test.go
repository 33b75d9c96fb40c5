package phi

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
)

// The scripted tests of COPY on a policy table (copy.go, copyin.go,
// copyout.go): what the server gets for the client's rows, what the client
// gets for the server's, and the errors of both directions.

// receive reads exactly len(want) messages (a COPY's answers stop short of
// ReadyForQuery) and compares their dumps; an ErrorResponse's dump ends
// with its context (Where).
func (c *testClient) receive(want ...string) {
	c.t.Helper()
	got := make([]string, 0, len(want))
	for range want {
		msg, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("client: receive after %q: %v", got, err)
		}
		d := dump(msg)
		if er, ok := msg.(*pgproto3.ErrorResponse); ok {
			d = "ErrorResponse " + er.Code + " " + er.Message + " | " + er.Where
		}
		got = append(got, d)
	}
	if d := cmp.Diff(want, got); d != "" {
		c.t.Errorf("client received (-want +got):\n%s", d)
	}
}

// copyFailed is the server's answer to the proxy's CopyFail.
var copyFailed = &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "57014",
	Message: "COPY from stdin failed: " + copyFailMarker, Where: "COPY patients, line 1"}

// TestScriptCopyIn: COPY FROM STDIN in text and CSV. The server gets the
// COPY in its text format with the blind index last, each PHI value
// encrypted and indexed, NULL as NULL (its index too), one CopyData per
// client CopyData; a row split between two CopyData goes when it ends.
func TestScriptCopyIn(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect("Query COPY patients (id, email, date_of_birth, visits, email_bidx) FROM STDIN")
		f.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0, 0, 0, 0}})
		f.expect(`CopyData "1\tENC(public.patients.email:A@x.org)\tENC(public.patients.date_of_birth:1990-01-02)\tENC(public.patients.visits:3)\tIDX-public.patients.email-a@x.org\n"`,
			`CopyData "2\t\\N\t\\N\tENC(public.patients.visits:4)\t\\N\n"`, "CopyDone")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})

		f.expect("Query COPY patients (email, visits, email_bidx) FROM STDIN")
		f.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0, 0}})
		f.expect(`CopyData "ENC(public.patients.email:b,y)\t\\N\tIDX-public.patients.email-b,y\nENC(public.patients.email:)\t\\N\tIDX-public.patients.email-\n"`, "CopyDone")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	c.send(&pgproto3.Query{String: "COPY patients (id, email, date_of_birth, visits) FROM STDIN"})
	c.receive("CopyInResponse 0 [0 0 0 0]")
	c.send(&pgproto3.CopyData{Data: []byte("1\tA@x.org\t1990-01-02\t3\n2\t\\N\t")})
	c.send(&pgproto3.CopyData{Data: []byte("\\N\t4\n")}, &pgproto3.CopyDone{})
	c.expect("CommandComplete COPY 2", "ReadyForQuery I")

	// CSV with HEADER MATCH: the header is checked, not sent; an unquoted
	// empty field is NULL, a quoted one the empty string.
	c.send(&pgproto3.Query{String: "COPY patients (email, visits) FROM STDIN (FORMAT csv, HEADER match)"})
	c.receive("CopyInResponse 0 [0 0]")
	c.send(&pgproto3.CopyData{Data: []byte("email,visits\n\"b,y\",\n\"\",\n")}, &pgproto3.CopyDone{})
	c.expect("CommandComplete COPY 2", "ReadyForQuery I")
}

// TestScriptCopyInRefused: a row the proxy cannot take fails the COPY on
// the server with the proxy's CopyFail, and the client gets PostgreSQL's
// error for the value (never the value) on its own line, in place of the
// server's answer to the CopyFail; what the client sends after is dropped.
func TestScriptCopyInRefused(t *testing.T) {
	c, eng := scripted(t, func(f *fakeServer) {
		f.expect("Query COPY patients (email, date_of_birth, email_bidx) FROM STDIN")
		f.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0, 0}})
		f.expect(`CopyData "ENC(public.patients.email:a@x.org)\tENC(public.patients.date_of_birth:1990-01-02)\tIDX-public.patients.email-a@x.org\n"`,
			"CopyFail "+copyFailMarker)
		f.send(copyFailed, &pgproto3.ReadyForQuery{TxStatus: 'I'})

		// A header that does not match.
		f.expect("Query COPY patients (email, email_bidx) FROM STDIN")
		f.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0}})
		f.expect("CopyFail " + copyFailMarker)
		f.send(copyFailed, &pgproto3.ReadyForQuery{TxStatus: 'I'})

		// Too many fields.
		f.expect("Query COPY patients (email, email_bidx) FROM STDIN")
		f.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0}})
		f.expect("CopyFail " + copyFailMarker)
		f.send(copyFailed, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	refused := func() float64 {
		return counter(t, eng.metrics.statements.WithLabelValues("rejected_invalid_value"))
	}
	before := refused()
	c.send(&pgproto3.Query{String: "COPY patients (email, date_of_birth) FROM STDIN"})
	c.receive("CopyInResponse 0 [0 0]")
	c.send(&pgproto3.CopyData{Data: []byte("a@x.org\t1990-01-02\n")})
	c.send(&pgproto3.CopyData{Data: []byte("b@x.org\t1990-02-30\n")}, &pgproto3.CopyData{Data: []byte("c@x.org\t1990-01-03\n")}, &pgproto3.CopyDone{})
	c.receive(`ErrorResponse 22008 phiproxy: date/time field value out of range | COPY patients, line 2, column date_of_birth`)
	c.expect("ReadyForQuery I")
	if got := refused() - before; got != 1 {
		t.Errorf("rejected_invalid_value counted %v times, want 1", got)
	}

	c.send(&pgproto3.Query{String: "COPY patients (email) FROM STDIN (FORMAT csv, HEADER match)"})
	c.receive("CopyInResponse 0 [0]")
	c.send(&pgproto3.CopyData{Data: []byte("mail\na@x.org\n")}, &pgproto3.CopyDone{})
	c.receive(`ErrorResponse 22P04 phiproxy: column name mismatch in header line field 1: got "mail", expected "email" | COPY patients, line 1`)
	c.expect("ReadyForQuery I")

	c.send(&pgproto3.Query{String: "COPY patients (email) FROM STDIN"})
	c.receive("CopyInResponse 0 [0]")
	c.send(&pgproto3.CopyData{Data: []byte("a@x.org\t5\n")}, &pgproto3.CopyDone{})
	c.receive(`ErrorResponse 22P04 phiproxy: extra data after last expected column | COPY patients, line 1`)
	c.expect("ReadyForQuery I")
}

// TestScriptCopyInClientFail: the client's CopyFail reaches the server as
// the proxy's (its message is the client's business, not the server log's),
// and the client gets its own message back.
func TestScriptCopyInClientFail(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect("Query COPY patients (email, email_bidx) FROM STDIN")
		f.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0}})
		f.expect(`CopyData "ENC(public.patients.email:a@x.org)\tIDX-public.patients.email-a@x.org\n"`, "CopyFail "+copyFailMarker)
		f.send(copyFailed, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	c.send(&pgproto3.Query{String: "COPY patients (email) FROM STDIN"})
	c.receive("CopyInResponse 0 [0]")
	c.send(&pgproto3.CopyData{Data: []byte("a@x.org\n")}, &pgproto3.CopyFail{Message: "changed my mind"})
	c.receive("ErrorResponse 57014 COPY from stdin failed: changed my mind | COPY patients, line 1")
	c.expect("ReadyForQuery I")
}

// TestScriptCopyInServerError: the context of the server's error about a
// row names the client's line (a header shifts it) and the column, with
// the value of a column that is not PHI and without that of a PHI or
// blind-index column.
func TestScriptCopyInServerError(t *testing.T) {
	serverError := func(where string) *pgproto3.ErrorResponse {
		return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "22P02", Message: "invalid input", Where: where}
	}
	c, _ := scripted(t, func(f *fakeServer) {
		for _, where := range []string{
			`COPY patients, line 2, column id: "x"`,
			`COPY patients, line 1, column email_bidx: "IDX-public.patients.email-a@x.org"`,
			"SQL function \"f\"\nCOPY patients, line 2",
		} {
			f.expect("Query COPY patients (id, email, email_bidx) FROM STDIN")
			f.send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0, 0}})
			f.expect(`CopyData "1\tENC(public.patients.email:a@x.org)\tIDX-public.patients.email-a@x.org\nx\t\\N\t\\N\n"`, "CopyDone")
			f.send(serverError(where), &pgproto3.ReadyForQuery{TxStatus: 'I'})
		}
	})
	for _, where := range []string{
		`COPY patients, line 3, column id: "x"`,
		`COPY patients, line 2, column email_bidx`,
		"SQL function \"f\"\nCOPY patients, line 3",
	} {
		c.send(&pgproto3.Query{String: "COPY patients (id, email) FROM STDIN (HEADER)"})
		c.receive("CopyInResponse 0 [0 0]")
		c.send(&pgproto3.CopyData{Data: []byte("id\temail\n1\ta@x.org\nx\t\\N\n")}, &pgproto3.CopyDone{})
		c.receive("ErrorResponse 22P02 invalid input | " + where)
		c.expect("ReadyForQuery I")
	}
}

// TestScriptCopyInExtended: COPY FROM STDIN through Parse, Bind and
// Execute, as drivers that prepare everything run it.
func TestScriptCopyInExtended(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect(`Parse "" COPY patients (email, email_bidx) FROM STDIN []`, `Bind "" "" [] [] []`, `Execute ""`, "Flush")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0}})
		f.expect(`CopyData "ENC(public.patients.email:a@x.org)\tIDX-public.patients.email-a@x.org\n"`, "CopyDone", "Sync")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	c.send(&pgproto3.Parse{Query: "COPY patients (email) FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
	c.receive("ParseComplete", "BindComplete", "CopyInResponse 0 [0]")
	c.send(&pgproto3.CopyData{Data: []byte("a@x.org\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
	c.expect("CommandComplete COPY 1", "ReadyForQuery I")
}

// TestScriptCopyOut: COPY TO STDOUT of the table. The server's rows, in
// its text format, reach the client decrypted in its format (CSV, with
// the header it asked for), one CopyData per row however the server cut
// them.
func TestScriptCopyOut(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		f.expect("Query COPY patients (email, date_of_birth, id) TO STDOUT")
		f.send(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0, 0, 0}},
			&pgproto3.CopyData{Data: []byte("ENC(public.patients.email:a,b@x.org)\tENC(public.patients.date_of_birth:1990-01-02)\t5\n\\N\tENC(public.patients.date_of_birth:")},
			&pgproto3.CopyData{Data: []byte("2000-03-04)\t6\n")},
			&pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	c.send(&pgproto3.Query{String: "COPY patients (email, date_of_birth, id) TO STDOUT (FORMAT csv, HEADER, FORCE_QUOTE (id))"})
	c.expect("CopyOutResponse 0 [0 0 0]", `CopyData "email,date_of_birth,id\n"`, `CopyData "\"a,b@x.org\",1990-01-02,\"5\"\n"`,
		`CopyData ",2000-03-04,\"6\"\n"`, "CopyDone", "CommandComplete COPY 2", "ReadyForQuery I")
}

// TestScriptCopyOutDecryptFailure: a value that does not decrypt (the
// ciphertext of another column) ends the COPY for the client with XX001
// naming the column, and is counted; the rest of the server's
// answer, up to ReadyForQuery, is dropped.
func TestScriptCopyOutDecryptFailure(t *testing.T) {
	c, eng := scripted(t, func(f *fakeServer) {
		f.expect("Query COPY patients (email) TO STDOUT")
		f.send(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}},
			&pgproto3.CopyData{Data: []byte("ENC(public.patients.visits:3)\n")},
			&pgproto3.CopyData{Data: []byte("ENC(public.patients.email:a@x.org)\n")},
			&pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 2")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	before := counter(t, eng.metrics.decryptFailure.WithLabelValues("not_ciphertext"))
	c.send(&pgproto3.Query{String: "COPY patients (email) TO STDOUT"})
	c.expect("CopyOutResponse 0 [0]", "ErrorResponse ERROR XX001 phiproxy: decryption failed for column public.patients.email", "ReadyForQuery I")
	if got := counter(t, eng.metrics.decryptFailure.WithLabelValues("not_ciphertext")) - before; got != 1 {
		t.Errorf("decryption failures counted: %v, want 1", got)
	}
}

// TestScriptCopyQueryOut: COPY (query) TO STDOUT. The proxy has the
// server describe the query first, under its own statement name, and
// decrypts by that description; the blind index the query reads is not
// sent, and the description's answers and the Sync that ends them never
// reach the client.
func TestScriptCopyQueryOut(t *testing.T) {
	c, _ := scripted(t, func(f *fakeServer) {
		query := "SELECT * FROM patients WHERE email_bidx = 'IDX-public.patients.email-a@x.org'"
		f.expect(`Close S "phiproxy_copy"`, `Parse "phiproxy_copy" `+query+` []`, `Describe S "phiproxy_copy"`,
			"Query COPY ("+query+") TO STDOUT", "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.ParameterDescription{},
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("email", 1, 25), field("email_bidx", 2, 25), field("id", 6, 23)}},
			&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0, 0, 0}},
			&pgproto3.CopyData{Data: []byte("ENC(public.patients.email:a@x.org)\tIDX-public.patients.email-a@x.org\t5\n")},
			&pgproto3.CopyDone{}, &pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
			&pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
	c.send(&pgproto3.Query{String: "COPY (SELECT * FROM patients WHERE email = 'a@x.org') TO STDOUT"})
	c.expect("CopyOutResponse 0 [0 0]", `CopyData "a@x.org\t5\n"`, "CopyDone", "CommandComplete COPY 1", "ReadyForQuery I")
}
