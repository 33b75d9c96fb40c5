package main

// The idle-sessions workload (issue 13): what an open, idle TLS session
// costs a middlebox in memory. N sessions, each of which ran one SELECT 1
// (simple protocol, as psycopg2 sends it), stay open through phiproxy
// (transparent, TLS both legs) and then through PgBouncer (TLS both legs,
// session mode, so one server connection each); the growth of each
// process's VmRSS over N is the figure.
//
// The sessions are held by a child process, this binary re-executed with
// idleClientCmd as its first argument: phiproxy runs in this process, and
// its RSS must not include the clients' connections, TLS state and
// buffers. Each measurement starts a fresh middlebox, so neither reuses
// memory (or, for PgBouncer, pooled server connections) from an earlier
// run.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

const (
	// idleClientCmd as os.Args[1] makes this binary the client holder.
	idleClientCmd = "idle-client"
	// idleDSNEnv passes the client holder its connection string (it holds
	// the password, so not on the command line).
	idleDSNEnv = "BENCH_IDLE_DSN"
)

// idleSample is one measurement of n idle sessions through one middlebox.
type idleSample struct {
	n          int
	open       time.Duration // to open all sessions and run SELECT 1 on each
	rss        int64         // VmRSS growth, bytes
	rssGC      int64         // after a forced GC and FreeOSMemory (in-process only)
	heap       int64         // Go HeapInuse growth after that GC (in-process only)
	stacks     int64         // Go StackInuse growth (in-process only)
	goroutines int           // the process's goroutines with the sessions open (in-process only)
	goDelta    int           // and their growth
	inProcess  bool
}

// benchIdle measures n idle sessions through a fresh phiproxy and a fresh
// PgBouncer, rounds times, in front of a PostgreSQL of its own, and returns
// the function printing the table.
func benchIdle(ctx context.Context, n, rounds int) (func() error, error) {
	fmt.Printf("idle workload: %d idle TLS sessions through phiproxy and through PgBouncer ...\n", n)
	// A cluster of its own, so that the others keep the default
	// max_connections (pgcluster writes 100; a later line wins).
	cluster, err := startCluster(ctx, fmt.Sprintf("max_connections = %d", n+idleHeadroom))
	if err != nil {
		return nil, err
	}
	defer cluster.Stop()
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return nil, err
	}
	defer su.Close(ctx)
	role := pgcluster.ScramUser
	names := []string{"phiproxy", "pgbouncer TLS"}
	if _, err := findPgBouncer(); err != nil {
		fmt.Printf("PgBouncer row skipped: %v\n", err)
		names = names[:1]
	}
	samples := map[string][]idleSample{}
	for r := 0; r < rounds; r++ {
		for _, name := range names {
			var s idleSample
			var err error
			if name == "phiproxy" {
				s, err = idlePhiproxy(ctx, cluster, su, role, n)
			} else {
				s, err = idlePgBouncer(ctx, cluster, su, role, n)
			}
			if err != nil {
				return nil, fmt.Errorf("idle sessions through %s: %w", name, err)
			}
			fmt.Printf("  idle %-14s %d sessions opened in %v, RSS +%.1f KiB per session\n", name, s.n, s.open.Round(time.Millisecond), kib(s.rss, s.n))
			samples[name] = append(samples[name], s)
		}
	}
	return func() error {
		fmt.Printf("\nidle TLS sessions: %d per middlebox, each ran SELECT 1 once and stays open (held by a child process), %d round(s); per session, mean over rounds\n\n", n, rounds)
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
		fmt.Fprintln(tw, "middlebox\tsessions\topen s\tRSS KiB/session\tRSS after GC\tGo heap KiB\tGo stacks KiB\tgoroutines/session\tgoroutines\t")
		for _, name := range names {
			ss := samples[name]
			var m idleSample
			for _, s := range ss {
				m.n = s.n
				m.inProcess = s.inProcess
				m.open += s.open / time.Duration(len(ss))
				m.rss += s.rss / int64(len(ss))
				m.rssGC += s.rssGC / int64(len(ss))
				m.heap += s.heap / int64(len(ss))
				m.stacks += s.stacks / int64(len(ss))
				m.goroutines += s.goroutines / len(ss)
				m.goDelta += s.goDelta / len(ss)
			}
			if !m.inProcess {
				fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t-\t-\t-\t-\t-\t\n", name, m.n, m.open.Seconds(), kib(m.rss, m.n))
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%d\t\n", name, m.n, m.open.Seconds(), kib(m.rss, m.n),
				kib(m.rssGC, m.n), kib(m.heap, m.n), kib(m.stacks, m.n), float64(m.goDelta)/float64(m.n), m.goroutines)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Println("RSS: VmRSS growth of the middlebox's process (/proc/<pid>/status) from before the sessions opened to")
		fmt.Println("2 s after, as the OS sees it; for phiproxy (in this process) also after runtime/debug.FreeOSMemory,")
		fmt.Println("with the Go heap and stacks in use then. goroutines: the whole process's with the sessions open.")
		return nil
	}, nil
}

func kib(b int64, n int) float64 { return float64(b) / 1024 / float64(n) }

// idlePhiproxy measures n idle sessions through a fresh transparent proxy
// in this process.
func idlePhiproxy(ctx context.Context, cluster *pgcluster.Cluster, su *pgx.Conn, role pgcluster.Role, n int) (idleSample, error) {
	srv, err := startProxy(ctx, cluster, prometheus.NewRegistry())
	if err != nil {
		return idleSample{}, err
	}
	defer srv.Close()
	s, err := measureIdle(ctx, su, role, os.Getpid(), pgcluster.DSN("127.0.0.1", proxyPort(srv), role, pgcluster.AppDatabase, "require", ""), n)
	if err == nil {
		// The sessions end before the proxy does, not by its shutdown.
		err = waitBackends(ctx, su, role, 0, 0)
	}
	return s, err
}

// idlePgBouncer measures n idle sessions through a fresh PgBouncer.
func idlePgBouncer(ctx context.Context, cluster *pgcluster.Cluster, su *pgx.Conn, role pgcluster.Role, n int) (idleSample, error) {
	b, err := startPgBouncer(ctx, cluster, role, n+idleHeadroom)
	if err != nil {
		return idleSample{}, err
	}
	s, err := measureIdle(ctx, su, role, b.pid(), pgcluster.DSN("127.0.0.1", b.port, role, pgcluster.AppDatabase, "require", ""), n)
	b.stop() // closes its pooled server connections
	if err == nil {
		err = waitBackends(ctx, su, role, 0, 0)
	}
	return s, err
}

// idleHeadroom is how many connections beyond the idle sessions the
// cluster and PgBouncer allow (checks, the superuser).
const idleHeadroom = 50

// measureIdle opens n sessions to dsn from a child process and measures
// process pid before and with them open.
func measureIdle(ctx context.Context, su *pgx.Conn, role pgcluster.Role, pid int, dsn string, n int) (idleSample, error) {
	s := idleSample{n: n, inProcess: pid == os.Getpid()}
	// One session first, so that what the first one initializes (TLS and
	// SCRAM state, PgBouncer's pass-through keys) is in the baseline; and
	// it checks that both legs use TLS.
	legs, err := describeLegs(ctx, dsn)
	if err != nil {
		return s, err
	}
	// PgBouncer keeps that session's server connection in its pool (the
	// first of the n sessions reuses it); phiproxy closes its own.
	if err := waitBackends(ctx, su, role, 0, 1); err != nil {
		return s, err
	}
	var ms0 runtime.MemStats
	if s.inProcess {
		debug.FreeOSMemory()
		runtime.ReadMemStats(&ms0)
	}
	time.Sleep(500 * time.Millisecond)
	rss0, err := rssBytes(pid)
	if err != nil {
		return s, err
	}
	g0 := runtime.NumGoroutine()

	exe, err := os.Executable()
	if err != nil {
		return s, err
	}
	cmd := exec.CommandContext(ctx, exe, idleClientCmd, "-n", strconv.Itoa(n))
	cmd.Env = append(os.Environ(), idleDSNEnv+"="+dsn)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return s, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return s, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(line) != "ready" {
		// The holder failed and exits: its reason is on stderr.
		waited = true
		err := cmd.Wait()
		return s, fmt.Errorf("client holder: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	s.open = time.Since(start)
	if err := waitBackends(ctx, su, role, n, n); err != nil {
		return s, err
	}
	time.Sleep(2 * time.Second) // let the last handshakes' work settle
	rss1, err := rssBytes(pid)
	if err != nil {
		return s, err
	}
	s.rss = rss1 - rss0
	if s.inProcess {
		s.goroutines = runtime.NumGoroutine()
		s.goDelta = s.goroutines - g0
		debug.FreeOSMemory()
		var ms1 runtime.MemStats
		runtime.ReadMemStats(&ms1)
		s.heap = int64(ms1.HeapInuse) - int64(ms0.HeapInuse)
		s.stacks = int64(ms1.StackInuse) - int64(ms0.StackInuse)
		rss2, err := rssBytes(pid)
		if err != nil {
			return s, err
		}
		s.rssGC = rss2 - rss0
	}
	fmt.Printf("  check: %s\n", legs)
	stdin.Close() // the holder closes its sessions and exits
	waited = true
	if err := cmd.Wait(); err != nil {
		return s, fmt.Errorf("client holder: %v %s", err, strings.TrimSpace(stderr.String()))
	}
	return s, nil
}

// waitBackends waits, for up to a minute, until PostgreSQL has between
// lo and hi client backends of role, all over TLS.
func waitBackends(ctx context.Context, su *pgx.Conn, role pgcluster.Role, lo, hi int) error {
	const q = `SELECT count(*), count(*) FILTER (WHERE s.ssl)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.usename = $1 AND a.backend_type = 'client backend'`
	var all, tls int
	for deadline := time.Now().Add(time.Minute); ; {
		if err := su.QueryRow(ctx, q, role.Name).Scan(&all, &tls); err != nil {
			return err
		}
		if all == tls && all >= lo && all <= hi {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("PostgreSQL has %d backends of %s (%d over TLS), want %d to %d over TLS", all, role.Name, tls, lo, hi)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idleClient is the client holder (the child): it opens -n sessions to the
// DSN in $BENCH_IDLE_DSN, runs SELECT 1 on each, writes "ready" to
// stdout, and once stdin is closed closes them all.
func idleClient(args []string) error {
	fs := flag.NewFlagSet(idleClientCmd, flag.ContinueOnError)
	n := fs.Int("n", 1000, "sessions to open")
	parallel := fs.Int("parallel", 8, "sessions opened at a time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(os.Getenv(idleDSNEnv))
	if err != nil {
		return err
	}
	ctx := context.Background()
	conns := make([]*pgx.Conn, *n)
	errs := make([]error, *n)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			conns[i], errs[i] = openIdle(ctx, cfg)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.Close(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// openIdle opens one session and runs SELECT 1 on it in a simple Query.
func openIdle(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	c, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, err
	}
	res, err := c.PgConn().Exec(ctx, "SELECT 1").ReadAll()
	if err == nil && (len(res) != 1 || len(res[0].Rows) != 1 || string(res[0].Rows[0][0]) != "1") {
		err = errors.New("SELECT 1: unexpected result")
	}
	if err != nil {
		c.Close(ctx)
		return nil, err
	}
	return c, nil
}
