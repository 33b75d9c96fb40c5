package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
)

// COPY through phiproxy (issue 10, item 6): every COPY runs through the
// proxy into copy_pat, whose PHI columns hold ciphertext, and directly
// into copy_plain, the same columns in plaintext; both must give the same
// rows, the same COPY output byte for byte, the same command tags and the
// same SQLSTATEs.

// copyPolicy adds copy_pat to the PHI policy.
const copyPolicy = `
  - name: public.copy_pat
    columns:
      first_name:    { type: text }
      last_name:     { type: text }
      date_of_birth: { type: date }
      ssn:           { type: text, blind_index: {}, search: { digits: { normalize: [digits] } } }
      email:         { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }
      info:          { type: jsonb }
      photo:         { type: bytea, storage: bytea }
`

// copySchema: the blind-index columns sit between the others, so that a
// COPY without a column list must leave them out by name.
const copySchema = `
DROP TABLE IF EXISTS copy_pat;
CREATE TABLE copy_pat (id int PRIMARY KEY, first_name text, last_name text, date_of_birth text,
  ssn text, ssn_bidx text, ssn_bidx_digits text, note text, email text, email_bidx text, email_bidx_ci text,
  score int, info text, photo bytea, score2 int GENERATED ALWAYS AS (score * 2) STORED);
CREATE INDEX ON copy_pat (ssn_bidx); CREATE INDEX ON copy_pat (email_bidx); CREATE INDEX ON copy_pat (email_bidx_ci);
`

// copyPlainSchema is the plaintext twin: a temporary table of the direct
// session, so that the values the tests send through the proxy, which
// the leak check looks for, are never in a WAL or table file (PostgreSQL
// does not log temporary tables, and deletes their files with the
// session).
const copyPlainSchema = `
CREATE TEMP TABLE copy_plain (id int PRIMARY KEY, first_name text, last_name text, date_of_birth date,
  ssn text, note text, email text, score int, info jsonb, photo bytea, score2 int GENERATED ALWAYS AS (score * 2) STORED)`

// copyColumns are copy_plain's columns (and copy_pat's, blind indexes left out).
const copyColumns = "id, first_name, last_name, date_of_birth, ssn, note, email, score, info, photo"

var copyEnv struct {
	once sync.Once
	err  error
	pol  *policy.Policy
}

// copySetup creates the tables (once) and empties them, and returns a
// connection through a PHI proxy that protects copy_pat and a direct one.
func copySetup(t *testing.T) (proxied, direct *pgx.Conn) {
	t.Helper()
	setupPHI(t)
	copyEnv.once.Do(func() {
		copyEnv.pol, copyEnv.err = policy.Parse([]byte(phiPolicy + copyPolicy))
		if copyEnv.err != nil {
			return
		}
		ctx := context.Background()
		c, err := pgx.Connect(ctx, directDSN(pgcluster.ScramUser, phiDatabase))
		if err != nil {
			copyEnv.err = err
			return
		}
		defer c.Close(ctx)
		_, copyEnv.err = c.Exec(ctx, copySchema)
	})
	if copyEnv.err != nil {
		t.Fatalf("copy setup: %v", copyEnv.err)
	}
	direct = phiDirect(t)
	if _, err := direct.Exec(context.Background(), "TRUNCATE copy_pat; "+copyPlainSchema); err != nil {
		t.Fatal(err)
	}
	p := startPHIProxyWith(t, phiOptions{policy: copyEnv.pol})
	t.Cleanup(func() {
		if t.Failed() && debugDump != nil {
			t.Log(debugDump())
		}
	})
	return phiConn(t, p), direct
}

var debugDump func() string

// copyIn runs a COPY FROM STDIN with data.
func copyIn(c *pgx.Conn, sql, data string) (string, error) {
	tag, err := c.PgConn().CopyFrom(context.Background(), strings.NewReader(data), sql)
	return tag.String(), err
}

// copyOut runs a COPY TO STDOUT.
func copyOut(c *pgx.Conn, sql string) (string, error) {
	var b bytes.Buffer
	_, err := c.PgConn().CopyTo(context.Background(), &b, sql)
	return b.String(), err
}

// plainSQL is the statement on copy_plain for one on copy_pat.
func plainSQL(sql string) string { return strings.ReplaceAll(sql, "copy_pat", "copy_plain") }

// sameCopyIn runs a COPY FROM STDIN both ways and compares the outcomes
// and the tables' contents.
func sameCopyIn(t *testing.T, proxied, direct *pgx.Conn, sql, data string) {
	t.Helper()
	tagP, errP := copyIn(proxied, sql, data)
	tagD, errD := copyIn(direct, plainSQL(sql), data)
	if sqlState(errP) != sqlState(errD) || tagP != tagD {
		t.Fatalf("%s:\nproxy:  %q %v\ndirect: %q %v", sql, tagP, errP, tagD, errD)
	}
	sameTables(t, proxied, direct)
}

// sameTables compares copy_pat through the proxy with copy_plain.
func sameTables(t *testing.T, proxied, direct *pgx.Conn) {
	t.Helper()
	for _, sql := range []string{
		"COPY copy_pat TO STDOUT",
		"COPY (SELECT " + copyColumns + " FROM copy_pat ORDER BY id) TO STDOUT (FORMAT csv)",
	} {
		gotP, errP := copyOut(proxied, sql)
		gotD, errD := copyOut(direct, plainSQL(sql))
		if errP != nil || errD != nil || gotP != gotD {
			t.Fatalf("%s:\nproxy:  %v\n%s\ndirect: %v\n%s", sql, errP, gotP, errD, gotD)
		}
	}
}

func TestCopySmoke(t *testing.T) {
	proxied, direct := copySetup(t)
	email := remember(fmt.Sprintf("%s@example.org", secret("cpmail")))
	data := fmt.Sprintf("1\t%s\t%s\t1985-03-14\t123-45-6789\tnote\t%s\t7\t{\"a\": 1}\t\\\\x0102\n2\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
		secret("cpfirst"), secret("cplast"), email)
	sameCopyIn(t, proxied, direct, "COPY copy_pat FROM STDIN", data)
	var n int
	if err := proxied.QueryRow(context.Background(), "SELECT count(*) FROM copy_pat WHERE email = $1", email).Scan(&n); err != nil || n != 1 {
		t.Fatalf("search by the blind index: %d, %v", n, err)
	}
}

// copyLine is "COPY <table>, line N" of a COPY error's context, "" if none.
func copyLine(err error) string {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return ""
	}
	for _, l := range strings.Split(pe.Where, "\n") {
		if rest, ok := strings.CutPrefix(l, "COPY "); ok {
			_, rest, _ = strings.Cut(rest, ", ")
			line, _, _ := strings.Cut(rest, ",")
			line, _, _ = strings.Cut(line, ":")
			return line
		}
	}
	return ""
}

// copyMessage is the message of err without the proxy's prefix.
func copyMessage(err error) string {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return ""
	}
	return strings.TrimPrefix(pe.Message, "phiproxy: ")
}

// TestCopyFromMatchesPostgres loads the same data in each format and with
// each option through the proxy and directly: same tags, same SQLSTATEs
// (with PostgreSQL's message and line for errors in the data's format),
// same rows.
func TestCopyFromMatchesPostgres(t *testing.T) {
	proxied, direct := copySetup(t)
	const cols = " (id, first_name, email, note, date_of_birth, score, info, photo)"
	cases := []struct {
		name, opts, data string
	}{
		{"text", "", "1\tAda\ta@x.org\tn\t1985-03-14\t1\t{}\t\\\\x00ff\n2\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n"},
		{"text escapes", "", "1\ttab\\there\\\\back\\nnl\\r\\b\\f\\v\ta\\x41\\101\\7\\08x\tn\\.\t2000-01-01\t2\t\"x\"\t\\\\x\n"},
		{"text empty and NULL", "", "1\t\tb\t\\N\t\\N\t\\N\t\\N\t\\N\n"},
		{"text no final newline", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N"},
		{"text CRLF", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\r\n2\tB\tb\tc\t\\N\t\\N\t\\N\t\\N\r\n"},
		{"text CR", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\r2\tB\tb\tc\t\\N\t\\N\t\\N\t\\N\r"},
		{"text mixed endings", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\r\n2\tB\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text CR after NL", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n2\tB\tb\tc\t\\N\t\\N\t\\N\t\\N\r"},
		{"text end marker", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n\\.\n2\tgarbage\n"},
		{"text end marker in a line", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\\.\n2\tx\n"},
		{"text corrupt marker", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n\\.x\n"},
		{"text marker CRLF mismatch", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\r\n\\.\n"},
		{"text escaped newline", "", "1\ta\\\nb\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text backslash at end", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\\"},
		{"text NUL escape", "", "1\ta\\000b\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text NUL escape in plain column", "", "1\ta\tb\tc\\0\t\\N\t\\N\t\\N\t\\N\n"},
		{"text invalid UTF-8 escape", "", "1\t\\xff\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text invalid UTF-8", "", "1\t\xff\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text NUL byte", "", "1\ta\x00\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text unicode", "", "1\tünïcödé 😀\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"extra data", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\textra\n"},
		{"missing data", "", "1\tA\tb\n"},
		{"missing data after bad plain value", "", "x\tA\tb\n"},
		{"empty line", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n\n"},
		{"bad date", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n2\tA\tb\tc\t1985-02-30\t\\N\t\\N\t\\N\n"},
		{"bad date syntax", "", "1\tA\tb\tc\tnot a date\t\\N\t\\N\t\\N\n"},
		{"bad jsonb", "", "1\tA\tb\tc\t\\N\t\\N\tn/a\t\\N\n"},
		{"bad bytea", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\\\xzz\n"},
		{"bad plain integer", "", "1\tA\tb\tc\t\\N\tx\t\\N\t\\N\n"},
		{"duplicate key", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n1\tB\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"dates in other forms", "", "1\tA\tb\tc\tMay 12, 1980\t\\N\t\\N\t\\N\n2\tA\tb\tc\t12/05/1980\t\\N\t\\N\t\\N\n"},
		{"text delimiter", "(DELIMITER '|', NULL 'NULL')", "1|a\\|b|c\t|NULL|NULL|NULL|NULL|NULL\n2|\\N|x|y|NULL|NULL|NULL|NULL\n"},
		{"text header", "(HEADER)", "anything at all\n1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text header match", "(HEADER match)", "id\tfirst_name\temail\tnote\tdate_of_birth\tscore\tinfo\tphoto\n1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text header mismatch", "(HEADER match)", "id\tfirst\temail\tnote\tdate_of_birth\tscore\tinfo\tphoto\n"},
		{"text header short", "(HEADER match)", "id\tfirst_name\n"},
		{"text header null", "(HEADER match)", "id\t\\N\temail\tnote\tdate_of_birth\tscore\tinfo\tphoto\n"},
		{"header only", "(HEADER)", "id\n"},
		{"no data", "", ""},
		{"csv", "(FORMAT csv)", "1,Ada,a@x.org,n,1985-03-14,1,{},\\x00ff\n2,,,,,,,\n"},
		{"csv quotes", "(FORMAT csv)", "1,\"a,b\",\"say \"\"hi\"\"\",\"multi\nline\r\nvalue\",,,\"{\"\"k\"\": \"\"v\"\"}\",\n2,\"\",x\"y\"z,\"\"\"\",,,,\n"},
		{"csv empty vs NULL", "(FORMAT csv)", "1,,\"\",,,,,\n"},
		{"csv NULL string", "(FORMAT csv, NULL 'N/A')", "1,N/A,\"N/A\",,N/A,N/A,N/A,N/A\n"},
		{"csv force not null", "(FORMAT csv, FORCE_NOT_NULL (first_name, note))", "1,,x,,,,,\n"},
		{"csv force not null on a date", "(FORMAT csv, FORCE_NOT_NULL (date_of_birth))", "1,,x,,,,,\n"},
		{"csv force null", "(FORMAT csv, FORCE_NULL (first_name, email, note))", "1,\"\",\"\",\"\",,,,\n"},
		{"csv delimiter quote escape", "(FORMAT csv, DELIMITER ';', QUOTE '''', ESCAPE '\\')", "1;'a;b';'it\\'s';'back\\\\slash\\x';;;;\n"},
		{"csv header", "(FORMAT csv, HEADER)", "\"multi\nline header\",x\n1,A,b,c,,,,\n"},
		{"csv header match", "(FORMAT csv, HEADER match)", "id,\"first_name\",email,note,date_of_birth,score,info,photo\n1,A,b,c,,,,\n"},
		{"csv header match null", "(FORMAT csv, HEADER match)", "id,,email,note,date_of_birth,score,info,photo\n"},
		{"csv end marker", "(FORMAT csv)", "1,A,b,c,,,,\n\\.\n2,x\n"},
		{"csv end marker as data", "(FORMAT csv)", "1,A,b,c,,,,\n\\.x,y\n\"\\.\",A,b,c,,,,\n"},
		{"csv unterminated quote", "(FORMAT csv)", "1,\"A,b,c,,,,\n"},
		{"csv unquoted CR", "(FORMAT csv)", "1,A,b,c,,,,\r\n2,a\rb,c,,,,\r\n"},
		{"csv quoted CR lines", "(FORMAT csv)", "1,\"a\rb\",b,c,,,,\r2,B,\"x\ry\",c,,,,\r3,C,b,c,,,,bad\r"},
		{"csv bad date after multi-line", "(FORMAT csv)", "1,\"a\nb\nc\",b,c,,,,\n2,A,b,c,1999-13-01,,,\n"},
		{"csv extra data", "(FORMAT csv)", "1,A,b,c,,,,,\n"},
		{"csv backslash first", "(FORMAT csv)", "\\1,A,b,c,,,,\n"},
		{"csv CRLF marker", "(FORMAT csv)", "1,A,b,c,,,,\r\n\\.\r\n"},
		{"csv marker wrong ending", "(FORMAT csv)", "1,A,b,c,,,,\r\n\\.\n"},
		{"freeze outside a transaction", "(FREEZE)", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"encoding utf8", "(ENCODING 'UTF-8')", "1\tünï\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"text marker at EOF", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n\\."},
		{"csv header match without data", "(FORMAT csv, HEADER match)", ""},
		{"header then duplicate key", "(HEADER)", "h\n1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n1\tB\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
		{"csv multi-line then duplicate key", "(FORMAT csv)", "1,\"a\nb\",b,c,,,,\n2,\"x\ny\nz\",b,c,,,,\n2,B,b,c,,,,\n"},
		{"csv CRLF multi-line then bad plain value", "(FORMAT csv)", "1,\"a\r\nb\",b,c,,,,\r\n2,\"x\r\ny\",b,c,,x,,\r\n"},
		{"not null violation", "", "1\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n\\N\tA\tb\tc\t\\N\t\\N\t\\N\t\\N\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, sql := range []string{"TRUNCATE copy_pat", "TRUNCATE copy_plain"} {
				if _, err := direct.Exec(context.Background(), sql); err != nil {
					t.Fatal(err)
				}
			}
			sql := "COPY copy_pat" + cols + " FROM STDIN " + tc.opts
			tagP, errP := copyIn(proxied, sql, tc.data)
			tagD, errD := copyIn(direct, plainSQL(sql), tc.data)
			if sqlState(errP) != sqlState(errD) || tagP != tagD {
				t.Fatalf("%s:\nproxy:  %q %v\ndirect: %q %v", sql, tagP, errP, tagD, errD)
			}
			if errD != nil {
				t.Logf("%v (%s)", errD, copyLine(errD))
				if copyLine(errP) != copyLine(errD) {
					t.Errorf("line: proxy %q (%v), direct %q", copyLine(errP), errP, copyLine(errD))
				}
				if sqlState(errD) == "22P04" && copyMessage(errP) != copyMessage(errD) {
					t.Errorf("message: proxy %q, direct %q", copyMessage(errP), copyMessage(errD))
				}
			}
			sameTables(t, proxied, direct)
		})
	}
}

// copyRows are rows with the values COPY formats must escape or quote:
// delimiters, quotes, backslashes, line endings, NULL look-alikes, a lone
// \. and non-ASCII text, in text format for copy_plain's columns.
func copyRows(label string) string {
	var b strings.Builder
	vals := []string{"plain", "tab\\there", "comma, and \"quotes\"", "back\\\\slash", "new\\nline\\r\\nCRLF", "\\\\N", "\\\\.", "", "ünïcödé 😀", "semi;colon|pipe'apostrophe"}
	for i, v := range vals {
		first := remember(fmt.Sprintf("%s%02d-%s", label, i, v))
		fmt.Fprintf(&b, "%d\t%s\t%s\t%s\t%d-45-6789\t%s\tm%d@x.org\t%d\t{\"k\": [%d, \"é\"]}\t\\\\x%02x00\n",
			i+1, first, v, []string{"1985-03-14", "infinity", "0044-03-15 BC"}[i%3], 100+i, v, i, i*7, i, i)
	}
	b.WriteString("99\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n")
	return b.String()
}

// TestCopyToMatchesPostgres reads the same rows back with every option of
// COPY TO, of the table and of queries over it.
func TestCopyToMatchesPostgres(t *testing.T) {
	proxied, direct := copySetup(t)
	sameCopyIn(t, proxied, direct, "COPY copy_pat FROM STDIN", copyRows("cpto"))
	var n int
	if err := direct.QueryRow(context.Background(), "SELECT count(*) FROM copy_plain").Scan(&n); err != nil || n != 11 {
		t.Fatalf("copy_plain has %d rows (%v), want 11", n, err)
	}
	for _, sql := range []string{
		"COPY copy_pat TO STDOUT",
		"COPY copy_pat TO STDOUT (FORMAT csv)",
		"COPY copy_pat TO STDOUT (FORMAT csv, HEADER)",
		"COPY copy_pat TO STDOUT (HEADER, DELIMITER '|', NULL '')",
		"COPY copy_pat TO STDOUT WITH CSV HEADER FORCE QUOTE *",
		"COPY copy_pat (email, first_name, id) TO STDOUT (FORMAT csv, FORCE_QUOTE (email), NULL 'NUL', DELIMITER ';', QUOTE '''', ESCAPE '\\')",
		"COPY copy_pat (first_name) TO STDOUT (FORMAT csv)",
		"COPY copy_pat (note) TO STDOUT (FORMAT csv, NULL 'plain')",
		"COPY copy_pat (date_of_birth, photo, info) TO STDOUT (DELIMITER ',')",
		"COPY (SELECT * FROM copy_pat ORDER BY id DESC) TO STDOUT (FORMAT csv, HEADER)",
		"COPY (SELECT email AS \"e,mail\", p.id, 1 AS one FROM copy_pat p WHERE p.email = 'm3@x.org' OR ssn IN ('104-45-6789', '105-45-6789')) TO STDOUT (FORMAT csv, HEADER, FORCE_QUOTE (\"e,mail\"))",
		"COPY (SELECT first_name FROM copy_pat WHERE lower(email) = lower('M4@X.ORG')) TO STDOUT",
		"COPY (SELECT count(*) FROM copy_pat) TO STDOUT",
		"COPY (SELECT id, date_of_birth FROM copy_pat WHERE date_of_birth IS NULL) TO STDOUT",
	} {
		gotP, errP := copyOut(proxied, sql)
		gotD, errD := copyOut(direct, plainSQL(sql))
		if sqlState(errP) != sqlState(errD) || gotP != gotD {
			t.Errorf("%s:\nproxy:  %v\n%s\ndirect: %v\n%s", sql, errP, gotP, errD, gotD)
		}
	}
	// Dates follow DateStyle, as the server's output does.
	for _, c := range []*pgx.Conn{proxied, direct} {
		if _, err := c.Exec(context.Background(), "SET DateStyle = 'SQL, DMY'"); err != nil {
			t.Fatal(err)
		}
	}
	sql := "COPY copy_pat (id, date_of_birth) TO STDOUT"
	gotP, errP := copyOut(proxied, sql)
	gotD, errD := copyOut(direct, plainSQL(sql))
	if errP != nil || errD != nil || gotP != gotD {
		t.Errorf("%s under DateStyle SQL, DMY:\nproxy:  %v\n%s\ndirect: %v\n%s", sql, errP, gotP, errD, gotD)
	}
}
