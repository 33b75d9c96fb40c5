package integration

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

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
  score int, info text, photo bytea);
CREATE INDEX ON copy_pat (ssn_bidx); CREATE INDEX ON copy_pat (email_bidx); CREATE INDEX ON copy_pat (email_bidx_ci);
`

// copyPlainSchema is the plaintext twin: a temporary table of the direct
// session, so that the values the tests send through the proxy, which
// the leak check looks for, are never in a WAL or table file (PostgreSQL
// does not log temporary tables, and deletes their files with the
// session).
const copyPlainSchema = `
CREATE TEMP TABLE copy_plain (id int PRIMARY KEY, first_name text, last_name text, date_of_birth date,
  ssn text, note text, email text, score int, info jsonb, photo bytea)`

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
