// Command logincost measures what a new connection costs phiproxy in CPU,
// for each way SCRAM logins cross it (upstream.scram): pgbench -C (a new
// connection per transaction, select-only) through phiproxy running in this
// process, TLS on both legs, SCRAM-SHA-256 end to end. The CPU of a run is
// utime+stime of this process from /proc/self/stat (pgbench is a child,
// whose time the kernel keeps apart), divided by the transactions, i.e.
// the connections, pgbench made. Targets are interleaved, rounds times.
//
//	go run ./scripts/logincost -duration 10s -rounds 3
//
// The targets:
//
//   - direct TLS: pgbench straight to PostgreSQL; the CPU column is this
//     process idling, the floor under the others;
//   - auto, no cache: upstream.scram: auto with scram_cache.size -1, the
//     proxy running PBKDF2 for every connection (the behaviour before the
//     cache);
//   - auto, cache: the default, keys cached per (role, salt);
//   - verifier: upstream.scram: verifier (auth_user with the default
//     auth_query); no PBKDF2 anywhere in the proxy.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "logincost:", err)
		os.Exit(1)
	}
}

type target struct {
	name string
	port int
}

type sample struct {
	conns int64
	cpu   time.Duration
	tps   float64
}

func run() error {
	duration := flag.Duration("duration", 10*time.Second, "length of each pgbench run")
	rounds := flag.Int("rounds", 2, "interleaved rounds")
	clients := flag.Int("clients", 4, "pgbench clients (-c)")
	jobs := flag.Int("jobs", 2, "pgbench threads (-j)")
	profile := flag.String("cpuprofile", "", "write a CPU profile of each proxy run to PREFIX.<target number>.<round>")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("starting PostgreSQL ...")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: "db.internal", Settings: []string{
		"log_statement = 'none'", "log_connections = off", "log_disconnections = off"}})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	pgbench, err := exec.LookPath("pgbench")
	if p := filepath.Join(cluster.BinDir(), "pgbench"); fileExists(p) {
		pgbench, err = p, nil
	}
	if err != nil {
		return fmt.Errorf("pgbench not found: %w", err)
	}
	role := pgcluster.ScramUser
	if out, err := pgbenchCmd(ctx, pgbench, cluster.Port(), "disable", role, "-i", "-q", "-s", "1").CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}

	dir, err := os.MkdirTemp("", "logincost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ca, err := pgcluster.NewCA("logincost CA", time.Hour)
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	if err := ca.WriteServerFiles(filepath.Join(dir, "ca.crt"), certFile, keyFile, []string{"localhost", "127.0.0.1"}, time.Hour); err != nil {
		return err
	}
	authPW := filepath.Join(dir, "auth-password")
	if err := os.WriteFile(authPW, []byte(pgcluster.Superuser.Password), 0o600); err != nil {
		return err
	}
	var servers []*proxy.Server
	defer func() {
		for _, srv := range servers {
			srv.Close()
		}
	}()
	start := func(mutate func(*proxy.Config)) (int, error) {
		cfg := proxy.Config{
			Listen: proxy.ListenConfig{Address: "127.0.0.1:0", TLS: proxy.ListenTLSConfig{CertFile: certFile, KeyFile: keyFile}},
			Upstream: proxy.UpstreamConfig{Address: cluster.Addr(), TLS: proxy.UpstreamTLSConfig{
				Mode: proxy.TLSModeVerifyFull, CAFile: cluster.CAFile(), ServerName: "db.internal"}},
		}
		mutate(&cfg)
		srv, err := proxy.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
		if err != nil {
			return 0, err
		}
		if err := srv.Start(ctx); err != nil {
			return 0, err
		}
		servers = append(servers, srv)
		return srv.Addr().(*net.TCPAddr).Port, nil
	}
	targets := []target{{"direct TLS", cluster.Port()}}
	for _, p := range []struct {
		name   string
		mutate func(*proxy.Config)
	}{
		{"phiproxy auto, no cache", func(c *proxy.Config) { c.Upstream.SCRAMCache.Size = -1 }},
		{"phiproxy auto, cache", func(c *proxy.Config) {}},
		{"phiproxy verifier", func(c *proxy.Config) {
			c.Upstream.SCRAM = proxy.SCRAMVerifier
			c.Upstream.AuthUser = pgcluster.Superuser.Name
			c.Upstream.AuthPasswordFile = authPW
		}},
	} {
		port, err := start(p.mutate)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		targets = append(targets, target{p.name, port})
	}

	args := []string{"-n", "-C", "-S", "-M", "simple", "-c", strconv.Itoa(*clients), "-j", strconv.Itoa(*jobs),
		"-T", strconv.Itoa(int(duration.Seconds()))}
	results := make([][]sample, len(targets))
	for r := 1; r <= *rounds; r++ {
		for i, tg := range targets {
			fmt.Printf("round %d/%d: %s ...\n", r, *rounds, tg.name)
			if *profile != "" && i > 0 {
				f, err := os.Create(fmt.Sprintf("%s.%d.%d", *profile, i, r))
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
			}
			s, err := measure(ctx, pgbench, tg.port, role, args)
			if *profile != "" && i > 0 {
				pprof.StopCPUProfile()
			}
			if err != nil {
				return fmt.Errorf("%s: %w", tg.name, err)
			}
			results[i] = append(results[i], s)
		}
	}

	fmt.Printf("\npgbench %s (TLS, SCRAM-SHA-256), %d round(s) interleaved, on a %d-CPU machine shared with other work\n",
		strings.Join(args, " "), *rounds, runtime.NumCPU())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "target\tconnections/s\tproxy CPU µs per connection (each round)\tmean\t")
	for i, tg := range targets {
		var per []string
		var sumCPU time.Duration
		var sumConns int64
		var sumTPS float64
		for _, s := range results[i] {
			per = append(per, fmt.Sprintf("%.0f", float64(s.cpu.Microseconds())/float64(s.conns)))
			sumCPU += s.cpu
			sumConns += s.conns
			sumTPS += s.tps
		}
		fmt.Fprintf(w, "%s\t%.1f\t%s\t%.0f\t\n", tg.name, sumTPS/float64(len(results[i])), strings.Join(per, " "),
			float64(sumCPU.Microseconds())/float64(sumConns))
	}
	w.Flush()
	fmt.Println("(direct TLS: this process idling while pgbench runs, the floor under the proxy rows)")
	return nil
}

var (
	xactsRE = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	tpsRE   = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
)

// measure runs pgbench against port and charges this process's CPU over
// the run to it.
func measure(ctx context.Context, pgbench string, port int, r pgcluster.Role, args []string) (sample, error) {
	before, err := cpuTime()
	if err != nil {
		return sample{}, err
	}
	out, err := pgbenchCmd(ctx, pgbench, port, "require", r, args...).CombinedOutput()
	after, cerr := cpuTime()
	if err != nil {
		return sample{}, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	if cerr != nil {
		return sample{}, cerr
	}
	m := xactsRE.FindSubmatch(out)
	if m == nil {
		return sample{}, fmt.Errorf("pgbench output without a transaction count:\n%s", out)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	if n == 0 {
		return sample{}, fmt.Errorf("pgbench processed no transactions:\n%s", out)
	}
	var tps float64
	if m := tpsRE.FindSubmatch(out); m != nil {
		tps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	return sample{conns: n, cpu: after - before, tps: tps}, nil
}

func pgbenchCmd(ctx context.Context, pgbench string, port int, sslmode string, r pgcluster.Role, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, pgbench, append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", r.Name}, append(args, pgcluster.AppDatabase)...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+r.Password, "PGSSLMODE="+sslmode)
	return cmd
}

// cpuTime is utime+stime of this process (all threads, not children) from
// /proc/self/stat, proc(5), in clock ticks of 10 ms (USER_HZ = 100).
func cpuTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/self/stat: unexpected format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/self/stat: unexpected format")
	}
	utime, err1 := strconv.ParseInt(f[14-3], 10, 64)
	stime, err2 := strconv.ParseInt(f[15-3], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/self/stat: utime %q stime %q", f[14-3], f[15-3])
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
