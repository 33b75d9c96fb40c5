package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/auditlog"
)

func TestAuditConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, doc, want string
	}{
		{"bad on_failure", minimal + "audit:\n  file: a.log\n  on_failure: ignore\n", `c.yaml:9: audit.on_failure "ignore": want refuse or continue`},
		{"unknown key", minimal + "audit:\n  path: a.log\n", `c.yaml:10: unknown key "path"`},
		{"bad max_wait", minimal + "audit:\n  file: a.log\n  max_wait: 1m\n", "audit.max_wait 1m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("c.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	for file, want := range map[string]string{"a.log": filepath.Join(dir, "a.log"), "stderr": "stderr", "/var/log/x.log": "/var/log/x.log"} {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte(minimal+"audit:\n  file: "+file+"\n"), 0o600)
		cfg, err := loadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		a := cfg.file.Audit
		if a.File != want || a.OnFailure != auditlog.OnFailureRefuse || a.QueueSize != 8192 {
			t.Errorf("audit %q: %+v, want file %q and defaults", file, a, want)
		}
	}
}

// TestServeAuditRotation: serve writes the audit log, SIGHUP after a
// rotation starts a new file that continues the old one, and `audit
// verify` accepts both and reports an edited line.
func TestServeAuditRotation(t *testing.T) {
	t.Setenv(crypto.EnvMasterKey, "")
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	doc := strings.Replace(minimal, "127.0.0.1:6432", "127.0.0.1:0", 1) +
		"log:\n  format: text\nkeys:\n  keyring_file: keyring.json\n  provider: local\n  local:\n    master_key_file: master.key\n" +
		"policy:\n  tables:\n    - name: t\n      columns:\n        c: { type: text }\naudit:\n  file: audit.log\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keysCmd(t, "init", "--config", path); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	var stdout bytes.Buffer
	stderr := &syncWriter{}
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, []string{"--config", path}, &stdout, stderr) }()
	waitLog := func(s string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), s); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", s, stderr.String())
			}
		}
	}
	waitLog("listening")
	auditFile := filepath.Join(dir, "audit.log")
	rotated := auditFile + ".1"
	if err := os.Rename(auditFile, rotated); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitLog("audit log reopened")
	cancel(context.Canceled)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	waitLog("audit log closed")

	var out, errb bytes.Buffer
	if code := run([]string{"audit", "verify", rotated, auditFile}, &out, &errb); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), auditFile+": chain intact: 1 records in 1 segments, continuing the file before it") {
		t.Errorf("verify output:\n%s", out.String())
	}
	// An edited line: the one after it no longer follows.
	b, _ := os.ReadFile(rotated)
	b = append(b, b...) // the start record again: its seed is not the line before's hash
	os.WriteFile(rotated, b, 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"audit", "verify", rotated}, &out, &errb); code != 1 || !strings.Contains(errb.String(), rotated+":2: a new segment that does not continue line 1") {
		t.Errorf("verify of a tampered file: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if code := run([]string{"audit"}, &out, &errb); code != 2 {
		t.Errorf("audit without a command: exit %d, want 2", code)
	}
}

// syncWriter is a bytes.Buffer safe for the logger's and the test's
// goroutines.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
