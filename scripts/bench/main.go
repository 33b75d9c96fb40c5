// Command bench measures phiproxy against PostgreSQL directly and against
// PgBouncer (session mode) with pgbench: select-only (-S) and the default
// TPC-B-like script, -M simple and -M prepared, interleaved in one run, and
// prints throughput and mean latency with the ratio to direct.
//
// It starts its own throwaway PostgreSQL (internal/pgcluster), runs the
// proxy in this process (TLS from pgbench with sslmode=require, verify-full
// to PostgreSQL) and PgBouncer as a child process when it is installed.
//
//	go run ./scripts/bench [-duration 15s] [-cpuprofile bench.prof]
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
	scale := flag.Int("scale", 10, "pgbench scale factor (-s)")
	rounds := flag.Int("rounds", 1, "how many times to run the whole interleaved matrix")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (the proxy) to this file")
	flag.Parse()

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
	user := pgcluster.ScramUser
	fmt.Printf("pgbench -i -s %d ...\n", *scale)
	if out, err := pgbenchCmd(ctx, pgbench, target{"direct", "127.0.0.1", cluster.Port(), "disable"}, user,
		"-i", "-q", "-s", strconv.Itoa(*scale)).CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}

	targets := []target{
		{"direct", "127.0.0.1", cluster.Port(), "disable"},
		{"direct TLS", "127.0.0.1", cluster.Port(), "require"},
	}

	stopBouncer, bouncerPort, err := startPgBouncer(ctx, cluster, user)
	if err != nil {
		fmt.Printf("PgBouncer column skipped: %v\n", err)
	} else {
		defer stopBouncer()
		targets = append(targets, target{"pgbouncer", "127.0.0.1", bouncerPort, "disable"})
	}

	srv, err := startProxy(ctx, cluster)
	if err != nil {
		return err
	}
	defer srv.Close()
	proxyPort := srv.Addr().(*net.TCPAddr).Port
	targets = append(targets, target{"phiproxy (TLS both sides)", "127.0.0.1", proxyPort, "require"})

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	workloads := []workload{
		{"select-only, simple", []string{"-S", "-M", "simple"}},
		{"select-only, prepared", []string{"-S", "-M", "prepared"}},
		{"tpcb-like, simple", []string{"-M", "simple"}},
		{"tpcb-like, prepared", []string{"-M", "prepared"}},
	}
	results := make(map[[2]int][]result)
	common := []string{"-n", "-c", strconv.Itoa(*clients), "-j", strconv.Itoa(*jobs), "-T", strconv.Itoa(int(duration.Seconds()))}
	total := *rounds * len(workloads) * len(targets)
	fmt.Printf("%d runs of %v each (~%v), pgbench -c %d -j %d, scale %d\n", total, *duration,
		time.Duration(total)*(*duration+time.Second), *clients, *jobs, *scale)
	for r := 0; r < *rounds; r++ {
		for wi, w := range workloads {
			// Interleave: each workload runs against every target in turn.
			for ti, tg := range targets {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res := runPgbench(ctx, pgbench, tg, user, append(append([]string{}, common...), w.args...))
				status := fmt.Sprintf("%.0f tps, %.3f ms", res.tps, res.latencyMS)
				if res.err != nil {
					status = res.err.Error()
				}
				fmt.Printf("  %-22s %-26s %s\n", w.name, tg.name, status)
				results[[2]int{wi, ti}] = append(results[[2]int{wi, ti}], res)
			}
		}
	}

	fmt.Printf("\npgbench -c %d -j %d -T %d, scale %d, %d round(s); mean tps and latency\n\n", *clients, *jobs, int(duration.Seconds()), *scale, *rounds)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "workload\ttarget\ttps\tlatency ms\ttps vs direct\t")
	for wi, w := range workloads {
		direct := mean(results[[2]int{wi, 0}])
		for ti, tg := range targets {
			m := mean(results[[2]int{wi, ti}])
			ratio := "-"
			if m.err == nil && direct.err == nil && direct.tps > 0 {
				ratio = fmt.Sprintf("%.2f", m.tps/direct.tps)
			}
			if m.err != nil {
				fmt.Fprintf(tw, "%s\t%s\tfailed\t-\t-\t\n", w.name, tg.name)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%s\t\n", w.name, tg.name, m.tps, m.latencyMS, ratio)
		}
	}
	return tw.Flush()
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
	cmd := exec.CommandContext(ctx, pgbench, append([]string{"-h", tg.host, "-p", strconv.Itoa(tg.port), "-U", r.Name}, append(args, pgcluster.AppDatabase)...)...)
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
		return result{err: fmt.Errorf("pgbench: %v: %s", err, lastLine(out))}
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

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func startProxy(ctx context.Context, cluster *pgcluster.Cluster) (*proxy.Server, error) {
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
	srv, err := proxy.New(cfg, logger, prometheus.NewRegistry())
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
