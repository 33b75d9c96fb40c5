// Command bench measures phiproxy against PostgreSQL directly and against
// PgBouncer, interleaving the targets of each workload in one run, and
// prints throughput, mean latency, the ratio to PostgreSQL directly
// (without and with TLS) and each middlebox's CPU per transaction; and the
// memory an idle session costs each middlebox.
//
// Workloads (-workload pgbench|phi|idle|all, default all; and copy, run
// only when asked for):
//
//   - pgbench: select-only (-S) and the default TPC-B-like script, -M simple
//     and -M prepared, and select-only with a new connection per
//     transaction (-C), directly, through PgBouncer (session mode) and
//     through a transparent phiproxy (no policy); -C also through a
//     PHI-enforcing one, whose sessions start by reading the catalog.
//   - idle: -idle N idle TLS sessions through phiproxy and through
//     PgBouncer, and the RSS each process grows by (see idle.go).
//   - phi: a patients table encrypted by a PHI-enforcing phiproxy against a
//     plaintext copy of it used directly; one script inserts a patient with
//     6 PHI values (2 indexed), selects a patient by email and updates a
//     phone (see phi.go), -M prepared and -M simple.
//   - copy: COPY FROM STDIN of -copy-rows patients (6 PHI values, 2
//     indexed) into the encrypted table through phiproxy against the same
//     COPY into the plaintext twin directly, then COPY TO STDOUT of them
//     (see copy.go): rows per second and the ratio.
//
// Both middleboxes use TLS on both legs: pgbench connects with
// sslmode=require, phiproxy verifies PostgreSQL's certificate (verify-full)
// and so does PgBouncer (server_tls_sslmode=verify-full), and SCRAM-SHA-256
// is used end to end (PgBouncer by pass-through, see pgbouncer.go). The
// CPU of a middlebox is read from /proc (cpu.go); phiproxy runs in this
// process, PgBouncer as a child process when it is installed.
//
// It starts its own throwaway PostgreSQL (internal/pgcluster). With
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
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/internal/procs"
	"github.com/novamind/phiproxy/proxy"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == idleClientCmd {
		err = idleClient(os.Args[2:])
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	duration                       time.Duration
	clients, jobs, scale, patients int
	rounds, idle, copyRows         int
	copySorted                     bool
	cpuprofile                     string
	audit                          bool
	// hold: start the pgbench workload's targets, print them, and wait
	// for an interrupt instead of running pgbench (for perf and pprof by
	// hand).
	hold bool
	// warmPool keeps PgBouncer's server connections from one run to the
	// next instead of closing them before each of its runs.
	warmPool bool
}

func run() error {
	var o options
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "length of each pgbench run")
	flag.IntVar(&o.clients, "clients", 8, "pgbench clients (-c)")
	flag.IntVar(&o.jobs, "jobs", 2, "pgbench threads (-j)")
	flag.IntVar(&o.scale, "scale", 10, "pgbench scale factor (-s) of the pgbench workload")
	flag.IntVar(&o.patients, "patients", 10000, "patients seeded into each database of the phi workload")
	flag.IntVar(&o.rounds, "rounds", 1, "how many times to run each interleaved matrix (and the idle measurement)")
	flag.IntVar(&o.idle, "idle", 1000, "idle sessions opened through each middlebox by the idle workload")
	flag.IntVar(&o.copyRows, "copy-rows", 1_000_000, "patients loaded by each COPY of the copy workload")
	flag.BoolVar(&o.copySorted, "copy-sorted", false, "copy workload: ssn and email values in index order (flatters the plaintext btrees)")
	nprocs := flag.Int("procs", 0, "GOMAXPROCS of this process, which is the proxy (limits.max_procs); 0 adapts it as the proxy's default does (internal/procs)")
	which := flag.String("workload", "all", "pgbench (select-only, TPC-B-like, -C), idle (idle sessions' memory), phi (encrypted patients), all of these, or copy (COPY of encrypted patients)")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of this process (the proxy) to this file: the PHI runs when they run, else the pgbench runs")
	flag.BoolVar(&o.audit, "audit", false, "phi workload: also run phiproxy with an audit log, and with an audit log and masks for the benchmark role (issue 12), each compared with phiproxy without them")
	flag.BoolVar(&o.hold, "hold", false, "pgbench workload: start PostgreSQL, PgBouncer and phiproxy, print where they listen and their pids, and wait for an interrupt (to profile by hand) instead of running pgbench")
	flag.BoolVar(&o.warmPool, "warm-pool", false, "pgbench workload: keep PgBouncer's server connections warm from one run to the next (by default they are closed before each of its runs, so that it starts on new backends as direct connections and phiproxy do)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *nprocs > 0 {
		runtime.GOMAXPROCS(*nprocs)
	} else {
		go procs.Run(ctx, time.Second, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	}
	var runPgbenchWL, runIdle, runPHI, runCopy bool
	switch *which {
	case "all":
		runPgbenchWL, runIdle, runPHI = true, true, true
	case "pgbench":
		runPgbenchWL = true
	case "idle":
		runIdle = true
	case "phi":
		runPHI = true
	case "copy":
		runCopy = true
	default:
		return fmt.Errorf("-workload %q: want pgbench, idle, phi, all or copy", *which)
	}
	if o.idle < 1 {
		return fmt.Errorf("-idle %d: want at least 1", o.idle)
	}

	var tables []func() error
	if runCopy {
		cluster, err := startCluster(ctx)
		if err != nil {
			return err
		}
		defer cluster.Stop()
		t, err := benchCopy(ctx, cluster, o)
		if err != nil {
			return err
		}
		tables = append(tables, t)
	}
	if runPgbenchWL || runPHI {
		cluster, err := startCluster(ctx)
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
		m := matrix{pgbench: pgbench, role: pgcluster.ScramUser, rounds: o.rounds,
			common: []string{"-n", "-c", strconv.Itoa(o.clients), "-j", strconv.Itoa(o.jobs), "-T", strconv.Itoa(int(o.duration.Seconds()))}}
		if runPgbenchWL {
			profile := ""
			if !runPHI {
				profile = o.cpuprofile
			}
			t, err := benchPgbench(ctx, cluster, m, o, profile)
			if err != nil {
				return err
			}
			tables = append(tables, t)
		}
		if runPHI {
			t, err := benchPHI(ctx, cluster, m, o)
			if err != nil {
				return err
			}
			tables = append(tables, t)
		}
	}
	if runIdle {
		t, err := benchIdle(ctx, o.idle, o.rounds)
		if err != nil {
			return err
		}
		tables = append(tables, t)
	}

	fmt.Printf("\nFigures from one run on a %d-CPU machine shared with whatever else runs on it: noisy, compare\n", runtime.NumCPU())
	fmt.Println("targets within a table (interleaved) rather than across runs, and prefer CPU per transaction to tps.")
	for _, t := range tables {
		if err := t(); err != nil {
			return err
		}
	}
	if o.cpuprofile != "" && runPgbenchWL && !runPHI {
		printProfileTop("phiproxy during the pgbench runs", "", o.cpuprofile)
	}
	return nil
}

// startCluster starts a throwaway PostgreSQL for the benchmark, with
// extra postgresql.conf lines.
func startCluster(ctx context.Context, extra ...string) (*pgcluster.Cluster, error) {
	settings := append([]string{
		// Logging every statement would measure the logger.
		"log_statement = 'none'", "log_connections = off", "log_disconnections = off",
		"shared_buffers = 256MB",
	}, extra...)
	fmt.Println("starting PostgreSQL ...")
	return pgcluster.Start(ctx, pgcluster.Options{ServerName: "db.internal", Settings: settings})
}

// benchPgbench runs the pgbench workload: it initializes pgbench's tables
// in the app database and starts the middleboxes, which it stops when
// done. It returns the function printing its tables.
func benchPgbench(ctx context.Context, cluster *pgcluster.Cluster, m matrix, o options, profile string) (func() error, error) {
	self := os.Getpid()
	direct := target{name: "direct", host: "127.0.0.1", port: cluster.Port(), sslmode: "disable", db: pgcluster.AppDatabase, cpuPID: self}
	fmt.Printf("pgbench -i -s %d ...\n", o.scale)
	if out, err := pgbenchCmd(ctx, m.pgbench, direct, m.role, "-i", "-q", "-s", strconv.Itoa(o.scale)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	directTLS := direct
	directTLS.name, directTLS.sslmode = "direct TLS", "require"
	m.targets = []target{direct, directTLS}
	// middlebox adds a target after checking that both its legs use TLS.
	middlebox := func(name string, port, pid int, connectOnly bool) error {
		legs, err := describeLegs(ctx, pgcluster.DSN("127.0.0.1", port, m.role, pgcluster.AppDatabase, "require", ""))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Printf("check: %s: %s\n", name, legs)
		m.targets = append(m.targets, target{name: name, host: "127.0.0.1", port: port, sslmode: "require", db: pgcluster.AppDatabase,
			cpuPID: pid, middlebox: true, connectOnly: connectOnly})
		return nil
	}

	b, err := startPgBouncer(ctx, cluster, m.role, 200)
	if err != nil {
		fmt.Printf("PgBouncer column skipped: %v\n", err)
	} else {
		defer b.stop()
		if err := middlebox("pgbouncer", b.port, b.pid(), false); err != nil {
			return nil, err
		}
	}
	srv, err := startProxy(ctx, cluster, prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	if err := middlebox("phiproxy", proxyPort(srv), self, false); err != nil {
		return nil, err
	}
	// A PHI-enforcing proxy (the seed policy, whose tables app does not
	// have): each session starts by reading the catalog. Only in -C.
	dir, err := os.MkdirTemp("", "phiproxy-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	reg := prometheus.NewRegistry()
	eng, err := newPHIEngine(ctx, dir, reg)
	if err != nil {
		return nil, err
	}
	psrv, err := startProxy(ctx, cluster, reg, proxy.WithInterceptor(eng))
	if err != nil {
		return nil, err
	}
	defer psrv.Close()
	if err := middlebox("phiproxy+policy", proxyPort(psrv), self, true); err != nil {
		return nil, err
	}

	if o.hold {
		fmt.Printf("holding (interrupt to stop); role %s password %s, database %s, sslmode=require\n", m.role.Name, m.role.Password, pgcluster.AppDatabase)
		for _, t := range m.targets {
			fmt.Printf("  %-16s port %d pid %d\n", t.name, t.port, t.cpuPID)
		}
		<-ctx.Done()
		return func() error { return nil }, nil
	}
	m.workloads = []workload{
		{name: "select-only, simple", args: []string{"-S", "-M", "simple"}},
		{name: "select-only, prepared", args: []string{"-S", "-M", "prepared"}},
		{name: "tpcb-like, simple", args: []string{"-M", "simple"}},
		{name: "tpcb-like, prepared", args: []string{"-M", "prepared"}},
		{name: "select-only, simple, -C", args: []string{"-S", "-M", "simple", "-C"}, connect: true},
	}
	var wrap func(wi, ti, r int, run func())
	if !o.warmPool {
		wrap = func(_, ti, _ int, run func()) {
			if m.targets[ti].name == "pgbouncer" {
				if err := closeIdleBackends(ctx, cluster, m.role); err != nil {
					fmt.Printf("  closing PgBouncer's server connections: %v\n", err)
				}
			}
			run()
		}
	}
	if err := m.run(ctx, profile, wrap); err != nil {
		return nil, err
	}
	pool := "PgBouncer's server connections closed before each of its runs"
	if o.warmPool {
		pool = "PgBouncer's server connections kept from run to run"
	}
	title := fmt.Sprintf("pgbench -c %d -j %d -T %d, scale %d, %d round(s); mean tps and latency; TLS on both legs of both middleboxes; %s",
		o.clients, o.jobs, int(o.duration.Seconds()), o.scale, o.rounds, pool)
	return func() error { return m.print(title) }, nil
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
	certFile, keyFile, err := writeServerCert(dir, "proxy")
	if err != nil {
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
