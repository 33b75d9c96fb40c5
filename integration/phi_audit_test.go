package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/novamind/phiproxy/internal/auditlog"
)

// auditRecord is the part of an audit line the tests read.
type auditRecord struct {
	Seq         uint64 `json:"seq"`
	Type        string `json:"type"`
	ConnID      uint64 `json:"conn_id"`
	User        string `json:"user"`
	Database    string `json:"database"`
	ClientAddr  string `json:"client_addr"`
	Statement   string `json:"statement"`
	Fingerprint string `json:"fingerprint"`
	Tables      []string
	Columns     []struct {
		Column, Op, Access string
	}
	Rows     *int64 `json:"rows"`
	Outcome  string `json:"outcome"`
	SQLState string `json:"sqlstate"`
	Reason   string `json:"reason"`
}

// ops is a record's columns as "column:op[:access]", without the schema.
func (r auditRecord) ops() string {
	var s []string
	for _, c := range r.Columns {
		x := strings.TrimPrefix(c.Column, "public.") + ":" + c.Op
		if c.Access != "" {
			x += ":" + c.Access
		}
		s = append(s, x)
	}
	return strings.Join(s, " ")
}

// readAudit waits until the audit file holds at least n statement and
// refusal records and returns them (the writer flushes every few ms).
func readAudit(t *testing.T, path string, n int) []auditRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var recs []auditRecord
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var r auditRecord
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("audit line is not JSON: %q", line)
			}
			if r.Type == auditlog.TypeStatement || r.Type == auditlog.TypeRefusal {
				recs = append(recs, r)
			}
		}
		if len(recs) >= n || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPHIAuditLog: the records of an INSERT, a SELECT by a blind index, an
// UPDATE and a refusal, in both protocols: who, what, how many rows, and
// no value and no SQL text anywhere in the file (the leak check searches
// it for every value too); then a deleted and an edited line are found by
// the verifier.
func TestPHIAuditLog(t *testing.T) {
	var path string
	p := startPHIProxyWith(t, phiOptions{auditPath: &path})
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		conn := phiConn(t, p, func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = mode })
		pt := newPatient()
		if err := conn.QueryRow(ctx, insertPatient, pt.args()...).Scan(&pt.ID); err != nil {
			t.Fatalf("%v: insert: %v", mode, err)
		}
		var got patient
		if err := conn.QueryRow(ctx, selectPatient, pt.Email).Scan(got.dest()...); err != nil {
			t.Fatalf("%v: select: %v", mode, err)
		}
		tag, err := conn.Exec(ctx, "UPDATE patients SET phone = $1 WHERE email = $2", remember("+1 555 0100 "+secret("ph")), pt.Email)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("%v: update: %v %v", mode, tag, err)
		}
		_, err = conn.Exec(ctx, "SELECT id FROM patients WHERE email LIKE $1", secret("like")+"%")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "0A000" {
			t.Fatalf("%v: LIKE: %v", mode, err)
		}
	}
	recs := readAudit(t, path, 8)
	var got []string
	for _, r := range recs {
		rows := "-"
		if r.Rows != nil {
			rows = strconv.FormatInt(*r.Rows, 10)
		}
		got = append(got, strings.Join([]string{r.Type, r.Statement, r.ops(), rows, r.Outcome, r.SQLState}, " | "))
		if r.User != "scram_user" || r.Database != phiDatabase || !strings.HasPrefix(r.ClientAddr, "127.0.0.1:") || r.ConnID == 0 || len(r.Fingerprint) != 16 {
			t.Errorf("record header: %+v", r)
		}
	}
	reads := "patients.first_name:read:plaintext patients.last_name:read:plaintext patients.date_of_birth:read:plaintext " +
		"patients.ssn:read:plaintext patients.email:read:plaintext patients.phone:read:plaintext patients.address_line1:read:plaintext " +
		"patients.address_line2:read:plaintext patients.city:read:plaintext patients.state:read:plaintext patients.postal_code:read:plaintext " +
		"patients.country:read:plaintext patients.additional_info:read:plaintext"
	writes := "patients.first_name:write patients.last_name:write patients.date_of_birth:write patients.ssn:write patients.email:write " +
		"patients.phone:write patients.address_line1:write patients.address_line2:write patients.city:write patients.state:write " +
		"patients.postal_code:write patients.country:write patients.additional_info:write"
	want := []string{
		"statement | insert | " + writes + " | 1 | ok | 00000",
		"statement | select | patients.email:search " + reads + " | 1 | ok | 00000",
		"statement | update | patients.phone:write patients.email:search | 1 | ok | 00000",
		"refusal |  | patients.email: | - | refused | 0A000",
	}
	want = append(want, want...) // both protocols
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit records:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// Neither values (the leak check looks for every one) nor SQL text.
	data, _ := os.ReadFile(path)
	for _, sql := range []string{"INSERT INTO", "SELECT id", "UPDATE patients", "LIKE", "WHERE"} {
		if strings.Contains(string(data), sql) {
			t.Errorf("the audit log holds SQL text %q", sql)
		}
	}

	// Verification: the file as written, then with a line deleted, then
	// with one edited.
	if _, err := auditlog.VerifyFiles(path); err != nil {
		t.Fatalf("verify: %v", err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	for name, mutate := range map[string]func([]string) []string{
		"deleted": func(l []string) []string { return append(append([]string(nil), l[:3]...), l[4:]...) },
		"edited": func(l []string) []string {
			l = append([]string(nil), l...)
			l[3] = strings.Replace(l[3], `"rows":1`, `"rows":0`, 1)
			return l
		},
	} {
		f := filepath.Join(t.TempDir(), name)
		os.WriteFile(f, []byte(strings.Join(mutate(lines), "")), 0o600)
		_, err := auditlog.VerifyFiles(f)
		var ce *auditlog.ChainError
		if !errors.As(err, &ce) || ce.Line != 4 && ce.Line != 5 {
			t.Errorf("%s line: verify says %v", name, err)
		}
	}
}

// TestPHIAuditUnwritable: when the audit log cannot be written (here a
// full disk: /dev/full), statements on PHI tables are refused with 58030,
// aborting a transaction block, while others go through; once the file can
// be written again, they run again.
func TestPHIAuditUnwritable(t *testing.T) {
	ctx := context.Background()
	t.Run("from the start", func(t *testing.T) {
		p := startPHIProxyWith(t, phiOptions{audit: auditlog.Config{File: "/dev/full"}})
		conn := phiConn(t, p)
		_, err := conn.Exec(ctx, "SELECT id FROM patients WHERE email = $1", secret("mail"))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "58030" || !strings.Contains(pgErr.Message, "audit log") {
			t.Fatalf("PHI statement with an unwritable audit log: %v", err)
		}
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("non-PHI statement: %v", err)
		}
	})
	t.Run("after a rotation onto a full disk, then back", func(t *testing.T) {
		var (
			log  *auditlog.Log
			path string
		)
		p := startPHIProxyWith(t, phiOptions{auditLog: &log, auditPath: &path})
		conn := phiConn(t, p)
		count := func() error {
			var n int
			return conn.QueryRow(ctx, "SELECT count(*) FROM patients WHERE email = $1", secret("mail")).Scan(&n)
		}
		if err := count(); err != nil {
			t.Fatal(err)
		}
		// Rotate onto a sink that accepts the open but no write.
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/dev/full", path); err != nil {
			t.Fatal(err)
		}
		if err := log.Reopen(); err == nil {
			t.Fatal("reopen onto /dev/full succeeded")
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE audit_probe (x int)"); err != nil {
			t.Fatal(err)
		}
		err = tx.QueryRow(ctx, "SELECT count(*) FROM patients WHERE email = $1", secret("mail")).Scan(new(int))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "58030" {
			t.Fatalf("PHI statement while the audit log fails: %v", err)
		}
		if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Fatalf("commit after the refusal: %v, want the transaction rolled back", err)
		}
		// The disk has room again: the log recovers within its retry
		// interval, and PHI statements run.
		os.Remove(path)
		deadline := time.Now().Add(10 * time.Second)
		for err := count(); err != nil; err = count() {
			if time.Now().After(deadline) {
				t.Fatalf("still refused after the audit log could be written again: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := auditlog.VerifyFiles(path+".1", path); err != nil {
			t.Errorf("verify across the failure: %v", err)
		}
	})
}
