// Command bench measures phiproxy with pgbench, interleaving the targets of
// each workload in one run, and prints throughput and mean latency with the
// ratio to PostgreSQL directly (without and with TLS).
//
// Workloads (-workload pgbench|phi|all, default all):
//
//   - pgbench: select-only (-S) and the default TPC-B-like script, -M simple
//     and -M prepared, directly, through PgBouncer (session mode) and through
//     a transparent phiproxy (no policy).
//   - phi: a patients table encrypted by a PHI-enforcing phiproxy against a
//     plaintext copy of it used directly; one script inserts a patient with
//     6 PHI values (2 indexed), selects a patient by email and updates a
//     phone (see phi.go), -M prepared and -M simple.
//
// It starts its own throwaway PostgreSQL (internal/pgcluster), runs the
// proxies in this process (TLS from pgbench with sslmode=require, verify-full
// to PostgreSQL) and PgBouncer as a child process when it is installed. With
// -cpuprofile the proxy is profiled (during the phi runs when they run) and
// the top functions are printed.
//
//	go run ./scripts/bench [-workload phi] [-duration 15s] [-cpuprofile bench.prof]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	duration := flag.Duration("duration", 15*time.Second, "length of each pgbench run")
	clients := flag.Int("clients", 8, "pgbench clients (-c)")
	jobs := flag.Int("jobs", 2, "pgbench threads (-j)")
	scale := flag.Int("scale", 10, "pgbench scale factor (-s) of the pgbench workload")
	patients := flag.Int("patients", 10000, "patients seeded into each database of the phi workload")
	rounds := flag.Int("rounds", 1, "how many times to run each interleaved matrix")
	which := flag.String("workload", "all", "pgbench (select-only and TPC-B-like), phi (encrypted patients), or all")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (the proxy) to this file: the PHI runs when they run, else the pgbench runs")
	flag.Parse()
	runPgbenchWL, runPHI := *which == "all" || *which == "pgbench", *which == "all" || *which == "phi"
	if !runPgbenchWL && !runPHI {
		return fmt.Errorf("-workload %q: want pgbench, phi or all", *which)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("starting PostgreSQL ...")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: "db.internal", Settings: []string{
		// Logging every statement would measure the logger.
		"log_statement = 'none'", "log_connections = off", "log_disconnections = off",
		"shared_buffers = 256MB",
	}})
	if err != nil {
		return err
	}
	defer cluster.Stop()

	pgbench := filepath.Join(cluster.BinDir(), "pgbench")
	if _, err := os.Stat(pgbench); err != nil {
		if pgbench, err = exec.LookPath("pgbench"); err != nil {
			return errors.New("pgbench not found; install it with: apt-get install -y postgresql")
		}
	}
	m := matrix{pgbench: pgbench, role: pgcluster.ScramUser, rounds: *rounds,
		common: []string{"-n", "-c", strconv.Itoa(*clients), "-j", strconv.Itoa(*jobs), "-T", strconv.Itoa(int(duration.Seconds()))}}
	var tables []func() error

	if runPgbenchWL {
		fmt.Printf("pgbench -i -s %d ...\n", *scale)
		if out, err := pgbenchCmd(ctx, pgbench, target{"direct", "127.0.0.1", cluster.Port(), "disable", pgcluster.AppDatabase}, m.role,
			"-i", "-q", "-s", strconv.Itoa(*scale)).CombinedOutput(); err != nil {
			return fmt.Errorf("pgbench -i: %w\n%s", err, out)
		}
		m.targets = []target{
			{"direct", "127.0.0.1", cluster.Port(), "disable", pgcluster.AppDatabase},
			{"direct TLS", "127.0.0.1", cluster.Port(), "require", pgcluster.AppDatabase},
		}
		stopBouncer, bouncerPort, err := startPgBouncer(ctx, cluster, m.role)
		if err != nil {
			fmt.Printf("PgBouncer column skipped: %v\n", err)
		} else {
			defer stopBouncer()
			m.targets = append(m.targets, target{"pgbouncer", "127.0.0.1", bouncerPort, "disable", pgcluster.AppDatabase})
		}
		srv, err := startProxy(ctx, cluster, prometheus.NewRegistry())
		if err != nil {
			return err
		}
		defer srv.Close()
		m.targets = append(m.targets, target{"phiproxy (TLS both sides)", "127.0.0.1", proxyPort(srv), "require", pgcluster.AppDatabase})
		m.workloads = []workload{
			{"select-only, simple", []string{"-S", "-M", "simple"}},
			{"select-only, prepared", []string{"-S", "-M", "prepared"}},
			{"tpcb-like, simple", []string{"-M", "simple"}},
			{"tpcb-like, prepared", []string{"-M", "prepared"}},
		}
		profile := ""
		if !runPHI {
			profile = *cpuprofile
		}
		if err := m.run(ctx, profile, nil); err != nil {
			return err
		}
		title := fmt.Sprintf("pgbench -c %d -j %d -T %d, scale %d, %d round(s); mean tps and latency", *clients, *jobs, int(duration.Seconds()), *scale, *rounds)
		res := m
		tables = append(tables, func() error { return res.print(title) })
	}

	if runPHI {
		fmt.Printf("PHI workload: %d patients in %s (encrypted, through phiproxy) and %s (plaintext, direct) ...\n", *patients, phiEncryptedDB, phiPlainDB)
		pb, err := setupPHI(ctx, cluster, *patients)
		if err != nil {
			return err
		}
		defer pb.close()
		pm := m
		pm.results = nil
		pm.targets = []target{
			{"plaintext direct", "127.0.0.1", cluster.Port(), "disable", phiPlainDB},
			{"plaintext direct TLS", "127.0.0.1", cluster.Port(), "require", phiPlainDB},
			{"encrypted via phiproxy", "127.0.0.1", pb.port(), "require", phiEncryptedDB},
		}
		pm.workloads = []workload{
			{"phi, prepared", []string{"-M", "prepared", "-D", phiDOB, "-f", pb.scripts["prepared"]}},
			{"phi, simple", []string{"-M", "simple", "-D", phiDOB, "-f", pb.scripts["simple"]}},
		}
		// What the proxy did in each of its runs, from its metrics; and
		// with -cpuprofile a CPU profile of each of its runs, one file per
		// run (FILE.prepared.1, ...), merged into FILE afterwards.
		notes := map[int][]string{}
		profiles := map[int][]string{}
		var profErr error
		observe := func(wi, ti, r int, runIt func()) {
			if pm.targets[ti].port != pb.port() {
				runIt()
				return
			}
			if *cpuprofile != "" && profErr == nil {
				f := fmt.Sprintf("%s.%s.%d", *cpuprofile, strings.TrimPrefix(pm.workloads[wi].name, "phi, "), r+1)
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
			notes[wi] = append(notes[wi], describePHIMetrics(before, snapshot(pb.reg)))
		}
		if err := pm.run(ctx, "", observe); err != nil {
			return err
		}
		if profErr != nil {
			return profErr
		}
		title := fmt.Sprintf("PHI workload (insert 6 PHI values, select by email, update phone), pgbench -c %d -j %d -T %d, %d patients seeded, %d round(s)",
			*clients, *jobs, int(duration.Seconds()), *patients, *rounds)
		tables = append(tables, func() error {
			if err := pm.print(title); err != nil {
				return err
			}
			fmt.Println("\nphiproxy in the PHI runs (its metrics):")
			for wi, w := range pm.workloads {
				for _, n := range notes[wi] {
					fmt.Printf("  %-14s %s\n", w.name, n)
				}
			}
			if *cpuprofile == "" {
				return nil
			}
			var all []string
			for wi, w := range pm.workloads {
				all = append(all, profiles[wi]...)
				printProfileTop(fmt.Sprintf("phiproxy during %q through it", w.name), "", profiles[wi]...)
			}
			printProfileTop("phiproxy during all its PHI runs", *cpuprofile, all...)
			return nil
		})
	}

	for _, t := range tables {
		if err := t(); err != nil {
			return err
		}
	}
	if *cpuprofile != "" && !runPHI {
		printProfileTop("phiproxy during the pgbench runs", "", *cpuprofile)
	}
	return nil
}

func proxyPort(srv *proxy.Server) int { return srv.Addr().(*net.TCPAddr).Port }

// startProxy runs a proxy in this process in front of cluster, TLS on both
// sides, with its metrics in reg.
func startProxy(ctx context.Context, cluster *pgcluster.Cluster, reg prometheus.Registerer, opts ...proxy.Option) (*proxy.Server, error) {
	dir, err := os.MkdirTemp("", "phiproxy-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) // the proxy reads its files in New
	ca, err := pgcluster.NewCA("bench proxy CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	if err := ca.WriteServerFiles(caFile, certFile, keyFile, []string{"localhost", "127.0.0.1"}, 24*time.Hour); err != nil {
		return nil, err
	}
	cfg := proxy.Config{
		Listen: proxy.ListenConfig{Address: "127.0.0.1:0", TLS: proxy.ListenTLSConfig{CertFile: certFile, KeyFile: keyFile, MinVersion: "1.3"}},
		Upstream: proxy.UpstreamConfig{Address: cluster.Addr(), TLS: proxy.UpstreamTLSConfig{
			Mode: "verify-full", CAFile: cluster.CAFile(), ServerName: "db.internal",
		}},
		Metrics: proxy.MetricsConfig{Address: "127.0.0.1:0"},
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := proxy.New(cfg, logger, reg, opts...)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return srv, nil
}
