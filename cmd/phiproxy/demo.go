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
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

// demoUpstreamName is the name the proxy expects in the demo database's
// certificate (verify-full), as a production config would name its server.
const demoUpstreamName = "db.internal"

// demoEnv is what the demo's steps share. Later features (keyring, schema,
// sample patients) add fields and steps; see demoSteps.
type demoEnv struct {
	dir     string // .demo: kept between runs (certificates; later the keyring)
	cluster *pgcluster.Cluster
	cfg     proxy.Config
	stdout  io.Writer
	logger  *slog.Logger
}

// demoSteps run in order after the database has started and before the
// proxy starts; each may change env.cfg and prepare the database.
var demoSteps []func(ctx context.Context, env *demoEnv) error

// runDemo starts a throwaway PostgreSQL and the proxy in front of it, prints
// how to connect through the proxy with psql, and waits for Ctrl-C.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".demo", "directory for the files kept between runs (the proxy's certificate)")
	listen := fs.String("listen", "127.0.0.1:6432", "address of the proxy")
	metrics := fs.String("metrics", "127.0.0.1:9187", "address of /metrics, /healthz and /readyz")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("demo: %w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: %w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("demo: %w: -log-level: %v", errUsage, err)
	}

	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := os.MkdirAll(absDir, 0o700); err != nil {
		return fmt.Errorf("demo: create %s: %w", absDir, err)
	}
	certs, err := demoProxyCert(absDir, stdout)
	if err != nil {
		return err
	}

	fmt.Fprintln(stdout, "Starting a throwaway PostgreSQL ...")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: demoUpstreamName})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(stderr, "phiproxy: demo:", err)
		}
	}()

	env := &demoEnv{
		dir:     absDir,
		cluster: cluster,
		stdout:  stdout,
		logger:  slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		cfg: proxy.Config{
			Listen: proxy.ListenConfig{
				Address: *listen,
				TLS:     proxy.ListenTLSConfig{CertFile: certs.cert, KeyFile: certs.key, MinVersion: "1.3"},
			},
			Upstream: proxy.UpstreamConfig{
				Address: cluster.Addr(),
				TLS:     proxy.UpstreamTLSConfig{Mode: "verify-full", CAFile: cluster.CAFile(), ServerName: demoUpstreamName},
			},
			Metrics: proxy.MetricsConfig{Address: *metrics},
		},
	}
	for _, step := range demoSteps {
		if err := step(ctx, env); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}

	srv, err := proxy.New(env.cfg, env.logger, prometheus.NewRegistry())
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("demo: start proxy: %w", err)
	}
	defer srv.Close()

	printDemoBanner(stdout, env, srv, certs.ca)

	<-ctx.Done()
	fmt.Fprintln(stdout, "\nStopping: draining sessions, then removing the database ...")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintln(stderr, "phiproxy: demo: shutdown:", err)
	}
	return nil
}

func printDemoBanner(w io.Writer, env *demoEnv, srv *proxy.Server, caFile string) {
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	p, _ := strconv.Atoi(port)
	user := pgcluster.ScramUser
	dsn := pgcluster.DSN("localhost", p, pgcluster.Role{Name: user.Name}, pgcluster.AppDatabase, "verify-full", caFile)
	fmt.Fprintf(w, `
phiproxy demo is running.

  PostgreSQL  %s (TLS; its log: %s)
  phiproxy    %s -> PostgreSQL, upstream TLS verify-full as %q
  metrics     http://%s/metrics  (/healthz, /readyz)

Connect through the proxy (TLS 1.3, certificate checked against %s):

  PGPASSWORD=%s psql "%s"

Other roles: %s (MD5, password %s), %s (SCRAM, password %s).
Press Ctrl-C to stop; the database is deleted on exit.
`,
		env.cluster.Addr(), env.cluster.LogFile(),
		srv.Addr(), demoUpstreamName,
		srv.MetricsAddr(),
		caFile,
		user.Password, dsn,
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
