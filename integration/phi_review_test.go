package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
)

// These tests replay protocol sequences a security review found to leak,
// hang or fail (2026-11-28). Each sends a fresh secret() as the city of a
// patient and then checks, over a direct connection, that no row holds it
// in plaintext; the leak check at the end searches the server's files too.

const insertCity = "INSERT INTO patients (city) VALUES ($1) RETURNING id"

// noPlaintextCity fails if a patient's city is stored as v in plaintext.
// It compares here, not in SQL: a query carrying v would put it in the
// server log itself.
func noPlaintextCity(t *testing.T, v string) {
	t.Helper()
	rows, err := phiDirect(t).Query(context.Background(), "SELECT city FROM patients WHERE city IS NOT NULL")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var city string
		if err := rows.Scan(&city); err != nil {
			t.Fatal(err)
		}
		if city == v || !crypto.IsCiphertext([]byte(city)) {
			t.Fatalf("a patient's city is stored in plaintext")
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

func hasError(msgs []string, code string) bool {
	return strings.Contains(strings.Join(msgs, "\n"), `"Code":"`+code+`"`)
}

func TestPHIReviewSQLExecute(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	exchange(t, hc, &pgproto3.Parse{Name: "s", Query: insertCity}, &pgproto3.Sync{})
	v := secret("execsql")
	if out := exchange(t, hc, &pgproto3.Query{String: "EXECUTE s('" + v + "')"}); !hasError(out, "0A000") {
		t.Fatalf("EXECUTE with an argument: %v", out)
	}
	v2 := secret("execsql2")
	out := exchange(t, hc, &pgproto3.Parse{Query: "EXPLAIN ANALYZE EXECUTE s($1)"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte(v2)}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if !hasError(out, "0A000") {
		t.Fatalf("EXPLAIN ANALYZE EXECUTE: %v", out)
	}
	noPlaintextCity(t, v)
	noPlaintextCity(t, v2)
}

// The server keeps the unnamed statement when a Parse replacing it is
// skipped after an error: a later Bind must use its plan.
func TestPHIReviewUnnamedSkipped(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	exchange(t, hc, &pgproto3.Parse{Query: insertCity}, &pgproto3.Bind{Parameters: [][]byte{[]byte(secret("first"))}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	exchange(t, hc,
		&pgproto3.Parse{Name: "x", Query: "SELECT 1/0"}, &pgproto3.Bind{PreparedStatement: "x"}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT $1::text"}, &pgproto3.Sync{})
	v := secret("unnamed")
	exchange(t, hc, &pgproto3.Bind{Parameters: [][]byte{[]byte(v)}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	noPlaintextCity(t, v)
}

// A Bind pipelined after the Sync of a Parse that may fail (a duplicate
// name, or one skipped after an error) is refused, not guessed.
func TestPHIReviewPipelinedRedefinition(t *testing.T) {
	p := startPHIProxy(t)
	t.Run("duplicate name", func(t *testing.T) {
		hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
		exchange(t, hc, &pgproto3.Parse{Name: "s1", Query: insertCity}, &pgproto3.Sync{})
		v := secret("dup")
		exchangeN(t, hc, 2,
			&pgproto3.Parse{Name: "s1", Query: "SELECT $1::text"}, &pgproto3.Sync{},
			&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte(v)}}, &pgproto3.Execute{}, &pgproto3.Sync{})
		noPlaintextCity(t, v)
	})
	t.Run("skipped close", func(t *testing.T) {
		hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
		exchange(t, hc, &pgproto3.Parse{Name: "s1", Query: insertCity}, &pgproto3.Sync{})
		v := secret("skipclose")
		exchangeN(t, hc, 2,
			&pgproto3.Parse{Name: "x", Query: "SELECT 1/0"}, &pgproto3.Bind{PreparedStatement: "x"}, &pgproto3.Execute{},
			&pgproto3.Close{ObjectType: 'S', Name: "s1"}, &pgproto3.Parse{Name: "s1", Query: "SELECT $1::text"}, &pgproto3.Sync{},
			&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte(v)}}, &pgproto3.Execute{}, &pgproto3.Sync{})
		noPlaintextCity(t, v)
	})
}

// DDL that fails in an unsynced batch leaves the catalog stale; the reload
// must wait for the batch to end instead of hanging the session.
func TestPHIReviewReloadAfterFailedDDL(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "CREATE INDEX ON patients (nonexistent)"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{}} {
		hc.Frontend.Send(m)
	}
	hc.Frontend.Flush()
	_ = hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 2 { // ParseComplete, then the error
		if _, err := hc.Frontend.Receive(); err != nil {
			t.Fatal(err)
		}
	}
	exchange(t, hc, &pgproto3.Parse{Query: "SELECT 1 FROM patients"}, &pgproto3.Sync{})
	out := exchange(t, hc, &pgproto3.Query{String: "SELECT count(*) FROM patients"})
	if !strings.Contains(strings.Join(out, ""), "CommandComplete") {
		t.Fatalf("session after the failed DDL: %v", out)
	}
}

// A Describe of a statement skipped after an error: a later Execute must
// still be decrypted, and the session survive.
func TestPHIReviewSkippedDescribe(t *testing.T) {
	p := startPHIProxy(t)
	conn := phiConn(t, p)
	pt := newPatient()
	if err := conn.QueryRow(context.Background(), insertPatient, pt.args()...).Scan(&pt.ID); err != nil {
		t.Fatal(err)
	}
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	exchange(t, hc, &pgproto3.Parse{Name: "q", Query: "SELECT city FROM patients WHERE id = $1"}, &pgproto3.Sync{})
	exchange(t, hc,
		&pgproto3.Parse{Name: "x", Query: "SELECT 1/0"}, &pgproto3.Bind{PreparedStatement: "x"}, &pgproto3.Execute{},
		&pgproto3.Describe{ObjectType: 'S', Name: "q"}, &pgproto3.Sync{})
	out := exchange(t, hc, &pgproto3.Bind{PreparedStatement: "q", Parameters: [][]byte{[]byte(strconv.FormatInt(pt.ID, 10))}}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if !strings.Contains(strings.Join(out, ""), `"text":"`+pt.City+`"`) {
		t.Fatalf("rows after a skipped Describe: %v", out)
	}
}

// Per-column result formats after a portal-only Describe of SELECT *: the
// hidden blind-index column must not make the server count differently.
func TestPHIReviewPortalDescribeFormats(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	q := "SELECT * FROM insurance WHERE id = $1"
	exchange(t, hc, &pgproto3.Parse{Name: "q", Query: q}, &pgproto3.Bind{PreparedStatement: "q", Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	// The client sees 4 columns: id, patient_id, subscriber_ssn, plan.
	out := exchange(t, hc, &pgproto3.Bind{PreparedStatement: "q", Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{1, 1, 0, 0}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	if hasError(out, "08P01") {
		t.Fatalf("per-column formats: %v", out)
	}
}

// A Parse may declare more parameter types than its highest $n, as
// PostgreSQL allows; their values are bound too.
func TestPHIExtraDeclaredParameters(t *testing.T) {
	p := startPHIProxy(t)
	hc := rawSession(t, p.dsn(pgcluster.ScramUser, phiDatabase))
	v := secret("extradecl")
	out := exchange(t, hc,
		&pgproto3.Parse{Query: insertCity, ParameterOIDs: []uint32{0, 23}},
		&pgproto3.Describe{ObjectType: 'S'},
		&pgproto3.Bind{Parameters: [][]byte{[]byte(v), []byte("7")}},
		&pgproto3.Execute{}, &pgproto3.Sync{})
	all := strings.Join(out, "\n")
	if !strings.Contains(all, `"ParameterOIDs":[25,23]`) || !strings.Contains(all, "INSERT 0 1") {
		t.Fatalf("extra declared parameter: %v", out)
	}
	noPlaintextCity(t, v)
}
