package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/auditlog"
	"github.com/novamind/phiproxy/internal/leakcheck"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// The PHI tests run against their own database, phiDatabase, whose tables
// the policy below protects. Every plaintext PHI value they send goes
// through secret(), and after the whole suite leakCheck searches the server
// log, the table and WAL files (after CHECKPOINT) and the proxies' logs for
// each of them.

const phiDatabase = "phi"

// phiPolicy is the seed schema of issue 5 plus a table with one column of
// every logical type, and an insurance table whose subscriber SSN shares
// the patients' SSN index group (for joins). It governs phiDatabase only:
// sessions through a PHI proxy on other databases are relayed untouched.
const phiPolicy = `
databases: [phi]
tables:
  - name: public.patients
    columns:
      first_name:      { type: text }
      last_name:       { type: text }
      date_of_birth:   { type: date }
      ssn:             { type: text, blind_index: { index_group: ssn }, search: { digits: { normalize: [digits] } } }
      email:           { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }
      phone:           { type: text, blind_index: {}, search: { digits: { normalize: [digits] } } }
      address_line1:   { type: text }
      address_line2:   { type: text }
      city:            { type: text }
      state:           { type: text }
      postal_code:     { type: text }
      country:         { type: text }
      additional_info: { type: jsonb }
  - name: public.clinical_notes
    columns:
      diagnosis:       { type: text }
      medication:      { type: text }
      treatment_notes: { type: text }
  - name: public.insurance
    columns:
      subscriber_ssn:  { type: text, blind_index: { index_group: ssn }, search: { digits: { normalize: [digits] } } }
  - name: public.phi_types
    columns:
      v_text:        { type: text, blind_index: {} }
      v_varchar:     { type: varchar }
      v_int4:        { type: int4, blind_index: {} }
      v_int8:        { type: int8 }
      v_numeric:     { type: numeric, blind_index: {} }
      v_bool:        { type: bool }
      v_date:        { type: date, blind_index: {} }
      v_timestamptz: { type: timestamptz }
      v_uuid:        { type: uuid, blind_index: {} }
      v_jsonb:       { type: jsonb, blind_index: {} }
      v_bytea:       { type: bytea, storage: bytea }
`

// phiSchema creates the tables as phiproxy wants them: ciphertext in text
// (or bytea) columns, a text blind-index column with a btree beside each
// searchable one.
const phiSchema = `
CREATE TABLE patients (
  id bigserial PRIMARY KEY,
  first_name text, last_name text, date_of_birth text,
  ssn text, ssn_bidx text, ssn_bidx_digits text, email text, email_bidx text, email_bidx_ci text,
  phone text, phone_bidx text, phone_bidx_digits text,
  address_line1 text, address_line2 text, city text, state text, postal_code text, country text,
  additional_info text,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON patients (ssn_bidx);
CREATE UNIQUE INDEX ON patients (email_bidx);
CREATE INDEX ON patients (phone_bidx);
CREATE INDEX ON patients (ssn_bidx_digits);
CREATE INDEX ON patients (email_bidx_ci);
CREATE INDEX ON patients (phone_bidx_digits);
CREATE TABLE clinical_notes (
  id bigserial PRIMARY KEY, patient_id bigint REFERENCES patients (id),
  diagnosis text, medication text, treatment_notes text);
CREATE TABLE insurance (
  id serial PRIMARY KEY, patient_id bigint, subscriber_ssn text, subscriber_ssn_bidx text, subscriber_ssn_bidx_digits text, plan text);
CREATE TABLE phi_types (
  id serial PRIMARY KEY,
  v_text text, v_text_bidx text, v_varchar text, v_int4 text, v_int4_bidx text, v_int8 text, v_numeric text,
  v_numeric_bidx text, v_bool text, v_date text, v_date_bidx text, v_timestamptz text, v_uuid text, v_uuid_bidx text,
  v_jsonb text, v_jsonb_bidx text, v_bytea bytea);
`

// phiEnv is the shared PHI setup: database, policy and keyring. Built once.
var phiEnv struct {
	once    sync.Once
	err     error
	policy  *policy.Policy
	keyring *crypto.Keyring
}

// setupPHI creates phiDatabase and its tables and a local keyring.
func setupPHI(t *testing.T) {
	t.Helper()
	phiEnv.once.Do(func() { phiEnv.err = buildPHIEnv() })
	if phiEnv.err != nil {
		t.Fatalf("PHI setup: %v", phiEnv.err)
	}
}

func buildPHIEnv() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", phiDatabase, pgcluster.ScramUser.Name)); err != nil {
		return err
	}
	owner, err := pgx.Connect(ctx, cluster.DSN(pgcluster.ScramUser, phiDatabase, "verify-full"))
	if err != nil {
		return err
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, phiSchema); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	if phiEnv.policy, err = policy.Parse([]byte(phiPolicy)); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "phiproxy-keys-")
	if err != nil {
		return err
	}
	master := make([]byte, 32)
	rand.Read(master)
	prov, err := crypto.NewLocalProvider(master)
	if err != nil {
		return err
	}
	phiEnv.keyring, err = crypto.CreateKeyring(ctx, filepath.Join(dir, "keyring.json"), prov)
	return err
}

// startPHIProxy starts a proxy that enforces phiPolicy, with an audit log.
func startPHIProxy(t *testing.T) *testProxy {
	t.Helper()
	return startPHIProxyWith(t, phiOptions{})
}

// phiOptions vary startPHIProxyWith.
type phiOptions struct {
	policy *policy.Policy  // phiEnv.policy when nil
	audit  auditlog.Config // File: a new file in a temporary directory when empty
	// auditLog and auditPath, when not nil, receive the audit log and
	// its path.
	auditLog  **auditlog.Log
	auditPath *string
}

// startPHIProxyWith starts a PHI proxy. Every PHI proxy writes an audit
// log; when the test ends its chain must verify, and its contents join
// the proxy logs that the leak check searches.
func startPHIProxyWith(t *testing.T, o phiOptions) *testProxy {
	t.Helper()
	setupPHI(t)
	if o.policy == nil {
		o.policy = phiEnv.policy
	}
	logs := &syncBuffer{}
	phiLogs.add(logs)
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	if o.audit.File == "" {
		o.audit.File = filepath.Join(t.TempDir(), "audit.log")
	}
	o.audit.SetDefaults()
	audit, err := auditlog.Open(o.audit, logger, reg)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	if o.auditLog != nil {
		*o.auditLog = audit
	}
	if o.auditPath != nil {
		*o.auditPath = o.audit.File
	}
	// Registered before runProxy's cleanup, so it runs after the proxy
	// has stopped: every record is written.
	t.Cleanup(func() {
		audit.Close()
		if st, err := os.Stat(o.audit.File); err != nil || !st.Mode().IsRegular() {
			return // /dev/full
		}
		data, err := os.ReadFile(o.audit.File)
		if err != nil {
			t.Errorf("read the audit log: %v", err)
			return
		}
		b := &syncBuffer{}
		b.Write(data)
		phiLogs.add(b)
		if _, err := auditlog.VerifyFiles(o.audit.File); err != nil {
			t.Errorf("audit log chain: %v", err)
		}
	})
	eng, err := phi.New(o.policy, phi.KeyringKeys(phiEnv.keyring), reg, phi.Config{Audit: audit})
	if err != nil {
		t.Fatalf("phi.New: %v", err)
	}
	srv, err := proxy.New(baseConfig(), logger, reg, proxy.WithInterceptor(eng))
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	return runProxy(t, srv, logs)
}

// phiConn connects through p to phiDatabase as the schema's owner.
func phiConn(t *testing.T, p *testProxy, opts ...func(*pgx.ConnConfig)) *pgx.Conn {
	return connect(t, p.dsn(pgcluster.ScramUser, phiDatabase), opts...)
}

// phiDirect connects straight to PostgreSQL, for looking at what it stores.
func phiDirect(t *testing.T) *pgx.Conn {
	return connect(t, directDSN(pgcluster.ScramUser, phiDatabase))
}

// secrets are the plaintext PHI values sent by the tests.
var secrets struct {
	mu   sync.Mutex
	vals []string
}

// secret returns a new distinctive PHI value ("<label>-<random>") and
// records it for the leak check.
func secret(label string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return remember(label + "-" + hex.EncodeToString(b))
}

// remember records v for the leak check and returns it.
func remember(v string) string {
	secrets.mu.Lock()
	secrets.vals = append(secrets.vals, v)
	secrets.mu.Unlock()
	return v
}

// phiLogs are the logs and audit logs of every PHI proxy, searched by the
// leak check too.
var phiLogs logSet

type logSet struct {
	mu   sync.Mutex
	bufs []*syncBuffer
}

func (l *logSet) add(b *syncBuffer) {
	l.mu.Lock()
	l.bufs = append(l.bufs, b)
	l.mu.Unlock()
}

// leakCheck runs after the whole suite: no plaintext PHI value that a test
// sent may appear in the server log, in the files of the data directory
// (tables, indexes, WAL; after a CHECKPOINT), or in a proxy log.
func leakCheck() error {
	secrets.mu.Lock()
	vals := append([]string(nil), secrets.vals...)
	secrets.mu.Unlock()
	if len(vals) == 0 {
		return nil // no PHI test ran (go test -run)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	found, err := findPlaintext(cluster, vals, phiLogs.snapshot())
	if err != nil {
		return err
	}
	if len(found) > 0 {
		return fmt.Errorf("leak check: %d plaintext PHI values found:\n  %s", len(found), strings.Join(found, "\n  "))
	}
	fmt.Fprintf(os.Stderr, "leak check: none of %d PHI values found in the server log, data files or proxy logs\n", len(vals))
	return nil
}

func (l *logSet) snapshot() map[string][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]byte{}
	for i, b := range l.bufs {
		out[fmt.Sprintf("proxy log %d", i)] = []byte(b.String())
	}
	return out
}

// findPlaintext searches the server log, every file under the data
// directory and the extra texts for each value (internal/leakcheck). It
// returns "value in place" for each hit.
func findPlaintext(c *pgcluster.Cluster, vals []string, extra map[string][]byte) ([]string, error) {
	f := leakcheck.New(vals)
	if err := f.SearchCluster(c); err != nil {
		return nil, err
	}
	for place, b := range extra {
		f.Search(place, b)
	}
	return f.Found(), nil
}

// TestLeakCheckFindsPlaintext proves the leak check can fail: a value
// written straight to PostgreSQL, bypassing the proxy, is found in the
// server log and, after CHECKPOINT, in the table files.
func TestLeakCheckFindsPlaintext(t *testing.T) {
	setupPHI(t)
	canary := "canary-" + base64.RawURLEncoding.EncodeToString([]byte(time.Now().String()))[:16]
	direct := phiDirect(t)
	ctx := context.Background()
	if _, err := direct.Exec(ctx, "CREATE TABLE IF NOT EXISTS leak_canary (v text)"); err != nil {
		t.Fatal(err)
	}
	// A literal, so it is in the statement log, and stored in the table.
	if _, err := direct.Exec(ctx, fmt.Sprintf("INSERT INTO leak_canary VALUES ('%s')", canary), pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, cluster.SuperuserDSN("postgres")).Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	found, err := findPlaintext(cluster, []string{canary}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var inLog, inTable bool
	for _, f := range found {
		inLog = inLog || strings.HasSuffix(f, " in server log")
		inTable = inTable || strings.Contains(f, "/base/")
	}
	if !inLog || !inTable {
		t.Fatalf("leak check missed a plaintext write: found %v (want the server log and a table file)", found)
	}
}

// forget removes v from the leak check: a test that wrote it on purpose,
// bypassing the proxy.
func forget(v string) {
	secrets.mu.Lock()
	defer secrets.mu.Unlock()
	for i, s := range secrets.vals {
		if s == v {
			secrets.vals = append(secrets.vals[:i], secrets.vals[i+1:]...)
			return
		}
	}
}
