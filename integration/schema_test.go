package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// typesPolicy protects one column of each logical type of a legacy
// table whose columns have their logical types (plus a varchar and a
// char column holding text).
const typesPolicy = `  tables:
    - name: public.legacy
      columns:
        v_text:        { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }
        v_varchar:     { type: varchar }
        v_char:        { type: text, blind_index: {} }
        v_int4:        { type: int4, blind_index: {} }
        v_int8:        { type: int8 }
        v_numeric:     { type: numeric }
        v_bool:        { type: bool }
        v_date:        { type: date, blind_index: {} }
        v_timestamptz: { type: timestamptz }
        v_timestamp:   { type: timestamptz }
        v_uuid:        { type: uuid, blind_index: {} }
        v_jsonb:       { type: jsonb }
        v_bytea:       { type: bytea }
        v_bytea_raw:   { type: bytea, storage: bytea }
        v_int_raw:     { type: int4, storage: bytea }
`

const legacySchema = `
CREATE TABLE legacy (
  id int PRIMARY KEY,
  v_text text UNIQUE, v_varchar varchar(40) DEFAULT 'x', v_char char(11) CHECK (length(v_char) = 11),
  v_int4 int, v_int8 bigint, v_numeric numeric(10,2), v_bool boolean, v_date date,
  v_timestamptz timestamptz, v_timestamp timestamp, v_uuid uuid, v_jsonb jsonb, v_bytea bytea,
  v_bytea_raw bytea, v_int_raw int);
CREATE INDEX legacy_date ON legacy (v_date);
CREATE INDEX legacy_lower_text ON legacy (lower(v_text));
INSERT INTO legacy VALUES
  (1, '  Ada@Example.org ', 'Ada', '900-12-3456', 42, 9223372036854775807, 1234.50, true, '1985-03-14',
   '2024-01-02 10:00:00.123456+02', '2024-01-02 10:00:00', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
   '{"b": 1, "a": [1, 2]}', '\x00ff10', '\x0102', -7),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, 'bob', 'Bob', '900-65-4321', -2147483648, 0, 0, NULL, 'infinity', '-infinity', '1900-01-01', NULL, '[]', '', '', 0);
`

// TestSchemaAdoptLegacyTable adopts a table that holds every logical type
// in its own PostgreSQL type: phiproxy schema prints the DDL, psql runs
// it as printed, migrate encrypt encrypts, step 2 validates, and every
// value reads back through the proxy as PostgreSQL showed it before (in
// the proxy's canonical text form) and is found by its blind index.
func TestSchemaAdoptLegacyTable(t *testing.T) {
	e := newOpsEnv(t, "ops_legacy", typesPolicy)
	ctx := context.Background()
	direct := e.direct(t)
	if _, err := direct.Exec(ctx, legacySchema); err != nil {
		t.Fatal(err)
	}
	before := readAll(t, direct, "SELECT * FROM legacy ORDER BY id", pgx.QueryResultFormats{pgx.TextFormatCode})

	res := e.run(t, "schema", "--config", e.config)
	if res.code != 1 || !strings.Contains(res.stdout, "-- Step 1") || !strings.Contains(res.stdout, "-- Step 2") {
		t.Fatalf("schema on a plaintext table: %s", res)
	}
	step1, step2, _ := strings.Cut(res.stdout, "-- Step 2")
	e.psqlFile(t, step1)

	res = e.run(t, "schema", "--config", e.config)
	if res.code != 1 || strings.Contains(res.stdout, "-- Step 1") || !strings.Contains(res.stdout, "-- Step 2") {
		t.Fatalf("schema after step 1: want only step 2 left: %s", res)
	}
	dry := e.mustRun(t, "migrate", "encrypt", "--config", e.config, "--table", "legacy", "--dry-run")
	if !strings.Contains(dry.stdout, "would update 3 rows") {
		t.Errorf("dry run: %s", dry)
	}
	mig := e.mustRun(t, "migrate", "encrypt", "--config", e.config, "--table", "legacy", "--batch", "2")
	t.Log(mig)
	if !strings.Contains(mig.stdout, "updated 3 rows") || !strings.Contains(mig.stdout, "-- Step 2") {
		t.Errorf("migrate: %s", mig)
	}
	e.psqlFile(t, "-- Step 2"+step2)
	if res := e.run(t, "schema", "--config", e.config); res.code != 0 || !strings.Contains(res.stdout, "nothing missing") {
		t.Fatalf("schema after step 2: %s", res)
	}
	again := e.mustRun(t, "migrate", "encrypt", "--config", e.config, "--table", "public.legacy")
	if !strings.Contains(again.stdout, "updated 0 rows") {
		t.Errorf("second run is not a no-op: %s", again)
	}

	// Through the proxy: the values PostgreSQL had, in the proxy's
	// canonical text forms (bool t/f, timestamptz in UTC as PostgreSQL prints it, bytea as
	// hex, timestamp read as UTC).
	p := e.startProxy(t)
	conn := connect(t, p.dsn(pgcluster.ScramUser, e.db))
	after := readAll(t, conn, "SELECT * FROM legacy ORDER BY id", pgx.QueryResultFormats{pgx.TextFormatCode})
	want := canonicalRows(before)
	for i := range want {
		for j := range want[i] {
			if got := after[i][j]; got != want[i][j] {
				t.Errorf("row %d column %d: read %q through the proxy, want %q", i+1, j, got, want[i][j])
			}
		}
	}
	for _, q := range []string{
		"SELECT id FROM legacy WHERE v_text = '  Ada@Example.org '",
		"SELECT id FROM legacy WHERE lower(v_text) = lower('  ADA@example.ORG ')",
		"SELECT id FROM legacy WHERE v_char = '900-12-3456'",
		"SELECT id FROM legacy WHERE v_int4 = 42",
		"SELECT id FROM legacy WHERE v_date = '1985-03-14'",
		"SELECT id FROM legacy WHERE v_uuid = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
	} {
		var id int
		if err := conn.QueryRow(ctx, q).Scan(&id); err != nil || id != 1 {
			t.Errorf("%s: id %d, %v", q, id, err)
		}
	}
	// PostgreSQL itself now refuses plaintext.
	if _, err := direct.Exec(ctx, "UPDATE legacy SET v_text = 'plain' WHERE id = 3"); err == nil || !strings.Contains(err.Error(), "23514") {
		t.Errorf("a plaintext write straight to PostgreSQL: %v, want a check violation", err)
	}
}

// readAll reads every row as text.
func readAll(t *testing.T, conn *pgx.Conn, sql string, args ...any) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		var r []string
		for _, v := range rows.RawValues() {
			if v == nil {
				r = append(r, "NULL")
			} else {
				r = append(r, string(v))
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// canonicalRows maps PostgreSQL's text output of the legacy table (read
// with the default settings of this cluster: ISO dates, UTC) to the
// proxy's canonical forms.
func canonicalRows(rows [][]string) [][]string {
	out := make([][]string, len(rows))
	for i, r := range rows {
		out[i] = append([]string(nil), r...)
		c := out[i]
		switch c[7] { // v_bool
		case "t", "true":
			c[7] = "t"
		case "f", "false":
			c[7] = "f"
		}
		c[3] = strings.TrimRight(c[3], " ") // char(11)::text drops the padding
		for _, j := range []int{9, 10} {    // timestamptz, timestamp read as UTC
			if c[j] != "NULL" && !strings.HasSuffix(c[j], "infinity") {
				c[j] = toUTC(c[j])
			}
		}
	}
	return out
}

// toUTC rewrites a timestamp text ("2024-01-02 08:00:00.123456+00" or
// without a zone) as the proxy presents it under TimeZone UTC, as
// PostgreSQL does ("...+00").
func toUTC(s string) string {
	for _, layout := range []string{"2006-01-02 15:04:05.999999-07", "2006-01-02 15:04:05.999999"} {
		if ts, err := time.Parse(layout, s); err == nil {
			return ts.UTC().Format("2006-01-02 15:04:05.999999-07")
		}
	}
	return s
}

// TestSchemaInstallsEpoch: in a database without phiproxy's catalog
// triggers, schema and check name them and print their DDL, which psql
// runs as a superuser; then nothing is missing.
func TestSchemaInstallsEpoch(t *testing.T) {
	e := newOpsEnv(t, "ops_epoch", typesPolicy)
	ctx := context.Background()
	su := connect(t, cluster.SuperuserDSN(e.db))
	for _, s := range []string{"DROP EVENT TRIGGER phiproxy_catalog_ddl", "DROP EVENT TRIGGER phiproxy_catalog_drop", "DROP SCHEMA phiproxy CASCADE"} {
		if _, err := su.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	res := e.run(t, "schema", "--config", e.config)
	if res.code != 1 || !strings.Contains(res.stdout, "CREATE EVENT TRIGGER \"phiproxy_catalog_ddl\"") || !strings.Contains(res.stdout, "catalog triggers") {
		t.Fatalf("schema without the triggers: %s", res)
	}
	if res := e.run(t, "check", "--config", e.config); res.code == 0 || !strings.Contains(res.stdout, "catalog triggers") {
		t.Errorf("check without the triggers: %s", res)
	}
	step1, _, _ := strings.Cut(res.stdout, "-- Step 2")
	path := filepath.Join(e.dir, "epoch.sql")
	if err := os.WriteFile(path, []byte(step1), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runPsql(t, cluster.SuperuserDSN(e.db), "-q", "-v", "ON_ERROR_STOP=1", "-f", path); r.Exit != 0 {
		t.Fatalf("psql: %s", r.Stderr)
	}
	if res := e.run(t, "schema", "--config", e.config); res.code != 0 || !strings.Contains(res.stdout, "nothing missing") {
		t.Fatalf("schema after step 1: %s", res)
	}
}
