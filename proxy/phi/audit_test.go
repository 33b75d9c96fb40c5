package phi

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/auditlog"
)

// fakeAudit keeps the records; refusing says what Refusing answers.
type fakeAudit struct {
	mu       sync.Mutex
	recs     []*auditlog.Record
	refusing atomic.Bool
}

func (a *fakeAudit) Write(r *auditlog.Record) {
	a.mu.Lock()
	a.recs = append(a.recs, r)
	a.mu.Unlock()
}
func (a *fakeAudit) Refusing() bool { return a.refusing.Load() }

// lines returns the records in a one-line form without time, session and
// fingerprint (checked apart), and forgets them.
func (a *fakeAudit) lines(t *testing.T) []string {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, r := range a.recs {
		if r.Session == nil || r.Session.User != "alice" || r.Session.Database != "db" || !strings.HasPrefix(r.Session.ClientAddr, "127.0.0.1:") {
			t.Errorf("record session: %+v", r.Session)
		}
		if r.Time.IsZero() || len(r.Fingerprint) != 16 {
			t.Errorf("record time %v fingerprint %q", r.Time, r.Fingerprint)
		}
		var cols []string
		for _, c := range r.Columns {
			cols = append(cols, strings.TrimPrefix(c.Name, "public.patients.")+":"+c.Op+strings.TrimSuffix(":"+c.Access, ":"))
		}
		s := fmt.Sprintf("%s %s %v [%s] rows=%d %s %s", r.Type, r.Statement, r.Tables, strings.Join(cols, " "), r.Rows, r.Outcome, r.SQLState)
		if r.Reason != "" {
			s += " " + r.Reason
		}
		if r.Count > 1 {
			s += fmt.Sprintf(" stmt %d/%d", r.Index, r.Count)
		}
		out = append(out, s)
	}
	a.recs = nil
	return out
}

// TestAuditRecords: the records of a search, an insert, a read, an
// update through the extended protocol, a refusal, a server error and a
// multi-statement text; none for a statement without PHI; no value and no
// SQL text in any.
func TestAuditRecords(t *testing.T) {
	audit := &fakeAudit{}
	values := []string{"a@x.org", "b@x.org", "c@x.org", "1990-01-02", "%x%", "INSERT", "SELECT", "UPDATE", "WHERE"}
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("id", 6, 23), field("email", 1, 25), field("date_of_birth", 3, 25)}}
	c, _ := scriptedWith(t, scriptOptions{cfg: Config{Audit: audit}}, func(f *fakeServer) {
		f.expect("Query INSERT INTO patients (email, email_bidx) VALUES ('ENC(public.patients.email:a@x.org)', 'IDX-public.patients.email-a@x.org')")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		f.ready()
		f.expect("Query SELECT id, email, date_of_birth FROM patients WHERE email_bidx = 'IDX-public.patients.email-a@x.org'")
		f.rows(rd, []string{"1", "ENC(public.patients.email:a@x.org)", "ENC(public.patients.date_of_birth:1990-01-02)"},
			[]string{"2", "ENC(public.patients.email:a@x.org)", "NULL"})
		f.ready()
		f.expect("Query SELECT 1")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("?column?", 0, 23)}}, []string{"1"})
		f.ready()
		f.expect(`Parse "" UPDATE patients SET visits = $1 WHERE email_bidx = $2 [25 25]`, `Bind "" "" [0 0] ["ENC(public.patients.visits:3)" "IDX-public.patients.email-b@x.org"] []`,
			`Describe P ""`, `Execute ""`, "Sync")
		f.send(&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{}, &pgproto3.CommandComplete{CommandTag: []byte("UPDATE 2")})
		f.ready()
		f.expect("Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'…")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "phiproxy: …"})
		f.ready()
		f.expect("Query INSERT INTO patients (email, email_bidx) VALUES ('ENC(public.patients.email:c@x.org)', 'IDX-public.patients.email-c@x.org')")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "23505", Message: "duplicate key value", Detail: "Key (email_bidx)=(…) already exists."})
		f.ready()
		f.expect("Query DELETE FROM patients WHERE id = 5; SELECT email FROM patients WHERE id = 6")
		f.send(&pgproto3.CommandComplete{CommandTag: []byte("DELETE 1")})
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("email", 1, 25)}}, []string{"ENC(public.patients.email:b@x.org)"})
		f.ready()
	})
	c.send(&pgproto3.Query{String: "INSERT INTO patients (email) VALUES ('a@x.org')"})
	c.expect("CommandComplete INSERT 0 1", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id, email, date_of_birth FROM patients WHERE email = 'a@x.org'"})
	c.expect("RowDescription id:23/0 email:25/0 date_of_birth:1082/0", `DataRow "1" "a@x.org" "1990-01-02"`, `DataRow "2" "a@x.org" NULL`,
		"CommandComplete SELECT 2", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT 1"})
	c.expect("RowDescription ?column?:23/0", `DataRow "1"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Query: "UPDATE patients SET visits = $1 WHERE email = $2"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("3"), []byte("b@x.org")}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ParseComplete", "BindComplete", "CommandComplete UPDATE 2", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT id FROM patients WHERE email LIKE '%x%'"})
	c.expect("ErrorResponse ERROR 0A000 phiproxy: …", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "INSERT INTO patients (email) VALUES ('c@x.org')"})
	c.expect("ErrorResponse ERROR 23505 duplicate key value", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "DELETE FROM patients WHERE id = 5; SELECT email FROM patients WHERE id = 6"})
	c.expect("CommandComplete DELETE 1", "RowDescription email:25/0", `DataRow "b@x.org"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(&pgproto3.Terminate{})

	want := []string{
		"statement insert [public.patients] [email:write] rows=1 ok 00000",
		"statement select [public.patients] [email:search email:read:plaintext date_of_birth:read:plaintext] rows=2 ok 00000",
		"statement update [public.patients] [visits:write email:search] rows=2 ok 00000",
		"refusal  [public.patients] [email:] rows=-1 refused 0A000 unsupported",
		"statement insert [public.patients] [email:write] rows=-1 error 23505",
		"statement delete [public.patients] [] rows=1 ok 00000 stmt 0/2",
		"statement select [public.patients] [email:read:plaintext] rows=1 ok 00000 stmt 1/2",
	}
	// Records are written before the client can see the answer they
	// record (a refusal's before its raise is sent): all are here.
	audit.mu.Lock()
	for _, r := range audit.recs {
		s := fmt.Sprintf("%+v %+v", *r, *r.Session)
		for _, v := range values {
			if strings.Contains(s, v) {
				t.Errorf("record holds %q: %s", v, s)
			}
		}
	}
	audit.mu.Unlock()
	if d := cmp.Diff(want, audit.lines(t)); d != "" {
		t.Errorf("records (-want +got):\n%s", d)
	}
}

// TestAuditRefusing: while the audit log cannot write, statements on PHI
// tables are refused with 58030, in both protocols; others go through.
func TestAuditRefusing(t *testing.T) {
	audit := &fakeAudit{}
	audit.refusing.Store(true)
	c, _ := scriptedWith(t, scriptOptions{cfg: Config{Audit: audit}}, func(f *fakeServer) {
		f.expect("Query DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '58030'…")
		f.send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "58030", Message: "phiproxy: the audit log cannot be written"})
		f.ready()
		f.expect("Query SELECT 1")
		f.rows(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{field("?column?", 0, 23)}}, []string{"1"})
		f.ready()
		f.expect(`Close S "phiproxy_raise"`, `Parse "phiproxy_raise" DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '58030'…`,
			`Bind "" "phiproxy_raise" [] [] []`, `Execute ""`, "Sync")
		f.send(&pgproto3.CloseComplete{}, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: "58030", Message: "phiproxy: the audit log cannot be written"})
		f.ready()
	})
	c.send(&pgproto3.Query{String: "SELECT email FROM patients WHERE id = 1"})
	c.expect("ErrorResponse ERROR 58030 phiproxy: the audit log cannot be written", "ReadyForQuery I")
	c.send(&pgproto3.Query{String: "SELECT 1"})
	c.expect("RowDescription ?column?:23/0", `DataRow "1"`, "CommandComplete SELECT 1", "ReadyForQuery I")
	c.send(&pgproto3.Parse{Query: "SELECT email FROM patients WHERE id = $1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	c.expect("ErrorResponse ERROR 58030 phiproxy: the audit log cannot be written", "ReadyForQuery I")
	c.send(&pgproto3.Terminate{})
	want := []string{
		"refusal select [public.patients] [] rows=-1 refused 58030 audit",
		"refusal select [public.patients] [] rows=-1 refused 58030 audit",
	}
	if d := cmp.Diff(want, audit.lines(t)); d != "" {
		t.Errorf("records (-want +got):\n%s", d)
	}
}
