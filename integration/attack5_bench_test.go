package integration

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// TestAttack5GuardCost measures what the catalog guard costs statements
// that name no policy table: the same statements on a table that is no
// policy table, through one proxy, in a governed database that holds a
// policy table (every batch guarded, and every statement of a pipeline)
// and in a database the policy does not govern (relayed untouched). It
// logs ns per statement; run it on its own:
//
//	PHIPROXY_MEASURE=1 go test ./integration -run TestAttack5GuardCost -v
func TestAttack5GuardCost(t *testing.T) {
	if os.Getenv("PHIPROXY_MEASURE") == "" {
		t.Skip("a measurement: set PHIPROXY_MEASURE=1")
	}
	const gov, plain = "attack5_cost_gov", "attack5_cost_plain"
	ctx := context.Background()
	env := startCatalogEnv(t, gov, sprintf(attackAliasPolicy, gov), attackAliasSchema)
	su := connect(t, cluster.SuperuserDSN("postgres"))
	for _, sql := range []string{
		fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", plain),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", plain, pgcluster.ScramUser.Name),
	} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	for _, db := range []string{gov, plain} {
		if _, err := connect(t, directDSN(pgcluster.ScramUser, db)).Exec(ctx,
			"CREATE TABLE other (id int PRIMARY KEY, note text); INSERT INTO other SELECT g, 'n' || g FROM generate_series(1, 100) g"); err != nil {
			t.Fatal(err)
		}
	}
	type work struct {
		name string
		mode pgx.QueryExecMode
		n    int  // statements per batch
		text bool // the batch as one simple Query (a catalog check in front of each statement after the first)
	}
	works := []work{
		{"simple", pgx.QueryExecModeSimpleProtocol, 1, false},
		{"cached", pgx.QueryExecModeCacheStatement, 1, false},
		{"batch10", pgx.QueryExecModeCacheStatement, 10, false},
		{"text10", pgx.QueryExecModeSimpleProtocol, 10, true},
	}
	conns := map[string]*pgx.Conn{}
	for _, db := range []string{gov, plain} {
		for _, w := range works {
			conns[db+"/"+w.name] = connect(t, env.p.dsn(pgcluster.ScramUser, db), func(c *pgx.ConnConfig) { c.DefaultQueryExecMode = w.mode })
		}
	}
	// The machine is shared: time is measured as CPU, the proxy's and
	// client's (this process) plus the server process's, over a fixed
	// number of statements, in rounds that interleave the two databases;
	// the median of each is taken.
	const statements, rounds = 6000, 5
	run := func(conn *pgx.Conn, w work) (cpu, wall float64) {
		pid := backendPID(t, conn)
		var note string
		s0, b0, t0 := selfCPU(t), procCPU(t, pid), time.Now()
		for i := 0; i < statements/w.n; i++ {
			if w.n == 1 {
				if err := conn.QueryRow(ctx, "SELECT note FROM other WHERE id = $1", i%100+1).Scan(&note); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if w.text {
				var text strings.Builder
				for j := 0; j < w.n; j++ {
					fmt.Fprintf(&text, "SELECT note FROM other WHERE id = %d;", (i+j)%100+1)
				}
				if _, err := conn.Exec(ctx, text.String()); err != nil {
					t.Fatal(err)
				}
				continue
			}
			batch := &pgx.Batch{}
			for j := 0; j < w.n; j++ {
				batch.Queue("SELECT note FROM other WHERE id = $1", (i+j)%100+1)
			}
			if err := conn.SendBatch(ctx, batch).Close(); err != nil {
				t.Fatal(err)
			}
		}
		cpu = (selfCPU(t) - s0 + procCPU(t, pid) - b0).Seconds() * 1e6 / statements
		return cpu, time.Since(t0).Seconds() * 1e6 / statements
	}
	for _, w := range works {
		var cpu, wall [2][]float64
		for r := 0; r < rounds; r++ {
			for k, db := range []string{gov, plain} {
				c, wl := run(conns[db+"/"+w.name], w)
				cpu[k], wall[k] = append(cpu[k], c), append(wall[k], wl)
			}
		}
		g, p := median(cpu[0]), median(cpu[1])
		t.Logf("%-8s CPU per statement: governed, policy table %6.1f µs; not governed %6.1f µs; ratio %.2f (wall %.0f / %.0f µs)",
			w.name, g, p, p/g, median(wall[0]), median(wall[1]))
	}
}

// selfCPU is the CPU time this process used so far.
func selfCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time process pid used so far (/proc, in clock ticks
// of 10 ms).
func procCPU(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// median returns the median of xs (which it sorts).
func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}
