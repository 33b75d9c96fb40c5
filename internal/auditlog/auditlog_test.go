package auditlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testConfig(file string) Config {
	c := Config{File: file, FlushInterval: time.Millisecond}
	c.SetDefaults()
	return c
}

var testSession = &Session{ConnID: 7, User: "alice", Database: "phi", ClientAddr: "127.0.0.1:5000", ClientCert: "CN=app1,O=Acme"}

func testRecord(i int) *Record {
	return &Record{
		Time: time.Date(2025, 1, 2, 3, 4, 5, i, time.UTC), Type: TypeStatement, Session: testSession,
		Statement: "select", Fingerprint: "0a1b2c3d4e5f6071", Tables: []string{"public.patients"},
		Columns: []Column{{Name: "public.patients.email", Op: OpSearch}, {Name: "public.patients.ssn", Op: OpRead, Access: AccessMasked}},
		Rows:    int64(i), Outcome: OutcomeOK, SQLState: "00000",
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAppendString: the encoder escapes strings exactly as encoding/json
// does without HTML escaping, so any JSON reader reads back what was
// written, and the encoding is canonical.
func TestAppendString(t *testing.T) {
	cases := []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r\x00\x1f\x7f", "<&>", "é漢字🙂", "\u2028\u2029", "bad\xffutf8\xc3"}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		if got := string(appendString(nil, s)); got != strings.TrimSuffix(want.String(), "\n") {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want.String())
		}
	}
}

// TestRecordFormat pins the canonical encoding of a record.
func TestRecordFormat(t *testing.T) {
	r := testRecord(3)
	r.Index, r.Count = 1, 2
	got := string(appendRecord(nil, 42, r.Time, r.Type, r, nil, strings.Repeat("ab", 32)))
	want := `{"v":1,"seq":42,"time":"2025-01-02T03:04:05.000000003Z","type":"statement","conn_id":7,"user":"alice","database":"phi",` +
		`"client_addr":"127.0.0.1:5000","client_cert":"CN=app1,O=Acme","statement":"select","fingerprint":"0a1b2c3d4e5f6071",` +
		`"stmt_index":1,"stmt_count":2,"tables":["public.patients"],"columns":[{"column":"public.patients.email","op":"search"},` +
		`{"column":"public.patients.ssn","op":"read","access":"masked"}],"rows":3,"outcome":"ok","sqlstate":"00000",` +
		`"prev":"` + strings.Repeat("ab", 32) + `"}`
	if got != want {
		t.Fatalf("record:\n got %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("not JSON")
	}
}

// TestChainAndVerify: records written, the file reopened in place and
// after a rotation, and the proxy restarted on the same file: every file
// verifies, alone and in sequence.
func TestChainAndVerify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	reg := prometheus.NewRegistry()
	l, err := Open(testConfig(path), slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		l.Write(testRecord(i))
	}
	if err := l.Reopen(); err != nil { // in place: a second segment in the same file
		t.Fatal(err)
	}
	l.Write(testRecord(5))
	rotated := filepath.Join(dir, "audit.log.1")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	l.Write(testRecord(6)) // still to the rotated file, until Reopen
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	for i := 7; i < 10; i++ {
		l.Write(testRecord(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(l.m.records); got != 13 { // 10 records + 3 start records
		t.Errorf("records metric = %v, want 13", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}

	// The proxy restarts and appends to the same file.
	l2, err := Open(testConfig(path), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	l2.Write(testRecord(10))
	l2.Close()

	sums, err := VerifyFiles(rotated, path)
	if err != nil {
		t.Fatalf("VerifyFiles: %v", err)
	}
	if sums[0].Records != 9 || sums[0].Segments != 2 || sums[0].Continues != "" {
		t.Errorf("rotated file: %+v", sums[0])
	}
	if sums[1].Records != 6 || sums[1].Segments != 2 || sums[1].Continues != sums[0].Head.Hash {
		t.Errorf("current file: %+v", sums[1])
	}
	// Alone, the current file verifies too (what it continues is unchecked);
	// after another file, it does not.
	if _, err := VerifyFiles(path); err != nil {
		t.Errorf("current file alone: %v", err)
	}
	other := filepath.Join(dir, "other.log")
	lo, _ := Open(testConfig(other), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	lo.Close()
	if _, err := VerifyFiles(other, path); err == nil || !strings.Contains(err.Error(), "does not continue the previous file") {
		t.Errorf("unrelated previous file: err = %v", err)
	}
	for _, line := range append(readLines(t, rotated), readLines(t, path)...) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line is not JSON: %s", line)
		}
	}
}

// TestVerifyDetects: a deleted, an edited, a moved, a cut line, and a
// missing beginning, each reported at its line.
func TestVerifyDetects(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := Open(testConfig(path), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		l.Write(testRecord(i))
	}
	l.Close()
	orig := readLines(t, path) // start + 6 records
	tests := []struct {
		name   string
		mutate func([]string) []string
		line   int
		msg    string
	}{
		{"deleted line", func(ls []string) []string { return append(ls[:3:3], ls[4:]...) }, 4, "records are missing before this line (seq goes from 3 to 5)"},
		{"edited line", func(ls []string) []string {
			ls[3] = strings.Replace(ls[3], `"rows":2`, `"rows":0`, 1)
			return ls
		}, 5, "line 4 (or this line's prev) was altered"},
		{"edited column", func(ls []string) []string {
			ls[2] = strings.Replace(ls[2], "public.patients.ssn", "public.patients.city", 1)
			return ls
		}, 4, "line 3 (or this line's prev) was altered"},
		{"moved lines", func(ls []string) []string {
			ls[2], ls[3] = ls[3], ls[2]
			return ls
		}, 3, "records are missing"},
		{"missing beginning", func(ls []string) []string { return ls[1:] }, 1, "does not begin with a start record"},
		{"cut last line", func(ls []string) []string {
			ls[len(ls)-1] = ls[len(ls)-1][:40]
			return ls
		}, 7, "not an audit record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			writeLines(t, p, tt.mutate(append([]string(nil), orig...)))
			_, err := VerifyFiles(p)
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a ChainError", err)
			}
			if ce.Line != tt.line || !strings.Contains(ce.Msg, tt.msg) {
				t.Errorf("got line %d %q, want line %d containing %q", ce.Line, ce.Msg, tt.line, tt.msg)
			}
		})
	}
	// A file cut inside its last line (no newline).
	p := filepath.Join(dir, "cut")
	os.WriteFile(p, []byte(strings.Join(orig, "\n")[:len(strings.Join(orig, "\n"))-10]), 0o600)
	if _, err := VerifyFiles(p); err == nil || !strings.Contains(err.Error(), ":7: incomplete line") {
		t.Errorf("cut file: %v", err)
	}
}

// failingWriter fails while fail is set.
type failingWriter struct {
	mu   *sync.Mutex
	fail *bool
	out  *bytes.Buffer
}

func (w failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if *w.fail {
		return 0, errors.New("no space left on device")
	}
	return w.out.Write(p)
}
func (w failingWriter) Close() error { return nil }

// TestFailureRefusesUntilRecovery: a sink that fails makes the log
// failing (Refusing with on_failure: refuse, never with continue); once
// it works again the log recovers with a start record counting the lost
// records, and the chain verifies.
func TestFailureRefusesUntilRecovery(t *testing.T) {
	for _, mode := range []string{OnFailureRefuse, OnFailureContinue} {
		t.Run(mode, func(t *testing.T) {
			var (
				mu   sync.Mutex
				fail bool
				out  bytes.Buffer
			)
			open := func() (io.WriteCloser, tail, error) { return failingWriter{&mu, &fail, &out}, tail{}, nil }
			cfg := testConfig("test")
			cfg.OnFailure = mode
			l, err := newLog(cfg, "test", open, 5*time.Millisecond, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			l.Write(testRecord(0))
			waitFor(t, func() bool { return testutil.ToFloat64(l.m.records) == 2 })
			if l.Refusing() {
				t.Fatal("refusing while healthy")
			}
			mu.Lock()
			fail = true
			mu.Unlock()
			l.Write(testRecord(1))
			waitFor(t, func() bool { return l.failing.Load() })
			if got := l.Refusing(); got != (mode == OnFailureRefuse) {
				t.Fatalf("Refusing = %v with on_failure %s", got, mode)
			}
			l.Write(testRecord(2)) // dropped while broken
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			fail = false
			mu.Unlock()
			waitFor(t, func() bool { return !l.failing.Load() })
			l.Write(testRecord(3))
			l.Close()
			if got := testutil.ToFloat64(l.m.lost); got != 2 {
				t.Errorf("lost = %v, want 2", got)
			}
			if _, err := Verify(bytes.NewReader(out.Bytes()), "test", nil); err != nil {
				t.Fatalf("verify: %v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), `"type":"start","seed"`) || !strings.Contains(out.String(), `"lost":2,"reason":"recover"`) {
				t.Errorf("no recovery segment with the lost count:\n%s", out.String())
			}
		})
	}
}

// gatedWriter blocks its writes while gated.
type gatedWriter struct {
	gated *atomic.Bool
	gate  chan struct{}
	mu    *sync.Mutex
	out   *bytes.Buffer
}

func (w gatedWriter) Write(p []byte) (int, error) {
	if w.gated.Load() {
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}
func (w gatedWriter) Close() error { return nil }

// TestOverflow: a full queue delays Write by at most MaxWait, then drops
// the record and marks the log failing; the writer catches up, writes a
// lost record, and stops failing.
func TestOverflow(t *testing.T) {
	var (
		gated atomic.Bool
		mu    sync.Mutex
		out   bytes.Buffer
	)
	gate := make(chan struct{})
	open := func() (io.WriteCloser, tail, error) { return gatedWriter{&gated, gate, &mu, &out}, tail{}, nil }
	cfg := testConfig("test")
	cfg.QueueSize, cfg.MaxWait = 2, 5*time.Millisecond
	l, err := newLog(cfg, "test", open, time.Second, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gated.Store(true)
	l.Write(testRecord(0))
	waitFor(t, func() bool { return len(l.ch) == 0 }) // the writer took it and blocks writing it
	time.Sleep(5 * time.Millisecond)
	l.Write(testRecord(1))
	l.Write(testRecord(2))
	start := time.Now()
	l.Write(testRecord(3)) // the queue is full
	if d := time.Since(start); d < cfg.MaxWait || d > cfg.MaxWait+200*time.Millisecond {
		t.Errorf("a Write into a full queue took %v, want about max_wait %v", d, cfg.MaxWait)
	}
	if !l.Refusing() || testutil.ToFloat64(l.m.failures.WithLabelValues("overflow")) != 1 {
		t.Fatal("overflow did not make the log refusing")
	}
	gated.Store(false)
	close(gate)
	waitFor(t, func() bool { return !l.failing.Load() })
	l.Close()
	mu.Lock()
	defer mu.Unlock()
	if _, err := Verify(bytes.NewReader(out.Bytes()), "test", nil); err != nil {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `"type":"lost","lost":1,"reason":"overflow"`) {
		t.Errorf("no lost record:\n%s", out.String())
	}
}

// TestDevFull: a sink that accepts the open but no write (a full disk)
// leaves Open working and the log refusing.
func TestDevFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	l, err := Open(testConfig("/dev/full"), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.Refusing() {
		t.Fatal("writing to /dev/full did not make the log refusing")
	}
	if _, err := Open(testConfig(filepath.Join(t.TempDir(), "no", "such", "dir")), slog.New(slog.DiscardHandler), prometheus.NewRegistry()); err == nil {
		t.Fatal("Open of a path in a missing directory succeeded")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
