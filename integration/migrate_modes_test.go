package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

const visitsPolicy = `  tables:
    - name: public.visits
      columns:
        note: { type: text }
        ssn:  { type: text, blind_index: {}, search: { digits: { normalize: [digits] } } }
`

// TestMigrateCompositeKeyAndDecrypt pages through a table keyed by (text,
// int), whose text order is not byte order, in small batches; then takes
// it back to plaintext with migrate decrypt, which refuses to run while
// the ciphertext CHECK constraints are in place.
func TestMigrateCompositeKeyAndDecrypt(t *testing.T) {
	e := newOpsEnv(t, "ops_visits", visitsPolicy)
	ctx := context.Background()
	direct := e.direct(t)
	if _, err := direct.Exec(ctx, `
CREATE TABLE visits (region text COLLATE "C", n int, note text, ssn text, PRIMARY KEY (region, n));
INSERT INTO visits SELECT r, g, 'note ' || r || ' ' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE '900-' || lpad(g::text, 6, '0') END
  FROM unnest(ARRAY['north', 'South', 'éast', 'a b']) r, generate_series(1, 700) g;`); err != nil {
		t.Fatal(err)
	}
	before := readAll(t, direct, "SELECT region, n, note, ssn FROM visits ORDER BY region, n")
	res := e.run(t, "schema", "--config", e.config)
	step1, step2, _ := strings.Cut(res.stdout, "-- Step 2")
	e.psqlFile(t, step1)

	mig := e.mustRun(t, "migrate", "encrypt", "--config", e.config, "--table", "visits", "--batch", "97")
	if !strings.Contains(mig.stdout, "2800 rows read") || !strings.Contains(mig.stdout, "updated 2800 rows") {
		t.Fatalf("migrate encrypt: %s", mig)
	}
	checkVisits(t, connect(t, e.startProxy(t).dsn(pgcluster.ScramUser, e.db)), before)
	var plain int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM visits WHERE NOT starts_with(note, 'phi1:') OR NOT starts_with(ssn, 'phi1:') OR (ssn IS NULL) <> (ssn_bidx IS NULL)").Scan(&plain); err != nil || plain != 0 {
		t.Fatalf("%d rows not encrypted (%v)", plain, err)
	}
	e.psqlFile(t, "-- Step 2"+step2)

	// decrypt refuses while PostgreSQL would refuse plaintext.
	res = e.run(t, "migrate", "decrypt", "--config", e.config, "--table", "visits")
	if res.code != 1 || !strings.Contains(res.stderr, "ALTER TABLE public.visits DROP CONSTRAINT visits_note_ciphertext;") {
		t.Fatalf("decrypt with the CHECK constraints in place: %s", res)
	}
	if _, err := direct.Exec(ctx, "ALTER TABLE visits DROP CONSTRAINT visits_note_ciphertext, DROP CONSTRAINT visits_ssn_ciphertext"); err != nil {
		t.Fatal(err)
	}
	dec := e.mustRun(t, "migrate", "decrypt", "--config", e.config, "--table", "visits", "--batch", "500")
	if !strings.Contains(dec.stdout, "updated 2800 rows") {
		t.Errorf("decrypt: %s", dec)
	}
	after := readAll(t, direct, "SELECT region, n, note, ssn FROM visits ORDER BY region, n")
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("the decrypted table differs from the original plaintext")
	}
	var bidx int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM visits WHERE ssn_bidx IS NOT NULL").Scan(&bidx); err != nil || bidx != 0 {
		t.Errorf("%d blind indexes left after decrypt (%v)", bidx, err)
	}
	if again := e.mustRun(t, "migrate", "decrypt", "--config", e.config, "--table", "visits"); !strings.Contains(again.stdout, "updated 0 rows") {
		t.Errorf("a second decrypt is not a no-op: %s", again)
	}
}

// checkVisits reads the visits through the proxy and finds one by ssn.
func checkVisits(t *testing.T, conn *pgx.Conn, want [][]string) {
	t.Helper()
	got := readAll(t, conn, "SELECT region, n, note, ssn FROM visits ORDER BY region, n")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read through the proxy: %d rows differ from the plaintext", len(got))
	}
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM visits WHERE regexp_replace(ssn, '[^0-9]', '', 'g') = regexp_replace('900 000 123', '[^0-9]', '', 'g') AND ssn = '900-000123'").Scan(&n); err != nil || n != 4 {
		t.Errorf("lookup by ssn through the blind index: %d rows, %v", n, err)
	}
}

// TestMigrateInvalidAndRefusedRows: a value the proxy would not accept
// for its type is left as it is and reported (never logged), and when a
// ciphertext CHECK already in place (NOT VALID) refuses that row's update,
// the rest of its batch still goes through, row by row.
func TestMigrateInvalidAndRefusedRows(t *testing.T) {
	e := newOpsEnv(t, "ops_invalid", `  tables:
    - name: public.m
      columns:
        a: { type: text }
        b: { type: int4 }
`)
	ctx := context.Background()
	direct := e.direct(t)
	if _, err := direct.Exec(ctx, `
CREATE TABLE m (id int PRIMARY KEY, a text, b text);
INSERT INTO m SELECT g, 'a' || g, CASE WHEN g = 7 THEN 'seven-not-a-number' ELSE g::text END FROM generate_series(1, 20) g;
ALTER TABLE m ADD CONSTRAINT m_b_ciphertext CHECK (b IS NULL OR (starts_with(b, 'phi1:') AND length(b) >= 49 AND b !~ '[^A-Za-z0-9+/:]')) NOT VALID;`); err != nil {
		t.Fatal(err)
	}
	res := e.run(t, "migrate", "encrypt", "--config", e.config, "--table", "m", "--batch", "10")
	if res.code != 1 || !strings.Contains(res.stdout, "updated 19 rows") || !strings.Contains(res.stdout, "1 refused by the database (server error 23514 (an integrity violation): table m, constraint m_b_ciphertext)") ||
		!strings.Contains(res.stdout, "b: 1 plaintext values are not valid int4 input") {
		t.Fatalf("migrate with an invalid value: %s", res)
	}
	if strings.Contains(res.stdout+res.stderr, "seven-not-a-number") {
		t.Fatal("the invalid value was printed")
	}
	var a, b string
	if err := direct.QueryRow(ctx, "SELECT a, b FROM m WHERE id = 7").Scan(&a, &b); err != nil || a != "a7" || b != "seven-not-a-number" {
		t.Fatalf("the refused row changed: %q %q %v", a, b, err)
	}
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM m WHERE starts_with(a, 'phi1:') AND starts_with(b, 'phi1:')").Scan(&n); err != nil || n != 19 {
		t.Fatalf("%d rows encrypted, want 19 (%v)", n, err)
	}
}
