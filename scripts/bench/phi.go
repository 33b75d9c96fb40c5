package main

// The PHI workload: a patients table encrypted by phiproxy (ciphertext text
// columns and blind-index columns with btree indexes) in one database,
// reached through a PHI-enforcing proxy, against a plaintext copy of the
// same logical schema in another database, reached directly. One pgbench
// script per transaction: insert a patient with 6 PHI values (2 of them
// indexed), select a patient by email, update that patient's phone.

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

const (
	phiEncryptedDB = "phi_encrypted" // through phiproxy: ciphertext and blind indexes
	phiPlainDB     = "phi_plain"     // directly: the same logical schema in plaintext
)

// phiPlainSchema is the seed's patients table (internal/seed) in plaintext,
// with plain btree indexes on the searchable columns. The encrypted
// database gets seed.SchemaSQL: ciphertext columns and blind-index
// columns, without the optional CHECK constraints, which the plaintext twin
// has no counterpart of.
const phiPlainSchema = `
CREATE TABLE patients (
  id bigserial PRIMARY KEY,
  first_name text, last_name text, date_of_birth date,
  ssn text, email text, phone text,
  address_line1 text, address_line2 text, city text, state text, postal_code text, country text,
  additional_info jsonb,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON patients (ssn);
CREATE UNIQUE INDEX ON patients (email);
CREATE INDEX ON patients (phone);
`

// phiScript is the pgbench transaction. pgbench variables are integers,
// and in -M prepared/extended pgbench turns every :name into a parameter
// $n, also inside a quoted literal ('user:id@x' becomes 'user$1@x', which
// PostgreSQL refuses). So each PHI value is one variable: quoted in -M
// simple (pgbench splices its digits into a literal, which the proxy must
// encrypt in the SQL text) and bare in -M prepared (a text parameter that
// the proxy encrypts in Bind). The values are the same either way. A seeded
// patient's email is its id. dob is a string variable (pgbench -D, see
// phiDOB) because phiproxy takes only YYYY-MM-DD dates and no integer makes
// one (PostgreSQL itself would take YYYYMMDD).
const phiScript = `\set id random(1, {{patients}})
\set fn random(1, 99999999)
\set ln random(1, 99999999)
\set email random(1000000000, 999999999999999)
\set phone random(2000000000, 9999999999)
\set city random(1, 99999)
INSERT INTO patients (first_name, last_name, date_of_birth, email, phone, city) VALUES ({{fn}}, {{ln}}, {{dob}}, {{email}}, {{phone}}, {{city}});
SELECT id, first_name, last_name, date_of_birth, email, phone, city FROM patients WHERE email = {{id}};
UPDATE patients SET phone = {{phone}} WHERE email = {{id}};
`

// phiDOB is the date_of_birth of the inserted patients: pgbench -D dob=...
const phiDOB = "dob=1980-05-12"

// phiScriptFor renders phiScript for a pgbench -M mode.
func phiScriptFor(mode string, patients int) string {
	s := strings.ReplaceAll(phiScript, "{{patients}}", strconv.Itoa(patients))
	for _, v := range []string{"fn", "ln", "dob", "email", "phone", "city", "id"} {
		val := ":" + v
		if mode == "simple" {
			val = "'" + val + "'"
		}
		s = strings.ReplaceAll(s, "{{"+v+"}}", val)
	}
	return s
}

// benchPHI runs the PHI workload and returns the function printing its
// table, the proxy's metrics per run and the time it added per statement.
func benchPHI(ctx context.Context, cluster *pgcluster.Cluster, m matrix, o options) (func() error, error) {
	fmt.Printf("PHI workload: %d patients in %s (encrypted, through phiproxy) and %s (plaintext, direct) ...\n", o.patients, phiEncryptedDB, phiPlainDB)
	pb, err := setupPHI(ctx, cluster, o.patients, o.audit)
	if err != nil {
		return nil, err
	}
	defer pb.close()
	self := os.Getpid()
	const proxyTarget = 2 // the one whose metrics and profile are reported
	m.targets = []target{
		{name: "plaintext direct", host: "127.0.0.1", port: cluster.Port(), sslmode: "disable", db: phiPlainDB, cpuPID: self},
		{name: "plaintext direct TLS", host: "127.0.0.1", port: cluster.Port(), sslmode: "require", db: phiPlainDB, cpuPID: self},
		{name: "encrypted via phiproxy", host: "127.0.0.1", port: pb.port(), sslmode: "require", db: phiEncryptedDB, cpuPID: self, middlebox: true},
	}
	for _, v := range pb.variants {
		m.targets = append(m.targets, target{name: "phiproxy " + v.name, host: "127.0.0.1", port: proxyPort(v.srv), sslmode: "require", db: phiEncryptedDB, cpuPID: self, middlebox: true})
	}
	m.workloads = []workload{
		{name: "phi, prepared", args: []string{"-M", "prepared", "-D", phiDOB, "-f", pb.scripts["prepared"]}},
		{name: "phi, simple", args: []string{"-M", "simple", "-D", phiDOB, "-f", pb.scripts["simple"]}},
	}
	// What the proxy did in each of its runs, from its metrics; and with
	// -cpuprofile a CPU profile of each of its runs, one file per run
	// (FILE.prepared.1, ...), merged into FILE afterwards.
	notes := map[int][]string{}
	added := map[int][2]float64{} // phiproxy_statement_added_seconds sum and count over the runs
	profiles := map[int][]string{}
	var profErr error
	observe := func(wi, ti, r int, runIt func()) {
		if ti != proxyTarget {
			runIt()
			return
		}
		if o.cpuprofile != "" && profErr == nil {
			f := fmt.Sprintf("%s.%s.%d", o.cpuprofile, strings.TrimPrefix(m.workloads[wi].name, "phi, "), r+1)
			stop, err := startProfile(f)
			if err != nil {
				profErr = err
			} else {
				defer stop()
				profiles[wi] = append(profiles[wi], f)
			}
		}
		before := snapshot(pb.reg)
		runIt()
		after := snapshot(pb.reg)
		notes[wi] = append(notes[wi], describePHIMetrics(before, after))
		const h = "phiproxy_statement_added_seconds"
		a := added[wi]
		added[wi] = [2]float64{a[0] + after[h+"_sum"] - before[h+"_sum"], a[1] + after[h+"_count"] - before[h+"_count"]}
	}
	if err := m.run(ctx, "", observe); err != nil {
		return nil, err
	}
	if profErr != nil {
		return nil, profErr
	}
	auditNotes, err := pb.checkVariants() // before pb.close removes the files
	if err != nil {
		return nil, err
	}
	title := fmt.Sprintf("PHI workload (insert 6 PHI values, select by email, update phone), pgbench -c %d -j %d -T %d, %d patients seeded, %d round(s)",
		o.clients, o.jobs, int(o.duration.Seconds()), o.patients, o.rounds)
	return func() error {
		if err := m.print(title); err != nil {
			return err
		}
		fmt.Println("\nphiproxy in the PHI runs (its metrics):")
		for wi, w := range m.workloads {
			for _, n := range notes[wi] {
				fmt.Printf("  %-14s %s\n", w.name, n)
			}
		}
		fmt.Println("time phiproxy added per statement (phiproxy_statement_added_seconds, sum/count over its runs):")
		perStmt := map[string]float64{}
		for wi, w := range m.workloads {
			if a := added[wi]; a[1] > 0 {
				perStmt[w.name] = 1e6 * a[0] / a[1]
				fmt.Printf("  %-14s %.1f µs mean over %.0f statements\n", w.name, perStmt[w.name], a[1])
			}
		}
		if p, s := perStmt["phi, prepared"], perStmt["phi, simple"]; p > 0 && s > 0 {
			fmt.Printf("  simple / prepared: %.1f×\n", s/p)
		}
		pb.printVariants(m, proxyTarget, auditNotes)
		if o.cpuprofile == "" {
			return nil
		}
		var all []string
		for wi, w := range m.workloads {
			all = append(all, profiles[wi]...)
			printProfileTop(fmt.Sprintf("phiproxy during %q through it", w.name), "", profiles[wi]...)
		}
		printProfileTop("phiproxy during all its PHI runs", o.cpuprofile, all...)
		return nil
	}, nil
}

// phiBench is the PHI setup: both databases seeded, the PHI proxy running.
type phiBench struct {
	srv      *proxy.Server
	reg      *prometheus.Registry
	dir      string // scripts, keyring
	scripts  map[string]string
	variants []*phiVariant // with -audit
}

func (b *phiBench) close() {
	if b.srv != nil {
		b.srv.Close()
	}
	for _, v := range b.variants {
		v.close()
	}
	os.RemoveAll(b.dir)
}

// setupPHI creates both databases, a local keyring and the PHI proxy, and
// seeds patients rows into each: the encrypted one through the proxy, so
// that it holds real ciphertext and blind indexes.
func setupPHI(ctx context.Context, cluster *pgcluster.Cluster, patients int, audit bool) (_ *phiBench, err error) {
	b := &phiBench{reg: prometheus.NewRegistry(), scripts: map[string]string{}}
	if b.dir, err = os.MkdirTemp("", "phiproxy-bench-phi-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return nil, err
	}
	defer su.Close(ctx)
	owner := pgcluster.ScramUser
	pol, err := seed.Policy()
	if err != nil {
		return nil, err
	}
	for db, schema := range map[string]string{phiEncryptedDB: seed.SchemaSQL(pol, false), phiPlainDB: phiPlainSchema} {
		if _, err := su.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, owner.Name)); err != nil {
			return nil, err
		}
		c, err := pgx.Connect(ctx, cluster.DSN(owner, db, "verify-full"))
		if err != nil {
			return nil, err
		}
		_, err = c.Exec(ctx, schema)
		c.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("schema of %s: %w", db, err)
		}
	}

	governed, err := seed.PolicyFor(phiEncryptedDB)
	if err != nil {
		return nil, err
	}
	kr, err := newKeyring(ctx, b.dir)
	if err != nil {
		return nil, err
	}
	eng, err := phi.New(governed, phi.KeyringKeys(kr), b.reg, phi.Config{})
	if err != nil {
		return nil, err
	}
	if b.srv, err = startProxy(ctx, cluster, b.reg, proxy.WithInterceptor(eng)); err != nil {
		return nil, err
	}
	if audit {
		if b.variants, err = startAuditVariants(ctx, cluster, kr, b.dir, owner.Name); err != nil {
			return nil, err
		}
	}

	start := time.Now()
	proxyDSN := pgcluster.DSN("127.0.0.1", b.port(), owner, phiEncryptedDB, "require", "")
	if err := seedPatients(ctx, proxyDSN, patients); err != nil {
		return nil, fmt.Errorf("seed %s through phiproxy: %w", phiEncryptedDB, err)
	}
	fmt.Printf("seeded %d patients through phiproxy in %v\n", patients, time.Since(start).Round(time.Millisecond))
	if err := seedPatients(ctx, cluster.DSN(owner, phiPlainDB, "disable"), patients); err != nil {
		return nil, fmt.Errorf("seed %s: %w", phiPlainDB, err)
	}
	for _, db := range []string{phiEncryptedDB, phiPlainDB} {
		c, err := pgx.Connect(ctx, cluster.SuperuserDSN(db))
		if err != nil {
			return nil, err
		}
		_, err = c.Exec(ctx, "VACUUM ANALYZE patients")
		c.Close(ctx)
		if err != nil {
			return nil, err
		}
	}
	if err := checkPHI(ctx, cluster, proxyDSN); err != nil {
		return nil, err
	}
	for _, v := range b.variants {
		if err := v.check(ctx, owner); err != nil {
			return nil, err
		}
	}

	for _, mode := range []string{"prepared", "simple"} {
		f := filepath.Join(b.dir, "phi-"+mode+".sql")
		if err := os.WriteFile(f, []byte(phiScriptFor(mode, patients)), 0o644); err != nil {
			return nil, err
		}
		b.scripts[mode] = f
	}
	return b, nil
}

// newPHIEngine is the PHI layer for the seed policy with a new local
// keyring in dir, its metrics in reg, governing databases (the seed's own,
// app, when none are given).
func newPHIEngine(ctx context.Context, dir string, reg prometheus.Registerer, databases ...string) (*phi.Engine, error) {
	pol, err := seed.Policy()
	if len(databases) > 0 {
		pol, err = seed.PolicyFor(databases...)
	}
	if err != nil {
		return nil, err
	}
	kr, err := newKeyring(ctx, dir)
	if err != nil {
		return nil, err
	}
	return phi.New(pol, phi.KeyringKeys(kr), reg, phi.Config{})
}

// newKeyring creates a local keyring in dir under a random master key.
func newKeyring(ctx context.Context, dir string) (*crypto.Keyring, error) {
	master := make([]byte, 32)
	rand.Read(master)
	prov, err := crypto.NewLocalProvider(master)
	if err != nil {
		return nil, err
	}
	return crypto.CreateKeyring(ctx, filepath.Join(dir, "keyring.json"), prov)
}

func (b *phiBench) port() int { return proxyPort(b.srv) }

// seedPatients inserts patients 1..n, whose email is the id's text (what
// the pgbench script looks up), in batches.
func seedPatients(ctx context.Context, dsn string, n int) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	const insert = `INSERT INTO patients (first_name, last_name, date_of_birth, ssn, email, phone,
  address_line1, city, state, postal_code, country, additional_info)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`
	batch := &pgx.Batch{}
	for i := 1; i <= n; i++ {
		dob := time.Date(1930+i%75, time.Month(1+i%12), 1+i%28, 0, 0, 0, 0, time.UTC).Format("2006-01-02")
		batch.Queue(insert,
			fmt.Sprintf("First%d", i), fmt.Sprintf("Last%d", i), dob,
			fmt.Sprintf("%03d-%02d-%04d", 100+i%900, i%100, i%10000), strconv.Itoa(i), fmt.Sprintf("555%07d", i),
			fmt.Sprintf("%d Main Street", i), fmt.Sprintf("City%d", i%5000), "CA", fmt.Sprintf("%05d", i%100000), "US",
			fmt.Sprintf(`{"seed": %d}`, i))
		if batch.Len() == 500 || i == n {
			if err := c.SendBatch(ctx, batch).Close(); err != nil {
				return err
			}
			batch = &pgx.Batch{}
		}
	}
	return nil
}

// checkPHI makes sure the benchmark measures what it claims: through the
// proxy a seeded patient is found by email and comes back in plaintext,
// while PostgreSQL holds ciphertext and a blind index for it.
func checkPHI(ctx context.Context, cluster *pgcluster.Cluster, proxyDSN string) error {
	c, err := pgx.Connect(ctx, proxyDSN)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var email, first string
	var id int64
	if err := c.QueryRow(ctx, "SELECT id, email, first_name FROM patients WHERE email = '42'").Scan(&id, &email, &first); err != nil {
		return fmt.Errorf("check through phiproxy: %w", err)
	}
	if email != "42" || first != "First42" {
		return fmt.Errorf("check through phiproxy: got email %q first_name %q", email, first)
	}
	d, err := pgx.Connect(ctx, cluster.SuperuserDSN(phiEncryptedDB))
	if err != nil {
		return err
	}
	defer d.Close(ctx)
	var stored, bidx string
	if err := d.QueryRow(ctx, "SELECT email, coalesce(email_bidx, '') FROM patients WHERE id = $1", id).Scan(&stored, &bidx); err != nil {
		return err
	}
	if stored == email || bidx == "" {
		return fmt.Errorf("check: PostgreSQL holds email %q with blind index %q; want ciphertext and an index", stored, bidx)
	}
	fmt.Printf("check: through phiproxy email=%q; PostgreSQL stores %.24s... (%d chars), email_bidx %.16s...\n", email, stored, len(stored), bidx)
	return nil
}

// metricSnapshot is the PHI proxy's counters and histogram sums and
// counts, by metric name and labels.
type metricSnapshot map[string]float64

func snapshot(reg *prometheus.Registry) metricSnapshot {
	s := metricSnapshot{}
	mfs, err := reg.Gather()
	if err != nil {
		return s
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s[key] = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				s[key+"_sum"] = m.GetHistogram().GetSampleSum()
				s[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return s
}

// describePHIMetrics summarizes what the proxy did between two snapshots:
// statements by outcome, plan cache use, and the mean time it added.
func describePHIMetrics(before, after metricSnapshot) string {
	d := func(k string) float64 { return after[k] - before[k] }
	var outcomes []string
	for k := range after {
		if strings.HasPrefix(k, "phiproxy_statements_total{") && d(k) > 0 {
			outcomes = append(outcomes, fmt.Sprintf("%s %.0f", strings.TrimSuffix(strings.TrimPrefix(k, "phiproxy_statements_total{outcome="), "}"), d(k)))
		}
	}
	sort.Strings(outcomes)
	out := fmt.Sprintf("statements: %s; plan cache: %.0f hits, %.0f misses, %.0f bypass",
		strings.Join(outcomes, ", "), d("phiproxy_plan_cache_hits_total"), d("phiproxy_plan_cache_misses_total"), d("phiproxy_plan_cache_bypass_total"))
	if n := d("phiproxy_statement_added_seconds_count"); n > 0 {
		out += fmt.Sprintf("; time added (client→server) %.1f µs mean over %.0f", 1e6*d("phiproxy_statement_added_seconds_sum")/n, n)
	}
	return out
}
