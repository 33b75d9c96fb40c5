package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
)

// COPY by the clients that use it: psql \copy, pgconn's CopyFrom and
// CopyTo (psycopg's cursor.copy sends the same messages), pgx's binary
// CopyFrom (refused), and the extended protocol.

// TestCopyBulk loads 100,000 rows through the proxy and directly, in text
// and in CSV, reads them back both ways, and checks that copy_pat holds
// ciphertext and blind indexes only.
func TestCopyBulk(t *testing.T) {
	proxied, direct := copySetup(t)
	const rows = 100_000
	var text, csv strings.Builder
	for i := range rows {
		// Values that begin with random bytes spread the leak check's
		// needles; one row in ten is registered.
		b := make([]byte, 5)
		rand.Read(b)
		first := hex.EncodeToString(b) + "-bulkfirst"
		email := fmt.Sprintf("%s.%d@bulk.example", hex.EncodeToString(b), i)
		if i%10 == 0 {
			remember(first)
			remember(email)
		}
		note := []string{"a\tb", "plain", "x,y", "q\"uote", "nl\nnl"}[i%5]
		dob := fmt.Sprintf("19%02d-%02d-%02d", 30+i%70, 1+i%12, 1+i%28)
		fmt.Fprintf(&text, "%d\t%s\t%s\t%s\t%03d-%02d-%04d\t%s\t%s\t%d\t{\"n\": %d}\t\\\\x%02x\n",
			i, first, "Last", dob, i%1000, i%100, i%10000, strings.ReplaceAll(strings.ReplaceAll(note, "\t", "\\t"), "\n", "\\n"), email, i, i, i%256)
		fmt.Fprintf(&csv, "%d,%s,%s,%s,%03d-%02d-%04d,\"%s\",%s,%d,\"{\"\"n\"\": %d}\",\\x%02x\n",
			rows+i, first, "Last", dob, i%1000, i%100, i%10000, strings.ReplaceAll(note, `"`, `""`), "c"+email, i, i, i%256)
	}
	sameCopyIn(t, proxied, direct, "COPY copy_pat FROM STDIN", text.String())
	sameCopyIn(t, proxied, direct, "COPY copy_pat FROM STDIN (FORMAT csv)", csv.String())
	for _, sql := range []string{"COPY copy_pat TO STDOUT (FORMAT csv, HEADER)", "COPY (SELECT * FROM copy_pat WHERE id % 7 = 3 ORDER BY id) TO STDOUT"} {
		gotP, errP := copyOut(proxied, sql)
		gotD, errD := copyOut(direct, plainSQL(sql))
		if errP != nil || errD != nil || gotP != gotD {
			t.Fatalf("%s: proxy %v, direct %v, %d and %d bytes", sql, errP, errD, len(gotP), len(gotD))
		}
	}
	var n int
	if err := direct.QueryRow(context.Background(), `SELECT count(*) FROM copy_pat WHERE first_name LIKE 'phi1:%' AND email LIKE 'phi1:%'
		AND ssn_bidx IS NOT NULL AND ssn_bidx_digits IS NOT NULL AND email_bidx IS NOT NULL AND email_bidx_ci IS NOT NULL
		AND info LIKE 'phi1:%' AND note NOT LIKE 'phi1:%'`).Scan(&n); err != nil || n != 2*rows {
		t.Fatalf("stored: %d rows of ciphertext and indexes (want %d), %v", n, 2*rows, err)
	}
	var photo []byte
	if err := direct.QueryRow(context.Background(), "SELECT photo FROM copy_pat WHERE id = 1").Scan(&photo); err != nil || !crypto.IsCiphertext(photo) {
		t.Fatalf("bytea storage holds %x, %v; want a raw envelope", photo, err)
	}
}

// TestCopyPsql round-trips a file through psql's \copy, both ways and in
// both formats, through the proxy and directly, and loads rows written
// inline after COPY ... FROM STDIN and ended by \. in a psql script.
func TestCopyPsql(t *testing.T) {
	proxied, _ := copySetup(t)
	p := proxiedDSN(t, proxied)
	dir := t.TempDir()
	data := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(data, []byte(copyRows("cpsql")), 0o600); err != nil {
		t.Fatal(err)
	}
	// The searched email is not a secret: the direct statement logs it.
	email := fmt.Sprintf("searched-%d@x.org", os.Getpid())
	inline := "COPY copy_pat (id, email, first_name) FROM STDIN (FORMAT csv);\n500," + email + ",\"two\nlines\"\n501,,\"" + secret("cpinline") + "\"\n\\.\n"
	out := func(dsn, table, suffix string) psqlResult {
		t.Helper()
		script := filepath.Join(dir, "inline-"+suffix+".sql")
		if err := os.WriteFile(script, []byte(strings.ReplaceAll(inline, "copy_pat", table)), 0o600); err != nil {
			t.Fatal(err)
		}
		var args []string
		if table == "copy_plain" {
			args = []string{"-c", copyPlainSchema}
		}
		args = append(args,
			"-c", fmt.Sprintf(`\copy %s FROM '%s'`, table, data),
			"-f", script,
			"-c", fmt.Sprintf(`\copy %s TO '%s'`, table, filepath.Join(dir, "out-"+suffix+".txt")),
			"-c", fmt.Sprintf(`\copy %s TO '%s' WITH (FORMAT csv, HEADER, FORCE_QUOTE *)`, table, filepath.Join(dir, "out-"+suffix+".csv")),
			"-c", fmt.Sprintf(`\copy (SELECT id, email FROM %s WHERE email = '%s') TO STDOUT`, table, email))
		return runPsql(t, dsn, args...)
	}
	viaProxy := out(p, "copy_pat", "proxy")
	viaDirect := out(directDSN(pgcluster.ScramUser, phiDatabase), "copy_plain", "direct")
	viaDirect.Stdout = strings.TrimPrefix(viaDirect.Stdout, "CREATE TABLE\n")
	if viaProxy.Exit != 0 || viaDirect.Exit != 0 || viaProxy.Stdout != viaDirect.Stdout {
		t.Fatalf("psql through the proxy: exit %d\n%s%s\ndirectly: exit %d\n%s%s", viaProxy.Exit, viaProxy.Stdout, viaProxy.Stderr, viaDirect.Exit, viaDirect.Stdout, viaDirect.Stderr)
	}
	if !strings.Contains(viaProxy.Stdout, email) {
		t.Fatalf("the search by email found nothing: %q", viaProxy.Stdout)
	}
	for _, ext := range []string{".txt", ".csv"} {
		a, b := mustRead(t, filepath.Join(dir, "out-proxy"+ext)), mustRead(t, filepath.Join(dir, "out-direct"+ext))
		if a != b || len(a) == 0 {
			t.Errorf("\\copy TO %s differs:\nproxy:\n%s\ndirect:\n%s", ext, a, b)
		}
	}
}

// proxiedDSN is the DSN of the proxy c is connected through.
func proxiedDSN(t *testing.T, c *pgx.Conn) string {
	cfg := c.Config()
	return pgcluster.DSN("localhost", int(cfg.Port), pgcluster.ScramUser, phiDatabase, "verify-full", proxyCAFile)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// failingReader returns data, then an error: pgconn's CopyFrom then sends
// CopyFail with the error's text.
type failingReader struct{ data string }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, errors.New("client gave up")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestCopyFailures: a bad value fails the whole COPY with PostgreSQL's
// SQLSTATE and line and stores nothing; the client's own CopyFail reaches
// it as PostgreSQL words it; refused forms are refused, and the session
// stays usable after each.
func TestCopyFailures(t *testing.T) {
	proxied, direct := copySetup(t)
	ctx := context.Background()
	good := copyRows("cpfail")
	bad := good + "200\tx\ty\t2023-02-29\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"
	for _, c := range []*pgx.Conn{proxied, direct} {
		_, err := copyIn(c, plainSQL("COPY copy_pat FROM STDIN"), bad)
		if c == proxied {
			_, err = copyIn(c, "COPY copy_pat FROM STDIN", bad)
		}
		if sqlState(err) != "22008" || copyLine(err) != "line 12" {
			t.Fatalf("bad date: %v (%s), want 22008 on line 12", err, copyLine(err))
		}
		if c == proxied && strings.Contains(err.Error(), "2023-02-29") {
			t.Errorf("the proxy's error quotes the value: %v", err)
		}
	}
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM copy_pat").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after the failed COPY copy_pat has %d rows (%v), want none", n, err)
	}

	// The client's CopyFail.
	for _, c := range []*pgx.Conn{proxied, direct} {
		table := "copy_pat"
		if c == direct {
			table = "copy_plain"
		}
		_, err := c.PgConn().CopyFrom(ctx, &failingReader{data: good}, "COPY "+table+" FROM STDIN")
		if sqlState(err) != "57014" || !strings.Contains(err.Error(), "COPY from stdin failed: client gave up") {
			t.Fatalf("client CopyFail: %v", err)
		}
	}

	// Refused: binary COPY (pgx's CopyFrom), server files and programs.
	_, err := proxied.CopyFrom(ctx, pgx.Identifier{"copy_pat"}, []string{"id", "email"}, pgx.CopyFromRows([][]any{{1, "a@b.c"}}))
	if sqlState(err) != "0A000" {
		t.Fatalf("pgx CopyFrom (binary): %v, want 0A000", err)
	}
	for _, sql := range []string{"COPY copy_pat FROM '/etc/passwd'", "COPY copy_pat TO PROGRAM 'cat'", "COPY BINARY copy_pat TO STDOUT", "COPY copy_pat (id) FROM STDIN WHERE id > 1"} {
		var err error
		if strings.Contains(sql, "FROM") {
			_, err = copyIn(proxied, sql, "1\n")
		} else {
			_, err = copyOut(proxied, sql)
		}
		if sqlState(err) != "0A000" {
			t.Errorf("%s: %v, want 0A000", sql, err)
		}
	}
	if err := proxied.QueryRow(ctx, "SELECT count(*) FROM copy_pat").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after the refusals: %d rows, %v", n, err)
	}
}

// TestCopyExtendedProtocol runs COPY through Parse, Bind and Execute, as
// drivers that prepare every statement do: the server's messages are the
// same as for the plaintext table.
func TestCopyExtendedProtocol(t *testing.T) {
	proxied, _ := copySetup(t)
	email := fmt.Sprintf("searched-ext-%d@x.org", os.Getpid()) // the direct statement logs it
	data := []byte(fmt.Sprintf("1,%s,%s\n2,,\n", email, secret("cpextname")))
	run := func(dsn, table string) []string {
		hc := rawSession(t, dsn)
		if table == "copy_plain" {
			exchange(t, hc, &pgproto3.Query{String: copyPlainSchema})
		}
		in := exchange(t, hc,
			&pgproto3.Parse{Query: "COPY " + table + " (id, email, first_name) FROM STDIN (FORMAT csv)"},
			&pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.CopyData{Data: data[:7]}, &pgproto3.CopyData{Data: data[7:]}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
		out := exchange(t, hc,
			&pgproto3.Parse{Query: "COPY (SELECT id, email, first_name FROM " + table + " WHERE email = '" + email + "') TO STDOUT (FORMAT csv, HEADER)"},
			&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		return append(in, out...)
	}
	viaProxy := run(proxiedDSN(t, proxied), "copy_pat")
	viaDirect := run(directDSN(pgcluster.ScramUser, phiDatabase), "copy_plain")
	if strings.Join(viaProxy, "\n") != strings.Join(viaDirect, "\n") {
		t.Fatalf("through the proxy:\n%s\ndirectly:\n%s", strings.Join(viaProxy, "\n"), strings.Join(viaDirect, "\n"))
	}
}

// copyAccessPolicy gives copy_pat access rules: clinicians read plaintext,
// billing staff masks (email: the last 4 characters, the date of birth:
// its year, the others NULL), anyone else nothing.
const copyAccessPolicy = `
  - name: public.copy_pat
    access: { plaintext: [phi_clinician], masked: [phi_billing] }
    columns:
      first_name:    { type: text }
      last_name:     { type: text }
      date_of_birth: { type: date, access: { mask: year } }
      ssn:           { type: text, blind_index: {}, search: { digits: { normalize: [digits] } } }
      email:         { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } }, access: { mask: { last: 4 } } }
      info:          { type: jsonb }
      photo:         { type: bytea, storage: bytea }
`

// TestCopyAccessAndAudit: COPY TO reads each column as the role may read
// it (plaintext, masked, or refused with 42501 when denied), and every
// COPY is in the audit log with its writes, reads and rows.
func TestCopyAccessAndAudit(t *testing.T) {
	_, direct := copySetup(t)
	ctx := context.Background()
	if _, err := connect(t, cluster.SuperuserDSN(phiDatabase)).Exec(ctx, accessRoles+"GRANT SELECT ON copy_pat TO phi_clinician, phi_billing;"); err != nil {
		t.Fatalf("roles: %v", err)
	}
	pol, err := policy.Parse([]byte(phiPolicy + copyAccessPolicy))
	if err != nil {
		t.Fatal(err)
	}
	var auditPath string
	p := startPHIProxyWith(t, phiOptions{policy: pol, auditPath: &auditPath})
	owner := phiConn(t, p)
	email := remember(secret("cpacc") + "@example.org")
	if tag, err := copyIn(owner, "COPY copy_pat (id, email, date_of_birth, first_name) FROM STDIN (FORMAT csv)", "1,"+email+",1985-03-14,"+secret("cpaccname")+"\n"); err != nil || tag != "COPY 1" {
		t.Fatalf("COPY FROM: %q %v", tag, err)
	}
	const sql = "COPY copy_pat (id, email, date_of_birth, first_name) TO STDOUT (FORMAT csv)"
	for _, c := range []struct {
		role pgcluster.Role
		want string
	}{
		{pgcluster.MD5User, "1," + email + ",1985-03-14," + "?\n"},
		{pgcluster.PasswordUser, "1,****.org,1985-01-01,\n"},
	} {
		got, err := copyOut(connect(t, p.dsn(c.role, phiDatabase)), sql)
		if err != nil {
			t.Fatalf("%s: %v", c.role.Name, err)
		}
		if want := strings.Replace(c.want, "?", got[strings.LastIndexByte(strings.TrimSuffix(got, "\n"), ',')+1:len(got)-1], 1); got != want {
			t.Errorf("%s reads %q, want %q", c.role.Name, got, want)
		}
	}
	if _, err := copyOut(owner, sql); sqlState(err) != "42501" {
		t.Errorf("a role the policy does not name: %v, want 42501", err)
	}
	if _, err := copyOut(owner, "COPY (SELECT id FROM copy_pat) TO STDOUT"); err != nil {
		t.Errorf("no PHI column: %v", err)
	}
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM copy_pat WHERE email LIKE 'phi1:%'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("stored: %d, %v", n, err)
	}

	recs := readAudit(t, auditPath, 4)
	var got []string
	for _, r := range recs {
		rows := "-"
		if r.Rows != nil {
			rows = strconv.FormatInt(*r.Rows, 10)
		}
		got = append(got, strings.Join([]string{r.Type, r.Statement, r.ops(), rows, r.Outcome, r.SQLState}, " | "))
	}
	want := []string{
		"statement | copy | copy_pat.email:write copy_pat.date_of_birth:write copy_pat.first_name:write | 1 | ok | 00000",
		"statement | copy | copy_pat.email:read:plaintext copy_pat.date_of_birth:read:plaintext copy_pat.first_name:read:plaintext | 1 | ok | 00000",
		"statement | copy | copy_pat.email:read:masked copy_pat.date_of_birth:read:masked copy_pat.first_name:read:masked | 1 | ok | 00000",
		"refusal | copy | copy_pat.email:read:denied | - | refused | 42501",
		// No record for the COPY that reads no PHI column.
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit records:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// TestCopyInTransaction: a COPY the proxy fails aborts the transaction
// block as a COPY the server fails does, so COMMIT commits nothing; and
// data beyond ASCII under another client_encoding is refused.
func TestCopyInTransaction(t *testing.T) {
	proxied, direct := copySetup(t)
	ctx := context.Background()
	good := "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n"
	bad := "2\tA\tb\tc\tnot a date\t\\N\t\\N\t\\N\n"
	const sql = "COPY copy_pat (id, first_name, email, note, date_of_birth, score, info, photo) FROM STDIN"
	for _, c := range []*pgx.Conn{proxied, direct} {
		table := "copy_pat"
		if c == direct {
			table = "copy_plain"
		}
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		stmt := sql
		if c == direct {
			stmt = plainSQL(sql)
		}
		if _, err := copyIn(c, stmt, good); err != nil {
			t.Fatal(err)
		}
		if _, err := copyIn(c, stmt, bad); sqlState(err) != "22007" {
			t.Fatalf("%s: bad date: %v", table, err)
		}
		if _, err := c.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
			t.Fatalf("%s: after the failed COPY: %v, want 25P02", table, err)
		}
		if tag, err := c.Exec(ctx, "COMMIT"); err != nil || tag.String() != "ROLLBACK" {
			t.Fatalf("%s: COMMIT: %v %v", table, tag, err)
		}
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s holds %d rows, %v", table, n, err)
		}
	}

	if _, err := proxied.Exec(ctx, "SET client_encoding = 'LATIN1'"); err != nil {
		t.Fatal(err)
	}
	if _, err := copyIn(proxied, sql, "3\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n"); err != nil {
		t.Fatalf("ASCII under LATIN1: %v", err)
	}
	if _, err := copyIn(proxied, sql, "4\t\xe9t\xe9\tb\tc\t\\N\t\\N\t\\N\t\\N\n"); sqlState(err) != "0A000" {
		t.Fatalf("LATIN1 data: %v, want 0A000", err)
	}
}

// TestCopyQueryLiterals: the literals of COPY (query) TO reach the server
// as blind indexes, never as written.
func TestCopyQueryLiterals(t *testing.T) {
	proxied, _ := copySetup(t)
	email := secret("cpqlit") + "@x.org"
	if _, err := copyIn(proxied, "COPY copy_pat (id, email) FROM STDIN (FORMAT csv)", "7,"+email+"\n8,other@x.org\n"); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		"COPY (SELECT id FROM copy_pat WHERE email = '" + email + "') TO STDOUT",
		"COPY (SELECT id FROM copy_pat WHERE lower(email) = lower('" + strings.ToUpper(email) + "')) TO STDOUT",
	} {
		if got, err := copyOut(proxied, sql); err != nil || got != "7\n" {
			t.Errorf("%s: %q %v", sql, got, err)
		}
	}
	noMarkerInServerLog(t, []string{email, strings.ToUpper(email)})
}
