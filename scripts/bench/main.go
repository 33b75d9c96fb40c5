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
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

type target struct {
	name    string
	host    string
	port    int
	sslmode string
	db      string
}

type workload struct {
	name string
	args []string
}

type result struct {
	tps, latencyMS float64
	err            error
}

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

// matrix is a set of workloads run against every target, interleaved.
type matrix struct {
	pgbench   string
	role      pgcluster.Role
	rounds    int
	common    []string
	targets   []target
	workloads []workload
	results   map[[2]int][]result
}

// run runs each workload against every target in turn, rounds times,
// profiling this process (the proxy) into profile if it is set. wrap, if
// set, is called around each run of workload wi against target ti in round
// r.
func (m *matrix) run(ctx context.Context, profile string, wrap func(wi, ti, r int, run func())) error {
	if profile != "" {
		stop, err := startProfile(profile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if wrap == nil {
		wrap = func(_, _, _ int, run func()) { run() }
	}
	m.results = make(map[[2]int][]result)
	total := m.rounds * len(m.workloads) * len(m.targets)
	var d time.Duration
	for i, a := range m.common {
		if a == "-T" {
			s, _ := strconv.Atoi(m.common[i+1])
			d = time.Duration(s) * time.Second
		}
	}
	fmt.Printf("%d runs of %v each (~%v)\n", total, d, time.Duration(total)*(d+time.Second))
	for r := 0; r < m.rounds; r++ {
		for wi, w := range m.workloads {
			// Interleave: each workload runs against every target in turn.
			for ti, tg := range m.targets {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var res result
				wrap(wi, ti, r, func() {
					res = runPgbench(ctx, m.pgbench, tg, m.role, append(append([]string{}, m.common...), w.args...))
				})
				status := fmt.Sprintf("%.0f tps, %.3f ms", res.tps, res.latencyMS)
				if res.err != nil {
					status = res.err.Error()
				}
				fmt.Printf("  %-22s %-26s %s\n", w.name, tg.name, status)
				m.results[[2]int{wi, ti}] = append(m.results[[2]int{wi, ti}], res)
			}
		}
	}
	return nil
}

// print writes the table: per workload and target the mean tps and
// latency, and the throughput relative to the first two targets (direct
// without and with TLS).
func (m *matrix) print(title string) error {
	fmt.Printf("\n%s\n\n", title)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "workload\ttarget\ttps\tlatency ms\tvs direct\tvs direct TLS\t")
	for wi, w := range m.workloads {
		ref := []result{mean(m.results[[2]int{wi, 0}]), mean(m.results[[2]int{wi, 1}])}
		for ti, tg := range m.targets {
			r := mean(m.results[[2]int{wi, ti}])
			if r.err != nil {
				fmt.Fprintf(tw, "%s\t%s\tfailed\t-\t-\t-\t\n", w.name, tg.name)
				continue
			}
			ratio := [2]string{"-", "-"}
			for i, d := range ref {
				if d.err == nil && d.tps > 0 {
					ratio[i] = fmt.Sprintf("%.2f", r.tps/d.tps)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%s\t%s\t\n", w.name, tg.name, r.tps, r.latencyMS, ratio[0], ratio[1])
		}
	}
	return tw.Flush()
}

// startProfile starts a CPU profile of this process into file.
func startProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// printProfileTop prints where the proxy's time went in profiles (merged):
// go tool pprof -top, by flat and by cumulative time. If merged is set, the
// merged profile is also written there.
func printProfileTop(what, merged string, profiles ...string) {
	if len(profiles) == 0 {
		return
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Printf("\n(go not in PATH; see the profile with: go tool pprof -top %s)\n", strings.Join(profiles, " "))
		return
	}
	if merged != "" && (len(profiles) > 1 || profiles[0] != merged) {
		out, err := exec.Command(goBin, append([]string{"tool", "pprof", "-proto", "-output", merged}, profiles...)...).CombinedOutput()
		if err != nil {
			fmt.Printf("\npprof -proto: %v: %s\n", err, out)
		} else {
			profiles = []string{merged}
		}
	}
	for _, args := range [][]string{{"-top", "-nodecount=15"}, {"-top", "-cum", "-nodecount=15"}} {
		fmt.Printf("\n%s: go tool pprof %s %s\n", what, strings.Join(args, " "), strings.Join(profiles, " "))
		out, err := exec.Command(goBin, append(append([]string{"tool", "pprof"}, args...), profiles...)...).CombinedOutput()
		if err != nil {
			fmt.Printf("pprof: %v\n", err)
		}
		os.Stdout.Write(out)
	}
}

func mean(rs []result) result {
	var m result
	for _, r := range rs {
		if r.err != nil {
			return r
		}
		m.tps += r.tps / float64(len(rs))
		m.latencyMS += r.latencyMS / float64(len(rs))
	}
	if len(rs) == 0 {
		m.err = errors.New("no runs")
	}
	return m
}

func pgbenchCmd(ctx context.Context, pgbench string, tg target, r pgcluster.Role, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, pgbench, append([]string{"-h", tg.host, "-p", strconv.Itoa(tg.port), "-U", r.Name}, append(args, tg.db)...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+r.Password, "PGSSLMODE="+tg.sslmode)
	return cmd
}

var (
	tpsRE     = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	latencyRE = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
)

func runPgbench(ctx context.Context, pgbench string, tg target, r pgcluster.Role, args []string) result {
	out, err := pgbenchCmd(ctx, pgbench, tg, r, args...).CombinedOutput()
	if err != nil {
		return result{err: fmt.Errorf("pgbench: %v: %s", err, firstError(out))}
	}
	tps, lat := tpsRE.FindSubmatch(out), latencyRE.FindSubmatch(out)
	if tps == nil || lat == nil {
		return result{err: fmt.Errorf("pgbench output not understood: %s", lastLine(out))}
	}
	var res result
	res.tps, _ = strconv.ParseFloat(string(tps[1]), 64)
	res.latencyMS, _ = strconv.ParseFloat(string(lat[1]), 64)
	return res
}

func proxyPort(srv *proxy.Server) int { return srv.Addr().(*net.TCPAddr).Port }

// firstError is pgbench's first error line, the cause; else its last line.
func firstError(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "error:") {
			return strings.TrimSpace(l)
		}
	}
	return lastLine(b)
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

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

// startPgBouncer runs PgBouncer in session mode in front of cluster, as the
// postgres OS user when root (PgBouncer refuses to run as root).
func startPgBouncer(ctx context.Context, cluster *pgcluster.Cluster, r pgcluster.Role) (stop func(), port int, err error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			return nil, 0, errors.New("pgbouncer is not installed (apt-get install -y pgbouncer)")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	dir, err := os.MkdirTemp("", "pgbouncer-bench-")
	if err != nil {
		return nil, 0, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, err
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	ini := fmt.Sprintf(`[databases]
%[1]s = host=127.0.0.1 port=%[2]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[3]d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %[4]s/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = %[4]s/pgbouncer.log
pidfile = %[4]s/pgbouncer.pid
server_tls_sslmode = disable
`, pgcluster.AppDatabase, cluster.Port(), port, dir)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o600); err != nil {
		return nil, 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), fmt.Appendf(nil, "%q %q\n", r.Name, r.Password), 0o600); err != nil {
		return nil, 0, err
	}
	cmd := exec.CommandContext(ctx, bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, 0, fmt.Errorf("pgbouncer needs a non-root user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Pdeathsig: syscall.SIGTERM}
	}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start pgbouncer: %w", err)
	}
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			return stop, port, nil
		}
		if i == 50 {
			stop()
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			return nil, 0, fmt.Errorf("pgbouncer did not start: %s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
