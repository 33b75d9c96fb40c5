package main

// The pgbench matrix: every workload against every target, interleaved,
// and its table.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// target is where pgbench connects.
type target struct {
	name    string
	host    string
	port    int
	sslmode string
	db      string
	// cpuPID is the process whose utime+stime a run is charged to: the
	// middlebox's, or for PostgreSQL directly this process's own (the
	// floor under the in-process phiproxy's figure, see cpu.go); 0 for
	// none.
	cpuPID int
	// middlebox: between pgbench and PostgreSQL (PgBouncer, phiproxy).
	middlebox bool
	// connectOnly: run only in workloads with a connection per
	// transaction (a proxy whose only difference is at startup).
	connectOnly bool
}

type workload struct {
	name string
	args []string
	// connect: pgbench -C, a new connection per transaction; run against
	// the TLS targets only (what a middlebox is compared with).
	connect bool
}

// runs reports whether w runs against t.
func (w workload) runs(t target) bool {
	if w.connect {
		return t.sslmode != "disable"
	}
	return !t.connectOnly
}

type result struct {
	tps, latencyMS float64
	connMS         float64       // pgbench -C: average connection time
	xacts          int64         // transactions pgbench processed
	cpu            time.Duration // of the target's cpuPID over the run; -1 when not measured
	err            error
}

// cpuPerXact is microseconds of CPU per transaction, or -1.
func (r result) cpuPerXact() float64 {
	if r.cpu < 0 || r.xacts == 0 {
		return -1
	}
	return float64(r.cpu.Microseconds()) / float64(r.xacts)
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
	total := 0
	for _, w := range m.workloads {
		for _, tg := range m.targets {
			if w.runs(tg) {
				total += m.rounds
			}
		}
	}
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
				if !w.runs(tg) {
					continue
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				var res result
				wrap(wi, ti, r, func() {
					res = runCharged(ctx, m.pgbench, tg, m.role, append(append([]string{}, m.common...), w.args...))
				})
				status := fmt.Sprintf("%.0f tps, %.3f ms", res.tps, res.latencyMS)
				if c := res.cpuPerXact(); c >= 0 {
					status += fmt.Sprintf(", %.1f µs CPU/tx", c)
				}
				if res.err != nil {
					status = res.err.Error()
				}
				fmt.Printf("  %-30s %-28s %s\n", w.name, tg.name, status)
				m.results[[2]int{wi, ti}] = append(m.results[[2]int{wi, ti}], res)
			}
		}
	}
	return nil
}

// print writes the table: per workload and target the mean tps and
// latency, the throughput relative to the first two targets (direct
// without and with TLS), and CPU per transaction; then, with more than one
// middlebox, the middleboxes side by side.
func (m *matrix) print(title string) error {
	fmt.Printf("\n%s\n\n", title)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "workload\ttarget\ttps\tlatency ms\tvs direct\tvs direct TLS\tCPU µs/tx\t")
	var connect bool
	for wi, w := range m.workloads {
		connect = connect || w.connect
		for ti, tg := range m.targets {
			if !w.runs(tg) {
				continue
			}
			r := mean(m.results[[2]int{wi, ti}])
			if r.err != nil {
				fmt.Fprintf(tw, "%s\t%s\tfailed\t-\t-\t-\t-\t\n", w.name, tg.name)
				continue
			}
			cpu := "-"
			if c := r.cpuPerXact(); c >= 0 && tg.middlebox {
				cpu = fmt.Sprintf("%.1f", c)
			} else if c >= 0 {
				cpu = fmt.Sprintf("[%.1f]", c)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%s\t%s\t%s\t\n", w.name, tg.name, r.tps, r.latencyMS, m.ratio(wi, ti, 0), m.ratio(wi, ti, 1), cpu)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Println("CPU µs/tx: utime+stime of the middlebox's process over the run (/proc/<pid>/stat; phiproxy runs in this")
	fmt.Println("process) divided by the transactions pgbench processed; [in brackets], for PostgreSQL directly, this")
	fmt.Println("process's own while it only waited for pgbench: the floor included in phiproxy's figure.")
	if connect {
		fmt.Println("-C rows: a transaction is a connection (TLS handshake, SCRAM, startup), so CPU µs/tx is per connection.")
		for wi, w := range m.workloads {
			if !w.connect {
				continue
			}
			for ti, tg := range m.targets {
				if r := mean(m.results[[2]int{wi, ti}]); w.runs(tg) && r.err == nil {
					fmt.Printf("  %s, %s: average connection time %.3f ms\n", w.name, tg.name, r.connMS)
				}
			}
		}
	}
	return m.printSideBySide()
}

// ratio is target ti's throughput over target ref's in workload wi, or "-".
func (m *matrix) ratio(wi, ti, ref int) string {
	r, d := mean(m.results[[2]int{wi, ti}]), mean(m.results[[2]int{wi, ref}])
	if r.err != nil || d.err != nil || d.tps == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.tps/d.tps)
}

// printSideBySide writes, when there is more than one middlebox, each
// middlebox's throughput relative to direct TLS and its CPU per
// transaction, one row per workload (issue 8's table).
func (m *matrix) printSideBySide() error {
	var boxes []int
	for ti, tg := range m.targets {
		if tg.middlebox {
			boxes = append(boxes, ti)
		}
	}
	if len(boxes) < 2 {
		return nil
	}
	fmt.Println("\nmiddleboxes side by side (same run): tps relative to direct TLS, and CPU µs per transaction")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	head := "workload\t"
	for _, ti := range boxes {
		head += m.targets[ti].name + " / direct TLS\t"
	}
	for _, ti := range boxes {
		head += "CPU µs/tx " + m.targets[ti].name + "\t"
	}
	fmt.Fprintln(tw, head)
	for wi, w := range m.workloads {
		row := w.name + "\t"
		for _, ti := range boxes {
			if !w.runs(m.targets[ti]) {
				row += "\t"
				continue
			}
			row += m.ratio(wi, ti, 1) + "\t"
		}
		for _, ti := range boxes {
			r := mean(m.results[[2]int{wi, ti}])
			if c := r.cpuPerXact(); w.runs(m.targets[ti]) && r.err == nil && c >= 0 {
				row += fmt.Sprintf("%.1f", c)
			}
			row += "\t"
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// mean is the mean throughput and latencies of rs, and their total
// transactions and CPU.
func mean(rs []result) result {
	var m result
	for _, r := range rs {
		if r.err != nil {
			return r
		}
		m.tps += r.tps / float64(len(rs))
		m.latencyMS += r.latencyMS / float64(len(rs))
		m.connMS += r.connMS / float64(len(rs))
		m.xacts += r.xacts
		if r.cpu < 0 || m.cpu < 0 {
			m.cpu = -1
		} else {
			m.cpu += r.cpu
		}
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
	xactsRE   = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	connRE    = regexp.MustCompile(`(?m)^average connection time = ([0-9.]+) ms`)
)

// runCharged runs pgbench against tg and charges the CPU that tg.cpuPID
// used meanwhile to the result.
func runCharged(ctx context.Context, pgbench string, tg target, r pgcluster.Role, args []string) result {
	if tg.cpuPID == 0 {
		res := runPgbench(ctx, pgbench, tg, r, args)
		res.cpu = -1
		return res
	}
	before, err := cpuTime(tg.cpuPID)
	if err != nil {
		return result{err: err}
	}
	res := runPgbench(ctx, pgbench, tg, r, args)
	after, err := cpuTime(tg.cpuPID)
	if err != nil {
		return result{err: err}
	}
	res.cpu = after - before
	return res
}

func runPgbench(ctx context.Context, pgbench string, tg target, r pgcluster.Role, args []string) result {
	out, err := pgbenchCmd(ctx, pgbench, tg, r, args...).CombinedOutput()
	if err != nil {
		return result{err: fmt.Errorf("pgbench: %v: %s", err, firstError(out))}
	}
	tps, lat, xacts := tpsRE.FindSubmatch(out), latencyRE.FindSubmatch(out), xactsRE.FindSubmatch(out)
	if tps == nil || lat == nil || xacts == nil {
		return result{err: fmt.Errorf("pgbench output not understood: %s", lastLine(out))}
	}
	var res result
	res.tps, _ = strconv.ParseFloat(string(tps[1]), 64)
	res.latencyMS, _ = strconv.ParseFloat(string(lat[1]), 64)
	res.xacts, _ = strconv.ParseInt(string(xacts[1]), 10, 64)
	if conn := connRE.FindSubmatch(out); conn != nil {
		res.connMS, _ = strconv.ParseFloat(string(conn[1]), 64)
	}
	return res
}

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
