package phi

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/auditlog"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// discardAudit drops records.
type discardAudit struct{}

func (discardAudit) Write(*auditlog.Record) {}
func (discardAudit) Refusing() bool         { return false }

// BenchmarkAuditRecord is a session's cost of the record of one executed
// SELECT that searches one column and reads four (its RowDescription, rows
// and CommandComplete through the audited Responder), against the same
// without an audit log.
func BenchmarkAuditRecord(b *testing.B) {
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		b.Fatal(err)
	}
	rows := make([][][]byte, len(testCatalog))
	for i, r := range testCatalog {
		for _, v := range r {
			rows[i] = append(rows[i], []byte(v))
		}
	}
	const sql = "SELECT id, email, date_of_birth, visits, photo FROM patients WHERE email = $1"
	rd, _ := (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		field("id", 6, 23), field("email", 1, 25), field("date_of_birth", 3, 25), field("visits", 5, 25), field("photo", 4, 17),
	}}).Encode(nil)
	row, _ := (&pgproto3.DataRow{Values: [][]byte{[]byte("1"), []byte("ENC(public.patients.email:a@x.org)"),
		[]byte("ENC(public.patients.date_of_birth:1990-01-02)"), []byte("ENC(public.patients.visits:7)"), nil}}).Encode(nil)
	for _, audit := range []bool{false, true} {
		name := "off"
		cfg := Config{}
		if audit {
			name, cfg.Audit = "on", discardAudit{}
		}
		b.Run(name, func(b *testing.B) {
			eng, err := New(pol, fakeKeys{}, prometheus.NewRegistry(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			s := newSession(eng, nil)
			if s.db, err = eng.state(rows); err != nil {
				b.Fatal(err)
			}
			if audit {
				s.who = &auditlog.Session{ConnID: 1, User: "alice", Database: "db", ClientAddr: "127.0.0.1:5000"}
			}
			plan, err := s.db.plans.Analyze(sql)
			if err != nil {
				b.Fatal(err)
			}
			st := &statement{plan: plan, db: s.db}
			var out []byte
			b.ReportAllocs()
			for b.Loop() {
				p := s.newPortal(st, &result{s: s, db: s.db, stmt: st})
				r := p.responder()
				out, rt, err := r.RowDescription(out[:0], rd)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := rt.DataRow(out[:0], row); err != nil {
					b.Fatal(err)
				}
				if cc, ok := r.(interface{ CommandComplete([]byte) }); ok {
					cc.CommandComplete([]byte("SELECT 1"))
				}
				r.Answered('C')
			}
			_ = rewrite.KindSelect
		})
	}
}

func TestTagRows(t *testing.T) {
	for tag, want := range map[string]int64{"SELECT 3": 3, "INSERT 0 12": 12, "UPDATE 0": 0, "CREATE TABLE": -1, "BEGIN": -1, "SELECT ": -1, "COPY 99999999999999999999": -1} {
		if got := tagRows([]byte(tag)); got != want {
			t.Errorf("tagRows(%q) = %d, want %d", tag, got, want)
		}
	}
}
