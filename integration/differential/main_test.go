package differential

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/novamind/phiproxy/internal/leakcheck"
)

// The flags of a campaign: make differential SEED=… N=… passes them.
var (
	flagSeed    = flag.Uint64("seed", 1, "seed of the statement generator")
	flagN       = flag.Int("statements", 8000, "statements generated for the proxy run (after the initial data)")
	flagSelfN   = flag.Int("self-statements", 3000, "statements generated for the self-check")
	flagDisable = flag.String("disable", "", "comma-separated productions to switch off (see grammar())")
	flagReport  = flag.String("report", "", "also write the proxy run's report to this file")
)

// ciRun reports whether this is the run of make test: the default seed,
// size and grammar, on which the known-different list is checked strictly.
func ciRun() bool {
	def := func(name string) string { return flag.Lookup(name).DefValue }
	return fmt.Sprint(*flagSeed) == def("seed") && fmt.Sprint(*flagN) == def("statements") && *flagDisable == ""
}

// theEnv is built by TestMain.
var theEnv *env

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := newEnv(ctx)
	if err != nil {
		// Never skip: this test is the proof that the proxy is exact.
		fmt.Fprintf(os.Stderr, "differential: cannot start PostgreSQL: %v\n", err)
		return 1
	}
	theEnv = e
	defer e.close()
	return m.Run()
}

// disabled returns the productions switched off by -disable.
func disabled(t *testing.T) map[string]bool {
	out := map[string]bool{}
	names := map[string]bool{}
	for _, p := range grammar() {
		names[p.name] = true
	}
	for _, n := range strings.Split(*flagDisable, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if !names[n] {
			t.Fatalf("-disable: no production %q", n)
		}
		out[n] = true
	}
	var stmts, atoms int
	for _, p := range grammar() {
		switch {
		case out[p.name] || p.proto:
		case p.atom != nil:
			atoms++
		default:
			stmts++
		}
	}
	if stmts == 0 || atoms == 0 {
		t.Fatalf("-disable leaves %d statement and %d atom productions: keep at least one of each", stmts, atoms)
	}
	return out
}

// campaign runs the initial data, the value probes and n generated
// statements through r.
func campaign(ctx context.Context, t *testing.T, r *runner, n int) {
	t.Helper()
	g := newGenerator(*flagSeed, theEnv.schema, disabled(t))
	load := g.loadStatements(defaultLoad)
	start := time.Now()
	for _, it := range load {
		v, err := r.run(ctx, it.st)
		if err != nil {
			t.Fatalf("load statement %d: %v", it.st.seq, err)
		}
		if v.outcome == matched || it.fallback == nil {
			continue
		}
		for _, st := range it.fallback() {
			if _, err := r.run(ctx, st); err != nil {
				t.Fatalf("load statement %d: %v", st.seq, err)
			}
		}
	}
	for _, st := range g.probeStatements() {
		if _, err := r.run(ctx, st); err != nil {
			t.Fatalf("probe statement (%s): %v", st, err)
		}
	}
	for range n {
		st := g.next()
		if _, err := r.run(ctx, st); err != nil {
			t.Fatalf("statement %d (%s): %v", st.seq, st, err)
		}
	}
	t.Logf("%d statements (%d generated, the rest initial data and value probes) in %v; %s",
		r.stats.total, n, time.Since(start).Round(time.Millisecond), rowCounts(ctx, r.b))
}

// rowCounts reports how many rows each table of sd holds: a run whose
// tables ran empty would prove little.
func rowCounts(ctx context.Context, sd *side) string {
	var parts []string
	for _, t := range theEnv.schema.tables {
		res := sd.simple(ctx, "SELECT count(*) FROM "+t.name)
		n := res.code
		if !res.failed() && len(res.rows) == 1 {
			n = res.rows[0][0]
		}
		parts = append(parts, t.name+" "+n)
	}
	return "rows at the end: " + strings.Join(parts, ", ")
}

// TestSelfCheck runs the tester on two plaintext copies with no proxy: it
// must find no difference and no refusal, or the tester itself is wrong.
func TestSelfCheck(t *testing.T) {
	ctx := context.Background()
	c := theEnv.plainCluster
	for _, db := range []string{"self_a", "self_b"} {
		if err := theEnv.createDatabase(ctx, c, db, false); err != nil {
			t.Fatal(err)
		}
	}
	a, err := directSide(ctx, "self_a", c, "self_a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := directSide(ctx, "self_b", c, "self_b")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(a, b, nil)
	campaign(ctx, t, r, *flagSelfN)
	var rep bytes.Buffer
	r.stats.writeReport(&rep, fmt.Sprintf("self-check (plaintext vs plaintext), seed %d", *flagSeed))
	if r.stats.different > 0 || r.stats.refused > 0 {
		t.Fatalf("the self-check found %d differences and %d refusals: the tester is wrong\n%s",
			r.stats.different, r.stats.refused, rep.String())
	}
	t.Logf("self-check: %d statements, 0 differences\n%s", r.stats.total, rep.String())
}

// TestProxy runs the tester through phiproxy on enc against plain, and
// then the leak check on everything the enc cluster wrote.
func TestProxy(t *testing.T) {
	ctx := context.Background()
	e := theEnv
	if err := e.createDatabase(ctx, e.encCluster, "enc", true); err != nil {
		t.Fatal(err)
	}
	if err := e.createDatabase(ctx, e.plainCluster, "plain", false); err != nil {
		t.Fatal(err)
	}
	kr, err := e.newKeyring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	port, stop, err := startProxy(ctx, e.encCluster, e.proxyCert, e.proxyKey, e.pol, kr, logs)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	a, err := e.proxySide(ctx, port, "enc")
	if err != nil {
		t.Fatal(err)
	}
	b, err := directSide(ctx, "plain", e.plainCluster, "plain")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(a, b, knownDifferent)
	campaign(ctx, t, r, *flagN)

	var rep bytes.Buffer
	r.stats.writeReport(&rep, fmt.Sprintf("phiproxy vs PostgreSQL, seed %d", *flagSeed))
	writeKnownReport(&rep, r.stats)
	t.Log("\n" + rep.String())
	if *flagReport != "" {
		if err := os.WriteFile(*flagReport, rep.Bytes(), 0o644); err != nil {
			t.Error(err)
		}
	}
	problems, notes := checkKnown(r.stats, ciRun())
	for _, p := range problems {
		t.Error(p)
	}
	for _, n := range notes {
		t.Log("note: " + n)
	}

	a.conn.Close(ctx)
	stop()
	leakCheck(ctx, t, r, logs.Bytes())
}

// leakCheck searches everything the enc cluster wrote, and the proxy's
// log, for the plaintext PHI values sent through the proxy. A value found
// is excused only when every statement that sent it carries a tag known
// to leak; each such tag must still leak.
func leakCheck(ctx context.Context, t *testing.T, r *runner, proxyLog []byte) {
	t.Helper()
	vals := make([]string, 0, len(r.sent))
	for v := range r.sent {
		vals = append(vals, v)
	}
	if len(vals) < 50 {
		t.Errorf("leak check: only %d distinct PHI values were recorded; the check would prove little", len(vals))
	}
	f := leakcheck.New(vals)
	if err := checkpoint(ctx, theEnv.encCluster); err != nil {
		t.Fatal(err)
	}
	if err := f.SearchCluster(theEnv.encCluster); err != nil {
		t.Fatal(err)
	}
	f.Search("proxy log", proxyLog)
	leaked := map[string]int{} // known-leaking tag -> values found
	var unexcused, unexcusedVals []string
	for _, v := range f.FoundValues() {
		if len(r.sent[v]) == 0 {
			unexcused = append(unexcused, fmt.Sprintf("%q in %s", v, strings.Join(f.Places(v), ", ")))
			unexcusedVals = append(unexcusedVals, v)
			continue
		}
		for tag := range r.sent[v] {
			leaked[tag]++
		}
	}
	if len(unexcused) > 0 {
		t.Errorf("leak check: %d plaintext PHI values found:\n  %s\nserver log lines:\n%s", len(unexcused),
			strings.Join(unexcused, "\n  "), logLines(unexcusedVals))
	}
	for tag := range r.leaky {
		if leaked[tag] == 0 {
			t.Errorf("leak check: %q is marked as leaking in knownDifferent but leaked nothing: clear its leaks mark", tag)
		} else {
			t.Logf("leak check: KNOWN LEAK: %d values sent by %q found in plaintext", leaked[tag], tag)
		}
	}
	t.Logf("leak check: %d PHI values searched in the enc cluster's log and files and the proxy log (%d bytes); %d found outside the known leaks",
		len(vals), len(proxyLog), len(unexcused))
}

// logLines returns up to 10 lines of the enc cluster's log that hold one
// of vals, to show which statements leaked them.
func logLines(vals []string) string {
	log, err := theEnv.encCluster.LogContents()
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(log), "\n") {
		for _, v := range vals {
			if len(out) < 10 && strings.Contains(line, v) {
				out = append(out, "  "+line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what was written.
func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
