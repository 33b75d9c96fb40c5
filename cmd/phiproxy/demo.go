package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// demoUpstreamName is the name the proxy expects in the demo database's
// certificate (verify-full), as a production config would name its server.
const demoUpstreamName = "db.internal"

// demoEnv is what the demo's steps share.
type demoEnv struct {
	dir     string // .demo: kept between runs (certificates, keyring, master key)
	cluster *pgcluster.Cluster
	cfg     proxy.Config
	opts    []proxy.Option // for proxy.New (demoKeys adds the PHI interceptor)
	reg     *prometheus.Registry
	proxyCA string        // the CA file that verifies the proxy's certificate
	srv     *proxy.Server // set before demoLiveSteps run
	stdout  io.Writer
	logger  *slog.Logger

	policy  *policy.Policy  // the seed policy (internal/seed)
	keyring *crypto.Keyring // the dev keyring; closed by (*demo).close
}

// demoSteps run in order after the database has started and before the
// proxy starts; each may change env.cfg and env.opts and prepare the
// database. demoLiveSteps run in order once the proxy accepts connections,
// before the banner is printed.
var (
	demoSteps     []func(ctx context.Context, env *demoEnv) error
	demoLiveSteps []func(ctx context.Context, env *demoEnv) error
)

// directDSN connects to the demo database straight to PostgreSQL, as the
// owner of the demo tables.
func (env *demoEnv) directDSN() string {
	return env.cluster.DSN(pgcluster.ScramUser, pgcluster.AppDatabase, "verify-full")
}

// proxyDSN connects to the demo database through the proxy (verify-full
// against the demo CA), as the owner of the demo tables.
func (env *demoEnv) proxyDSN() string {
	_, port, _ := net.SplitHostPort(env.srv.Addr().String())
	p, _ := strconv.Atoi(port)
	return pgcluster.DSN("localhost", p, pgcluster.ScramUser, pgcluster.AppDatabase, "verify-full", env.proxyCA)
}

// demoOptions configure startDemo.
type demoOptions struct {
	dir, listen, metrics string
	stdout               io.Writer
	logger               *slog.Logger
}

const demoUsage = `Usage: phiproxy demo [--listen ADDR] [--metrics ADDR] [--dir DIR] [--log-level LEVEL]

Starts a throwaway PostgreSQL (from the server binaries on this machine), a
dev keyring and a self-signed certificate, creates the tables of
config.example.yaml's policy, inserts a few made-up patients through the
proxy, and prints how to connect with psql. Ctrl-C (or SIGTERM, SIGHUP)
stops it and deletes the database; DIR is kept.

  --listen ADDR     address of the proxy (default 127.0.0.1:6432; port 0: any free port)
  --metrics ADDR    address of /metrics, /healthz and /readyz (default 127.0.0.1:9187)
  --dir DIR         files kept between runs: certificates, keyring, master key (default .demo)
  --log-level LEVEL debug, info, warn or error (default info)
`

// runDemo starts a throwaway PostgreSQL and the proxy in front of it, prints
// how to connect through the proxy with psql, and waits for Ctrl-C.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo")
	dir := fs.String("dir", ".demo", "")
	listen := fs.String("listen", "127.0.0.1:6432", "")
	metrics := fs.String("metrics", "127.0.0.1:9187", "")
	logLevel := fs.String("log-level", "info", "")
	pos, err := parseArgs(fs, args, demoUsage)
	if err != nil {
		return err
	}
	if err := noArgs("demo", pos); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("demo: %w: -log-level: %v", errUsage, err)
	}
	// The default ports may be taken (another demo, a real proxy): then
	// any free port. A port given explicitly is used or fails.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["listen"] {
		*listen = freeIfBusy(*listen, stdout)
	}
	if !set["metrics"] {
		*metrics = freeIfBusy(*metrics, stdout)
	}
	// Closing the terminal (SIGHUP) cleans up too, as Ctrl-C and SIGTERM do.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()

	// The proxy's Info lines about the demo's own sessions (sample inserts,
	// the side-by-side row) would interleave with what the demo prints:
	// they are logged at Warn and above until the banner.
	lv := new(slog.LevelVar)
	lv.Set(max(level, slog.LevelWarn))
	d, err := startDemo(ctx, demoOptions{
		dir: *dir, listen: *listen, metrics: *metrics, stdout: stdout,
		logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})),
	})
	if err != nil {
		return err
	}
	defer d.close(stderr)
	for i := 0; i < 100 && d.env.srv.ActiveSessions() > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	lv.Set(level)
	printDemoBanner(stdout, d.env)

	<-ctx.Done()
	fmt.Fprintln(stdout, "\nStopping: draining sessions, then removing the database ...")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.env.srv.Shutdown(sctx); err != nil {
		fmt.Fprintln(stderr, "phiproxy: demo: shutdown:", err)
	}
	return nil
}

// demo is a running demo: a throwaway PostgreSQL with the demo schema and
// sample data, and the proxy in front of it.
type demo struct {
	env       *demoEnv
	closeOnce sync.Once
}

// startDemo prepares the demo directory, starts PostgreSQL, runs
// demoSteps, starts the proxy and runs demoLiveSteps. On error nothing is
// left running.
func startDemo(ctx context.Context, o demoOptions) (_ *demo, err error) {
	absDir, err := filepath.Abs(o.dir)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if err := os.MkdirAll(absDir, 0o700); err != nil {
		return nil, fmt.Errorf("demo: create %s: %w", absDir, err)
	}
	certs, err := demoProxyCert(absDir, o.stdout)
	if err != nil {
		return nil, err
	}

	fmt.Fprintln(o.stdout, "Starting a throwaway PostgreSQL ...")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: demoUpstreamName})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d := &demo{env: &demoEnv{
		dir:     absDir,
		cluster: cluster,
		proxyCA: certs.ca,
		stdout:  o.stdout,
		reg:     prometheus.NewRegistry(),
		opts:    []proxy.Option{proxy.WithBuildInfo(buildInfo())},
		logger:  o.logger,
		cfg: proxy.Config{
			Listen: proxy.ListenConfig{
				Address: o.listen,
				TLS:     proxy.ListenTLSConfig{CertFile: certs.cert, KeyFile: certs.key, MinVersion: "1.3"},
			},
			Upstream: proxy.UpstreamConfig{
				Address: cluster.Addr(),
				TLS:     proxy.UpstreamTLSConfig{Mode: "verify-full", CAFile: cluster.CAFile(), ServerName: demoUpstreamName},
			},
			Metrics: proxy.MetricsConfig{Address: o.metrics},
		},
	}}
	defer func() {
		if err != nil {
			d.close(io.Discard)
		}
	}()
	env := d.env
	for _, step := range demoSteps {
		if err := step(ctx, env); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	srv, err := proxy.New(env.cfg, env.logger, env.reg, env.opts...)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return nil, fmt.Errorf("demo: start proxy: %w", err)
	}
	env.srv = srv
	for _, step := range demoLiveSteps {
		if err := step(ctx, env); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	return d, nil
}

// close stops the proxy (at once: runDemo drains it first), forgets the
// keys and removes the database. Problems are reported to stderr. Only the
// first call does anything.
func (d *demo) close(stderr io.Writer) {
	d.closeOnce.Do(func() { d.stop(stderr) })
}

func (d *demo) stop(stderr io.Writer) {
	env := d.env
	if env.srv != nil {
		env.srv.Close()
	}
	if env.keyring != nil {
		env.keyring.Close()
	}
	if err := env.cluster.Stop(); err != nil {
		fmt.Fprintln(stderr, "phiproxy: demo:", err)
	}
}

func printDemoBanner(w io.Writer, env *demoEnv) {
	srv := env.srv
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	p, _ := strconv.Atoi(port)
	user := pgcluster.ScramUser
	dsn := pgcluster.DSN("localhost", p, pgcluster.Role{Name: user.Name}, pgcluster.AppDatabase, "verify-full", env.proxyCA)
	direct := pgcluster.DSN("127.0.0.1", env.cluster.Port(), pgcluster.Role{Name: user.Name}, pgcluster.AppDatabase, "verify-full", env.cluster.CAFile())
	email := demoPatients[0].email
	fmt.Fprintf(w, `
phiproxy demo is running.

  PostgreSQL  %s (TLS; its log: %s)
  phiproxy    %s -> PostgreSQL, upstream TLS verify-full as %q
  metrics     http://%s/metrics  (/healthz, /readyz)
  keys        %s (local master key %s)

Connect through the proxy (TLS 1.3, certificate checked against %s):

  PGPASSWORD=%s psql "%s"

and try:

  SELECT * FROM patients WHERE email = '%s';
      -- found through the email's blind index and decrypted; *_bidx columns are hidden
  SELECT * FROM patients WHERE email LIKE 'a%%';
      -- refused with SQLSTATE 0A000: PostgreSQL holds only ciphertext, it cannot match a pattern

See what PostgreSQL stores, bypassing the proxy:

  PGPASSWORD=%s psql "%s" -c 'SELECT * FROM patients'

Other roles: %s (MD5, password %s), %s (SCRAM, password %s).
Press Ctrl-C to stop; the database is deleted on exit.
`,
		env.cluster.Addr(), env.cluster.LogFile(),
		srv.Addr(), demoUpstreamName,
		srv.MetricsAddr(),
		filepath.Join(env.dir, "keyring.json"), filepath.Join(env.dir, "master.key"),
		env.proxyCA,
		user.Password, dsn,
		email,
		user.Password, direct,
		pgcluster.MD5User.Name, pgcluster.MD5User.Password, pgcluster.Superuser.Name, pgcluster.Superuser.Password)
}

type demoCerts struct{ ca, cert, key string }

// demoProxyCert returns the proxy's certificate files in dir, creating them
// on the first run (or when they expire): a local CA, kept only as its
// certificate, and a certificate for localhost and 127.0.0.1 signed by it.
func demoProxyCert(dir string, stdout io.Writer) (demoCerts, error) {
	c := demoCerts{
		ca:   filepath.Join(dir, "proxy-ca.crt"),
		cert: filepath.Join(dir, "proxy.crt"),
		key:  filepath.Join(dir, "proxy.key"),
	}
	if certValid(c.cert) && fileExists(c.key) && fileExists(c.ca) {
		return c, nil
	}
	ca, err := pgcluster.NewCA("phiproxy demo CA", 365*24*time.Hour)
	if err != nil {
		return c, fmt.Errorf("demo: %w", err)
	}
	if err := ca.WriteServerFiles(c.ca, c.cert, c.key, []string{"localhost", "127.0.0.1", "::1"}, 365*24*time.Hour); err != nil {
		return c, fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(stdout, "Created the proxy's certificate in %s (CA: %s)\n", dir, filepath.Base(c.ca))
	return c, nil
}

// certValid reports whether path holds a certificate valid for at least a
// day more.
func certValid(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	return err == nil && time.Now().Add(24*time.Hour).Before(cert.NotAfter)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// freeIfBusy returns addr if it can be listened on, else the same host with
// port 0 (any free port), saying so.
func freeIfBusy(addr string, stdout io.Writer) string {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	fmt.Fprintf(stdout, "%s is taken; using a free port instead\n", addr)
	return net.JoinHostPort(host, "0")
}
