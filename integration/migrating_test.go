package integration

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// startProxyWith is opsEnv.startProxy with another policy, returning the
// proxy's registry too.
func (e *opsEnv) startProxyWith(t *testing.T, pol *policy.Policy) (*testProxy, *prometheus.Registry) {
	t.Helper()
	kr := e.openKeyring(t)
	t.Cleanup(kr.Close)
	logs := &syncBuffer{}
	phiLogs.add(logs)
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	eng, err := phi.New(pol, phi.KeyringKeys(kr), reg, phi.Config{})
	if err != nil {
		t.Fatalf("phi.New: %v", err)
	}
	srv, err := proxy.New(baseConfig(), logger, reg, proxy.WithInterceptor(eng))
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	return runProxy(t, srv, logs), reg
}

// migratingPolicy is pol's YAML (as newOpsEnv takes it) with the table
// marked migrating: true.
func migratingPolicy(t *testing.T, policyYAML, table string) *policy.Policy {
	t.Helper()
	doc := strings.Replace(policyYAML, "    - name: "+table+"\n", "    - name: "+table+"\n      migrating: true\n", 1)
	pol, err := policy.Parse([]byte(strings.ReplaceAll("\n"+doc, "\n  ", "\n")))
	schema, name, _ := strings.Cut(table, ".")
	if err != nil || !pol.Table(schema, name).Migrating {
		t.Fatalf("migrating policy: %v", err)
	}
	return pol
}

// TestMigratingReads (issue 11): a table half adopted (step 1 run, some
// rows written through the proxy, the others still the application's
// plaintext) read through the proxy. With migrating: true every row reads
// as PostgreSQL had it (in text and binary format), the same before and
// after migrate encrypt reaches it, plaintext reads are counted and never
// logged, comparisons through a blind index are refused (0A000) and
// writes are encrypted. Without the flag the plaintext rows fail to
// decrypt (XX001) and an equality lookup silently misses them: the reason
// for the flag's refusal.
func TestMigratingReads(t *testing.T) {
	ctx := context.Background()
	e := newOpsEnv(t, "ops_migrating", typesPolicy)
	direct := e.direct(t)
	plainSchema := strings.NewReplacer("legacy", "legacy_plain").Replace(legacySchema)
	if _, err := direct.Exec(ctx, legacySchema+plainSchema); err != nil {
		t.Fatal(err)
	}
	res := e.run(t, "schema", "--config", e.config)
	step1, _, ok := strings.Cut(res.stdout, "-- Step 2")
	if res.code != 1 || !ok {
		t.Fatalf("schema: %s", res)
	}
	e.psqlFile(t, step1)

	migrating := migratingPolicy(t, typesPolicy, "public.legacy")
	p, reg := e.startProxyWith(t, migrating)
	conn := connect(t, p.dsn(pgcluster.ScramUser, e.db))
	// Writes through the proxy under the flag: a new row and part of an
	// old one; the same statements on the plaintext copy.
	writes := []string{
		`INSERT INTO %s VALUES (4, 'Dee@Example.org', 'Dee', '900-11-2222', 7, -1, 99.99, false, '2001-02-03',
		   '2023-06-01 12:00:00+00', '2023-06-01 12:00:00', 'b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '{"x": [true, null]}', '\xdead', '\xbeef', 12)`,
		`UPDATE %s SET v_text = 'carol', v_int4 = 5, v_jsonb = '{"k": "v"}' WHERE id = 2`,
	}
	for _, w := range writes {
		if _, err := conn.Exec(ctx, strings.Replace(w, "%s", "legacy", 1)); err != nil {
			t.Fatalf("write through the proxy under the flag: %v", err)
		}
		if _, err := direct.Exec(ctx, strings.Replace(w, "%s", "legacy_plain", 1)); err != nil {
			t.Fatal(err)
		}
	}
	var stored string
	if err := direct.QueryRow(ctx, "SELECT v_text FROM legacy WHERE id = 4").Scan(&stored); err != nil || !strings.HasPrefix(stored, crypto.TextPrefix) {
		t.Errorf("a write under the flag stored %q, %v: want ciphertext", stored, err)
	}
	var plainRows int
	direct.QueryRow(ctx, "SELECT count(*) FROM legacy WHERE NOT starts_with(v_varchar, 'phi1:')").Scan(&plainRows)
	if plainRows != 2 { // rows 1 and 3 (row 2's v_varchar is NULL)
		t.Fatalf("%d rows with a plaintext v_varchar, want 2: the table is not half migrated", plainRows)
	}

	const all = "SELECT * FROM legacy ORDER BY id"
	want := canonicalRows(readAll(t, direct, "SELECT * FROM legacy_plain ORDER BY id", pgx.QueryResultFormats{pgx.TextFormatCode}))
	text := readAll(t, conn, all, pgx.QueryResultFormats{pgx.TextFormatCode})
	binary := readAll(t, conn, all, pgx.QueryResultFormats{pgx.BinaryFormatCode})
	if len(text) != len(want) {
		t.Fatalf("%d rows through the proxy, want %d", len(text), len(want))
	}
	for i := range want {
		for j := range want[i] {
			if text[i][j] != want[i][j] {
				t.Errorf("row %d column %d under the flag: %q, want %q", i+1, j, text[i][j], want[i][j])
			}
		}
	}
	plaintextReads := func() float64 {
		return counterValue(t, reg, "phiproxy_plaintext_reads_total", "public.legacy", "v_text")
	}
	if n := plaintextReads(); n != 4 { // rows 1 and 3, twice
		t.Errorf("phiproxy_plaintext_reads_total{v_text} = %v, want 4", n)
	}
	for _, v := range []string{"Ada@Example.org", "900-12-3456", "900-65-4321"} {
		if strings.Contains(p.logs.String(), v) {
			t.Errorf("the proxy logged a plaintext value")
		}
	}

	// Comparisons through a blind index are refused under the flag.
	for _, q := range []string{
		"SELECT id FROM legacy WHERE v_int4 = 42",
		"SELECT id FROM legacy WHERE v_date IN ('1985-03-14', '2001-02-03')",
		"SELECT id FROM legacy WHERE lower(v_text) = lower($1)",
		"UPDATE legacy SET v_bool = true WHERE v_uuid = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
	} {
		_, err := conn.Exec(ctx, q, "ada@example.org")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Message, "while table public.legacy is being migrated") {
			t.Errorf("%s under the flag: %v, want 0A000", q, err)
		}
	}

	// Without the flag: plaintext fails to decrypt, and equality misses
	// the rows not yet migrated.
	plain, _ := e.startProxyWith(t, e.policy)
	strict := connect(t, plain.dsn(pgcluster.ScramUser, e.db))
	_, err := strict.Exec(ctx, all)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "XX001" || !strings.Contains(pe.Message, "decryption failed for column public.legacy.") {
		t.Errorf("reading plaintext without the flag: %v, want XX001", err)
	}
	var id int
	if err := strict.QueryRow(ctx, "SELECT id FROM legacy WHERE v_int4 = 42").Scan(&id); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("equality on a row not yet migrated without the flag: id %d, %v; the flag refuses it because it misses", id, err)
	}
	if err := strict.QueryRow(ctx, "SELECT id FROM legacy WHERE v_int4 = 7").Scan(&id); err != nil || id != 4 {
		t.Errorf("equality on a migrated row: id %d, %v", id, err)
	}

	// Once migrated, every row reads exactly as it did half migrated, the
	// flag or not, and equality finds the old rows too.
	e.mustRun(t, "migrate", "encrypt", "--config", e.config, "--table", "legacy")
	before := plaintextReads()
	for _, c := range []*pgx.Conn{conn, strict} {
		if got := readAll(t, c, all, pgx.QueryResultFormats{pgx.TextFormatCode}); !equalRows(got, text) {
			t.Errorf("text format after the migration differs from before:\n%v\n%v", got, text)
		}
		if got := readAll(t, c, all, pgx.QueryResultFormats{pgx.BinaryFormatCode}); !equalRows(got, binary) {
			t.Errorf("binary format after the migration differs from before")
		}
	}
	if n := plaintextReads(); n != before {
		t.Errorf("plaintext reads counted after the migration: %v, then %v", before, n)
	}
	if err := strict.QueryRow(ctx, "SELECT id FROM legacy WHERE v_int4 = 42").Scan(&id); err != nil || id != 1 {
		t.Errorf("equality on a migrated old row: id %d, %v", id, err)
	}
}

// equalRows compares rows value by value.
func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "\x00") != strings.Join(b[i], "\x00") {
			return false
		}
	}
	return true
}

// counterValue is the value of the counter name{table, column} of reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, table, column string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["table"] == table && labels["column"] == column {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{table=%q,column=%q}", name, table, column)
	return 0
}
