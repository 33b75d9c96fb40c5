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
