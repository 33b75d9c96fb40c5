// Command migratebench measures `phiproxy migrate encrypt` on a plaintext
// patients table (6 PHI columns, 2 of them with blind indexes) as an
// operator runs it: the phiproxy binary, its configuration, phiproxy
// schema's step 1 run with psql, then the migration, timed. With -writers
// N it also runs N application writers through a PHI proxy (an UPDATE of
// a random patient's email and phone, an INSERT of a new patient) for
// -baseline before the migration and during it, and prints the
// application's statements per second in both windows.
//
//	go run ./scripts/migratebench [-rows 1000000] [-batch 1000] [-writers 2]
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

const policyYAML = `  tables:
    - name: public.patients
      columns:
        first_name:    { type: text }
        last_name:     { type: text }
        date_of_birth: { type: date }
        email:         { type: text, blind_index: { normalize: [trim, lower] } }
        ssn:           { type: text, blind_index: { normalize: [digits] } }
        phone:         { type: text }
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "migratebench:", err)
		os.Exit(1)
	}
}

type options struct {
	rows, batch, writers int
	baseline             time.Duration
}

func run() error {
	var o options
	flag.IntVar(&o.rows, "rows", 1000000, "rows in the plaintext table")
	flag.IntVar(&o.batch, "batch", 1000, "migrate --batch")
	flag.IntVar(&o.writers, "writers", 0, "application writers through the proxy during the migration (0: none)")
	flag.DurationVar(&o.baseline, "baseline", 10*time.Second, "how long the writers run alone before the migration")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "migratebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "phiproxy")
	fmt.Println("building phiproxy ...")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/phiproxy").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	fmt.Println("starting PostgreSQL ...")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: "db.internal", Settings: []string{
		"log_statement = 'none'", "log_connections = off", "log_disconnections = off", "shared_buffers = 256MB",
	}})
	if err != nil {
		return err
	}
	defer cluster.Stop()

	db := pgcluster.AppDatabase
	conn, err := pgx.Connect(ctx, cluster.DSN(pgcluster.ScramUser, db, "verify-full"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	fmt.Printf("creating %d plaintext patients ...\n", o.rows)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`
CREATE TABLE patients (
  id bigserial PRIMARY KEY, first_name text, last_name text, date_of_birth date,
  email text, ssn text, phone text, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO patients (id, first_name, last_name, date_of_birth, email, ssn, phone)
  SELECT g, 'first-' || g, 'last-' || g, date '1950-01-01' + g %% 20000, 'User' || g || '@Example.org',
         lpad(g::text, 9, '0'), '555-' || lpad(g::text, 7, '0')
  FROM generate_series(1, %d) g;
SELECT setval('patients_id_seq', %d);`, o.rows, o.rows)); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE patients"); err != nil {
		return err
	}

	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`listen: { address: 127.0.0.1:0, tls: { allow_plaintext: true } }
upstream: { address: %s, tls: { mode: verify-full, ca_file: %s, server_name: db.internal } }
keys: { keyring_file: keyring.json, provider: local, local: { master_key_file: master.key } }
policy:
  databases: [%s]
%s`, cluster.Addr(), cluster.CAFile(), db, policyYAML)), 0o600); err != nil {
		return err
	}
	phiproxy := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PGUSER="+pgcluster.ScramUser.Name, "PGPASSWORD="+pgcluster.ScramUser.Password)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, os.Stderr
		err := cmd.Run()
		return out.String(), err
	}
	if _, err := phiproxy("keys", "init", "--config", config); err != nil {
		return err
	}
	script, err := phiproxy("schema", "--config", config)
	step1, _, ok := strings.Cut(script, "-- Step 2")
	if !ok {
		return fmt.Errorf("schema: %v\n%s", err, script)
	}
	fmt.Println("phiproxy schema, step 1 (psql) ...")
	start := time.Now()
	// -f, not -c: psql runs a -c string as one transaction, and CREATE
	// INDEX CONCURRENTLY refuses that.
	stepFile := filepath.Join(dir, "step1.sql")
	if err := os.WriteFile(stepFile, []byte(step1), 0o600); err != nil {
		return err
	}
	psql := exec.CommandContext(ctx, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", cluster.DSN(pgcluster.ScramUser, db, "verify-full"), "-f", stepFile)
	if out, err := psql.CombinedOutput(); err != nil {
		return fmt.Errorf("psql: %v\n%s", err, out)
	}
	fmt.Printf("step 1 (type change, blind-index columns and indexes): %v\n", time.Since(start).Round(100*time.Millisecond))

	var app *writers
	if o.writers > 0 {
		if app, err = startWriters(ctx, dir, cluster, o); err != nil {
			return err
		}
		defer app.stop()
		time.Sleep(o.baseline)
		app.mark()
	}
	fmt.Printf("phiproxy migrate encrypt --batch %d ...\n", o.batch)
	start = time.Now()
	out, err := phiproxy("migrate", "encrypt", "--config", config, "--table", "patients", "--batch", fmt.Sprint(o.batch))
	el := time.Since(start)
	if err != nil {
		return fmt.Errorf("migrate: %v\n%s", err, out)
	}
	summary, _, _ := strings.Cut(out, "\nEvery value")
	fmt.Println(summary)
	fmt.Printf("\nmigrate encrypt: %d rows, 6 PHI columns (2 indexed), batch %d: %v, %.0f rows/s\n", o.rows, o.batch, el.Round(100*time.Millisecond), float64(o.rows)/el.Seconds())
	if app != nil {
		before, during := app.rates(el)
		fmt.Printf("application (%d writers through the proxy): %.0f statements/s before the migration, %.0f during it (%.2f)\n",
			o.writers, before, during, during/before)
	}
	return nil
}

// writers are application connections through a PHI proxy, counting
// their statements.
type writers struct {
	srv    *proxy.Server
	n      atomic.Int64
	base   int64 // count at mark
	baseAt time.Time
	start  time.Time
	stopCh chan struct{}
	wg     sync.WaitGroup
	err    atomic.Pointer[error]
}

func startWriters(ctx context.Context, dir string, cluster *pgcluster.Cluster, o options) (*writers, error) {
	pol, err := policy.Parse([]byte(strings.ReplaceAll("\n"+policyYAML, "\n  ", "\n")))
	if err != nil {
		return nil, err
	}
	p, err := crypto.LoadLocalProvider(crypto.LocalConfig{MasterKeyFile: filepath.Join(dir, "master.key")}, nil)
	if err != nil {
		return nil, err
	}
	kr, err := crypto.OpenKeyring(ctx, filepath.Join(dir, "keyring.json"), p)
	if err != nil {
		return nil, err
	}
	cfg := proxy.Config{
		Listen:   proxy.ListenConfig{Address: "127.0.0.1:0", TLS: proxy.ListenTLSConfig{AllowPlaintext: true}},
		Upstream: proxy.UpstreamConfig{Address: cluster.Addr(), TLS: proxy.UpstreamTLSConfig{Mode: "verify-full", CAFile: cluster.CAFile(), ServerName: "db.internal"}},
	}
	reg := prometheus.NewRegistry()
	eng, err := phi.New(pol, phi.KeyringKeys(kr), reg, phi.Config{})
	if err != nil {
		return nil, err
	}
	srv, err := proxy.New(cfg, slog.New(slog.DiscardHandler), reg, proxy.WithInterceptor(eng))
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	w := &writers{srv: srv, stopCh: make(chan struct{}), start: time.Now()}
	dsn := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", pgcluster.ScramUser.Name, pgcluster.ScramUser.Password, srv.Addr(), pgcluster.AppDatabase)
	for i := range o.writers {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return nil, err
		}
		w.wg.Add(1)
		go w.write(conn, i, o.rows)
	}
	return w, nil
}

func (w *writers) write(conn *pgx.Conn, seed, rows int) {
	defer w.wg.Done()
	defer conn.Close(context.Background())
	ctx := context.Background()
	b := make([]byte, 8)
	for i := 0; ; i++ {
		select {
		case <-w.stopCh:
			return
		default:
		}
		rand.Read(b)
		v := fmt.Sprintf("%x", b)
		var err error
		if i%2 == 0 {
			id := 1 + (int(b[0])<<16|int(b[1])<<8|int(b[2]))%rows
			_, err = conn.Exec(ctx, "UPDATE patients SET email = $1, phone = $2 WHERE id = $3", v+"@example.net", v, id)
		} else {
			_, err = conn.Exec(ctx, "INSERT INTO patients (first_name, last_name, date_of_birth, email, ssn, phone) VALUES ($1, $1, '1990-01-01', $2, $1, $1)", v, v+"@example.com")
		}
		if err != nil {
			w.err.CompareAndSwap(nil, &err)
			return
		}
		w.n.Add(1)
	}
}

// mark ends the baseline window.
func (w *writers) mark() {
	w.base, w.baseAt = w.n.Load(), time.Now()
}

// rates returns statements per second before and during the migration.
func (w *writers) rates(during time.Duration) (float64, float64) {
	total := w.n.Load()
	return float64(w.base) / w.baseAt.Sub(w.start).Seconds(), float64(total-w.base) / during.Seconds()
}

func (w *writers) stop() {
	close(w.stopCh)
	w.wg.Wait()
	w.srv.Close()
	if e := w.err.Load(); e != nil && !errors.Is(*e, context.Canceled) {
		fmt.Fprintln(os.Stderr, "migratebench: a writer failed:", *e)
	}
}
