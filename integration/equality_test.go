package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// Exact equality (issue 10 item 4, issue 14's ~795 differences): every
// statement below runs through phiproxy on the encrypted table people and
// directly on its plaintext twin plain_people (the same rows, in the same
// database), and must answer alike: rows, rows affected, SQLSTATE. The
// rows hold values equal only after normalization: ß/ẞ, case, spaces,
// 'N/A' next to '' and 'unknown' (digits alike), formatted SSNs.
//
// The twin holds these synthetic values in plaintext, so they are not
// given to the leak check (secret/remember); the differential tester
// checks for leaks with its own clusters.

const equalityDatabase = "phi_equality"

// equalityLocaleDatabase has ctype C.UTF-8: there lower() follows the
// locale, and phiproxy must refuse to answer it from an index.
const equalityLocaleDatabase = "phi_equality_utf8"

const equalityPolicy = `
tables:
  - name: public.people
    columns:
      email: { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] }, tci: { normalize: [btrim, ascii_lower] } } }
      phone: { type: text, blind_index: {}, search: { digits: { normalize: [digits] } } }
      ssn:   { type: text, blind_index: { index_group: ssn }, search: { digits: { normalize: [digits] } } }
  - name: public.visits
    columns:
      ssn:   { type: text, blind_index: { index_group: ssn }, search: { digits: { normalize: [digits] } } }
`

const equalitySchema = `
CREATE TABLE people (id int PRIMARY KEY,
  email text, email_bidx text UNIQUE, email_bidx_ci text, email_bidx_tci text,
  phone text, phone_bidx text, phone_bidx_digits text,
  ssn text, ssn_bidx text, ssn_bidx_digits text);
CREATE INDEX ON people (email_bidx_ci);
CREATE INDEX ON people (phone_bidx);
CREATE TABLE visits (id int PRIMARY KEY, person_id int REFERENCES people (id), ssn text, ssn_bidx text, ssn_bidx_digits text);
CREATE TABLE plain_people (id int PRIMARY KEY, email text UNIQUE, phone text, ssn text);
CREATE TABLE plain_visits (id int PRIMARY KEY, person_id int REFERENCES plain_people (id), ssn text);
`

// equalityRows are the rows of both tables: id, email, phone, ssn.
var equalityRows = [][4]any{
	{1, "straße@beispiel.de", "N/A", "321-54-9876"},
	{2, "STRAẞE@BEISPIEL.DE", "unknown", "321549876"},
	{3, "Ann@Example.org", "", "321 54 9876"},
	{4, "ann@example.org", "555-0101", nil},
	{5, " ann@example.org ", "5550101", "N/A"},
	{6, "ANN@EXAMPLE.ORG", "(555) 0101", ""},
	{7, nil, nil, "987-65-4321"},
	{8, "İstanbul@x.org", "n/a", "987654321"},
	{9, "istanbul@x.org", "N/A", nil},
	{10, "ıstanbul@x.org", nil, "555"},
	{11, "Kelvin@x.org", "555 0101", "555"},
	{12, "\u212Aelvin@x.org", "5550101", "000-00-0000"},
}

var equalityEnv struct {
	once sync.Once
	err  error
	pol  *policy.Policy
}

// setupEquality creates both databases with the tables; the rows are
// loaded by each test through its proxy (loadEquality).
func setupEquality(t *testing.T) {
	t.Helper()
	setupPHI(t) // the keyring
	equalityEnv.once.Do(func() { equalityEnv.err = buildEqualityEnv() })
	if equalityEnv.err != nil {
		t.Fatalf("equality setup: %v", equalityEnv.err)
	}
}

func buildEqualityEnv() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	for _, db := range []string{
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", equalityDatabase, pgcluster.ScramUser.Name),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s TEMPLATE template0 LOCALE 'C.UTF-8'", equalityLocaleDatabase, pgcluster.ScramUser.Name),
	} {
		if _, err := su.Exec(ctx, db); err != nil {
			return fmt.Errorf("%s: %w", db, err)
		}
	}
	// template0 has no catalog triggers of phiproxy's.
	lsu, err := pgx.Connect(ctx, cluster.SuperuserDSN(equalityLocaleDatabase))
	if err != nil {
		return err
	}
	err = pgcluster.InstallEpoch(ctx, lsu)
	lsu.Close(ctx)
	if err != nil {
		return err
	}
	for _, db := range []string{equalityDatabase, equalityLocaleDatabase} {
		owner, err := pgx.Connect(ctx, cluster.DSN(pgcluster.ScramUser, db, "verify-full"))
		if err != nil {
			return err
		}
		_, err = owner.Exec(ctx, equalitySchema)
		owner.Close(ctx)
		if err != nil {
			return fmt.Errorf("schema of %s: %w", db, err)
		}
	}
	equalityEnv.pol, err = policy.Parse([]byte(equalityPolicy))
	return err
}

func startEqualityProxy(t *testing.T) *testProxy {
	t.Helper()
	setupEquality(t)
	logs := &syncBuffer{}
	phiLogs.add(logs)
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	eng, err := phi.New(equalityEnv.pol, phi.KeyringKeys(phiEnv.keyring), reg, phi.Config{})
	if err != nil {
		t.Fatalf("phi.New: %v", err)
	}
	srv, err := proxy.New(baseConfig(), logger, reg, proxy.WithInterceptor(eng))
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	return runProxy(t, srv, logs)
}

// loadEquality (re)fills people through the proxy and plain_people
// directly with equalityRows, and one visit of person 2 in each.
func loadEquality(t *testing.T, enc, plain *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	for _, s := range []struct {
		c      *pgx.Conn
		prefix string
	}{{enc, ""}, {plain, "plain_"}} {
		for _, table := range []string{"visits", "people"} {
			if _, err := s.c.Exec(ctx, "DELETE FROM "+s.prefix+table); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range equalityRows {
			if _, err := s.c.Exec(ctx, "INSERT INTO "+s.prefix+"people (id, email, phone, ssn) VALUES ($1, $2, $3, $4)", r[:]...); err != nil {
				t.Fatalf("insert %v: %v", r[0], err)
			}
		}
		if _, err := s.c.Exec(ctx, "INSERT INTO "+s.prefix+"visits (id, person_id, ssn) VALUES (1, 2, '321549876')"); err != nil {
			t.Fatal(err)
		}
	}
}

// eqOutcome is what a client sees of a statement.
type eqOutcome struct {
	Rows     []string
	Affected string
	Code     string
}

// run runs sql on c in the extended protocol, or in the simple one.
func eqRun(c *pgx.Conn, sql string, simple bool, args ...any) eqOutcome {
	ctx := context.Background()
	mode := pgx.QueryExecModeCacheDescribe
	if simple {
		mode = pgx.QueryExecModeSimpleProtocol
	}
	rows, err := c.Query(ctx, sql, append([]any{mode}, args...)...)
	var o eqOutcome
	if err == nil {
		for rows.Next() {
			vals, verr := rows.Values()
			if verr != nil {
				err = verr
				break
			}
			o.Rows = append(o.Rows, fmt.Sprint(vals))
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		o.Affected = rows.CommandTag().String()
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		o.Code, o.Affected = pgErr.Code, ""
	} else if err != nil {
		o.Code = "client: " + err.Error()
	}
	sort.Strings(o.Rows)
	return o
}

// twin is sql on the plaintext tables.
func eqTwin(sql string) string {
	r := strings.NewReplacer("people", "plain_people", "visits", "plain_visits")
	return r.Replace(sql)
}

// equalityCase is one statement, with parameters for the extended
// protocol; literal is the same statement with the values written in.
type equalityCase struct {
	name    string
	sql     string
	args    []any
	literal string // "" when the case has no literal form
	// rows is the number of rows PostgreSQL returns or changes, stated
	// here too so that a broken twin cannot make a wrong answer pass.
	rows int
}

var equalityCases = []equalityCase{
	// The examples of issue 14.
	{"'N/A' = phone", "SELECT id FROM people WHERE $1 = phone", []any{"N/A"}, "SELECT id FROM people WHERE 'N/A' = phone", 2},
	{"ẞ is not ß", "SELECT id FROM people WHERE email = $1", []any{"STRAẞE@BEISPIEL.DE"}, "SELECT id FROM people WHERE email = 'STRAẞE@BEISPIEL.DE'", 1},
	{"<> keeps the other spellings, not NULL", "SELECT id FROM people WHERE email <> $1", []any{"ann@example.org"}, "SELECT id FROM people WHERE email <> 'ann@example.org'", 10},
	{"NOT IN", "SELECT id FROM people WHERE phone NOT IN ($1, $2)", []any{"N/A", "5550101"}, "SELECT id FROM people WHERE phone NOT IN ('N/A', '5550101')", 6},
	{"NOT IN with a NULL", "SELECT id FROM people WHERE phone NOT IN ($1, $2)", []any{"N/A", nil}, "SELECT id FROM people WHERE phone NOT IN ('N/A', NULL)", 0},
	{"IS DISTINCT FROM", "SELECT id FROM people WHERE email IS DISTINCT FROM $1", []any{"ann@example.org"}, "SELECT id FROM people WHERE email IS DISTINCT FROM 'ann@example.org'", 11},
	{"IS DISTINCT FROM NULL", "SELECT id FROM people WHERE phone IS DISTINCT FROM $1", []any{nil}, "SELECT id FROM people WHERE phone IS DISTINCT FROM NULL", 10},
	{"IS NOT DISTINCT FROM NULL", "SELECT id FROM people WHERE email IS NOT DISTINCT FROM $1", []any{nil}, "SELECT id FROM people WHERE email IS NOT DISTINCT FROM NULL", 1},
	{"self-join on phone", "SELECT a.id, b.id FROM people a JOIN people b ON a.phone = b.phone", nil, "", 14},
	{"= ANY with a NULL", "SELECT id FROM people WHERE phone = ANY($1)", []any{[]*string{eqPtr("N/A"), nil, eqPtr("")}}, "", 3},
	{"<> ALL", "SELECT id FROM people WHERE phone <> ALL($1)", []any{[]string{"N/A", "unknown"}}, "", 7},
	{"IN", "SELECT id FROM people WHERE ssn IN ($1, $2)", []any{"321549876", "N/A"}, "SELECT id FROM people WHERE ssn IN ('321549876', 'N/A')", 2},
	{"comparison as output", "SELECT id, email = $1, phone <> $2 FROM people", []any{"ann@example.org", ""}, "SELECT id, email = 'ann@example.org', phone <> '' FROM people", 12},
	{"join across tables in one index group", "SELECT p.id, v.id FROM people p JOIN visits v ON v.ssn = p.ssn", nil, "", 1},
	// Normalized matching, asked for by the SQL (ctype C).
	{"lower() keeps ẞ", "SELECT id FROM people WHERE lower(email) = lower($1)", []any{"STRAẞE@BEISPIEL.DE"}, "SELECT id FROM people WHERE lower(email) = lower('STRAẞE@BEISPIEL.DE')", 1},
	{"lower() of ASCII letters", "SELECT id FROM people WHERE lower(email) = lower($1)", []any{"ANN@example.ORG"}, "SELECT id FROM people WHERE lower(email) = lower('ANN@example.ORG')", 3},
	{"lower() = a lower-case value", "SELECT id FROM people WHERE lower(email) = $1", []any{"ann@example.org"}, "SELECT id FROM people WHERE lower(email) = 'ann@example.org'", 3},
	{"lower() = an upper-case value", "SELECT id FROM people WHERE lower(email) = $1", []any{"ANN@EXAMPLE.ORG"}, "SELECT id FROM people WHERE lower(email) = 'ANN@EXAMPLE.ORG'", 0},
	{"Django iexact", "SELECT id FROM people WHERE UPPER(email::text) = UPPER($1)", []any{"İstanbul@X.org"}, "SELECT id FROM people WHERE UPPER(email::text) = UPPER('İstanbul@X.org')", 1},
	{"Kelvin sign", "SELECT id FROM people WHERE lower(email) = lower($1)", []any{"KELVIN@x.org"}, "", 1},
	{"lower(trim())", "SELECT id FROM people WHERE lower(trim(email)) = lower(trim($1))", []any{" Ann@Example.ORG"}, "SELECT id FROM people WHERE lower(trim(email)) = lower(trim(' Ann@Example.ORG'))", 4},
	{"lower() <> ", "SELECT id FROM people WHERE lower(email) <> lower($1)", []any{"ann@example.org"}, "", 8},
	{"lower() NOT IN", "SELECT id FROM people WHERE lower(email) NOT IN (lower($1), $2)", []any{"ANN@example.org", "istanbul@x.org"}, "", 7},
	{"digits of the phone", "SELECT id FROM people WHERE regexp_replace(phone, '\\D', '', 'g') = $1", []any{"5550101"}, "SELECT id FROM people WHERE regexp_replace(phone, '\\D', '', 'g') = '5550101'", 5},
	{"digits: N/A is empty", "SELECT id FROM people WHERE regexp_replace(phone, '[^0-9]', '', 'g') = $1", []any{""}, "SELECT id FROM people WHERE regexp_replace(phone, '[^0-9]', '', 'g') = ''", 5},
	{"digits of both sides", "SELECT id FROM people WHERE regexp_replace(ssn, '[^0-9]', '', 'g') = regexp_replace($1, '[^0-9]', '', 'g')", []any{"321.54.9876"}, "", 3},
	{"digits = a formatted value", "SELECT id FROM people WHERE regexp_replace(ssn, '[^0-9]', '', 'g') = $1", []any{"321-54-9876"}, "", 0},
	{"join on lower()", "SELECT a.id, b.id FROM people a JOIN people b ON lower(a.email) = lower(b.email) AND a.id < b.id", nil, "", 3},
}

func eqPtr(s string) *string { return &s }

// TestEqualityMatchesPlaintext runs equalityCases both ways, in the
// extended protocol with parameters and in the simple one with literals.
func TestEqualityMatchesPlaintext(t *testing.T) {
	p := startEqualityProxy(t)
	enc := connect(t, p.dsn(pgcluster.ScramUser, equalityDatabase))
	plain := connect(t, directDSN(pgcluster.ScramUser, equalityDatabase))
	loadEquality(t, enc, plain)
	for _, c := range equalityCases {
		t.Run(c.name, func(t *testing.T) {
			want := eqRun(plain, eqTwin(c.sql), false, c.args...)
			if want.Code != "" || len(want.Rows) != c.rows {
				t.Fatalf("plaintext twin: %+v, want %d rows", want, c.rows)
			}
			if got := eqRun(enc, c.sql, false, c.args...); !cmp.Equal(want, got) {
				t.Errorf("extended protocol (-postgres +phiproxy):\n%s", cmp.Diff(want, got))
			}
			if c.literal == "" {
				return
			}
			if got := eqRun(enc, c.literal, true); !cmp.Equal(want, got) {
				t.Errorf("simple protocol (-postgres +phiproxy):\n%s", cmp.Diff(want, got))
			}
		})
	}
}

// TestEqualityWrites: DELETE and UPDATE by ssn reach the rows PostgreSQL
// reaches (before exact indexes, DELETE ... WHERE ssn = '321-54-9876' also
// reached person 2 and failed on the visit's foreign key, 23503), an
// upsert finds its conflict by the exact value, and every index stays in
// step with the values written.
func TestEqualityWrites(t *testing.T) {
	p := startEqualityProxy(t)
	enc := connect(t, p.dsn(pgcluster.ScramUser, equalityDatabase))
	plain := connect(t, directDSN(pgcluster.ScramUser, equalityDatabase))
	ctx := context.Background()
	steps := []struct {
		sql  string
		args []any
	}{
		{"DELETE FROM people WHERE ssn = $1 RETURNING id", []any{"321-54-9876"}},
		{"DELETE FROM people WHERE ssn = '321 54 9876' RETURNING id, email", nil},
		{"DELETE FROM people WHERE regexp_replace(ssn, '[^0-9]', '', 'g') = $1", []any{"321549876"}},
		{"UPDATE people SET phone = $1 WHERE phone = $2 RETURNING id, phone", []any{"555-0199", "N/A"}},
		{"SELECT id FROM people WHERE regexp_replace(phone, '[^0-9]', '', 'g') = $1", []any{"5550199"}},
		{"UPDATE people SET email = $1 WHERE lower(email) = lower($2) RETURNING id", []any{"Bob@Example.org", "istanbul@x.org"}},
		{"SELECT id FROM people WHERE lower(email) = $1", []any{"bob@example.org"}},
		{"SELECT id FROM people WHERE lower(trim(email)) = lower(trim($1))", []any{" BOB@example.org "}},
		{"INSERT INTO people (id, email, phone) VALUES (20, $1, $2) ON CONFLICT (email) DO UPDATE SET phone = EXCLUDED.phone RETURNING id, email, phone", []any{"ann@example.org", "N/A"}},
		{"INSERT INTO people (id, email, phone) VALUES (21, $1, $2) ON CONFLICT (email) DO UPDATE SET phone = EXCLUDED.phone RETURNING id, email, phone", []any{"ANN@example.org", "N/A"}},
		{"SELECT id, email FROM people WHERE phone = $1", []any{"N/A"}},
		{"SELECT id FROM people WHERE lower(email) = lower($1)", []any{"ann@example.org"}},
		{"INSERT INTO people (id, email) VALUES (22, $1) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id", []any{"STRAẞE@BEISPIEL.DE"}},
		{"SELECT id FROM people WHERE UPPER(email::text) = UPPER($1)", []any{"straẞe@beispiel.de"}},
	}
	for _, simple := range []bool{false, true} {
		loadEquality(t, enc, plain)
		for i, s := range steps {
			sql, args := s.sql, s.args
			if simple {
				sql, args = eqInline(s.sql, s.args), nil
			}
			want := eqRun(plain, eqTwin(sql), simple, args...)
			got := eqRun(enc, sql, simple, args...)
			if !cmp.Equal(want, got) {
				t.Errorf("simple=%v step %d %s (-postgres +phiproxy):\n%s", simple, i, s.sql, cmp.Diff(want, got))
			}
		}
	}
	// What the statements left, read back whole on both sides.
	want := eqRun(plain, "SELECT id, email, phone, ssn FROM plain_people", false)
	got := eqRun(enc, "SELECT id, email, phone, ssn FROM people", false)
	if !cmp.Equal(want, got) {
		t.Errorf("final rows (-postgres +phiproxy):\n%s", cmp.Diff(want, got))
	}
	var stray int
	if err := plain.QueryRow(ctx, "SELECT count(*) FROM people WHERE (email_bidx IS NULL) <> (email IS NULL) OR (email_bidx_ci IS NULL) <> (email IS NULL) OR (email_bidx_tci IS NULL) <> (email IS NULL) OR (phone_bidx_digits IS NULL) <> (phone IS NULL)").Scan(&stray); err != nil || stray != 0 {
		t.Errorf("index columns out of step with their values: %d rows, %v", stray, err)
	}
}

// inline writes the arguments of sql into it as literals (test values
// hold no quote).
func eqInline(sql string, args []any) string {
	for i := len(args); i >= 1; i-- {
		lit := "NULL"
		if s, ok := args[i-1].(string); ok {
			lit = "'" + s + "'"
		}
		sql = strings.ReplaceAll(sql, fmt.Sprintf("$%d", i), lit)
	}
	return sql
}

// TestEqualityLocaleRefusals: in a database whose ctype is C.UTF-8,
// PostgreSQL's lower() and upper() follow the locale, which no normalizer
// reproduces for every input: those statements are refused (0A000), while
// = and the locale-independent forms keep matching PostgreSQL.
func TestEqualityLocaleRefusals(t *testing.T) {
	p := startEqualityProxy(t)
	enc := connect(t, p.dsn(pgcluster.ScramUser, equalityLocaleDatabase))
	plain := connect(t, directDSN(pgcluster.ScramUser, equalityLocaleDatabase))
	loadEquality(t, enc, plain)
	for _, c := range []struct {
		sql     string
		args    []any
		refused bool
	}{
		{"SELECT id FROM people WHERE lower(email) = lower($1)", []any{"STRAẞE@BEISPIEL.DE"}, true},
		{"SELECT id FROM people WHERE UPPER(email::text) = UPPER($1)", []any{"ann@example.org"}, true},
		{"SELECT id FROM people WHERE regexp_replace(phone, '\\D', '', 'g') = $1", []any{"5550101"}, true},
		{"SELECT id FROM people WHERE regexp_replace(phone, '[^0-9]', '', 'g') = $1", []any{"5550101"}, false},
		{"SELECT id FROM people WHERE regexp_replace(ssn, '[^0-9]', '', 'g') = regexp_replace($1, '[^0-9]', '', 'g')", []any{"321.54.9876"}, false},
		{"SELECT id FROM people WHERE email = $1", []any{"STRAẞE@BEISPIEL.DE"}, false},
		{"SELECT id FROM people WHERE email <> $1", []any{"ann@example.org"}, false},
	} {
		got := eqRun(enc, c.sql, false, c.args...)
		if c.refused {
			if got.Code != "0A000" {
				t.Errorf("%s: %+v, want a refusal (0A000)", c.sql, got)
			}
			continue
		}
		if want := eqRun(plain, eqTwin(c.sql), false, c.args...); !cmp.Equal(want, got) {
			t.Errorf("%s (-postgres +phiproxy):\n%s", c.sql, cmp.Diff(want, got))
		}
	}
	// PostgreSQL itself maps ẞ here, which is why the proxy must not guess.
	var lowered string
	if err := plain.QueryRow(context.Background(), "SELECT lower('STRAẞE')").Scan(&lowered); err != nil || lowered == "straẞe" {
		t.Errorf("lower('STRAẞE') under C.UTF-8 = %q, %v: expected the locale to map ẞ", lowered, err)
	}
}
