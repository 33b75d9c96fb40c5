package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/novamind/phiproxy/proxy"
)

// TestExampleConfig: config.example.yaml parses, validates, and passes
// `phiproxy check` (its files are missing here: warnings, not errors).
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "config.example.yaml")
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.file.Proxy
	if p.Listen.Address != "127.0.0.1:6432" || p.Upstream.TLS.Mode != proxy.TLSModeVerifyFull ||
		p.Metrics.Address != "127.0.0.1:9187" || p.Limits.DrainTimeout != 30*time.Second {
		t.Errorf("decoded proxy config %+v", p)
	}
	if cfg.file.Keys.Provider != "local" || cfg.file.Log.Format != "json" {
		t.Errorf("keys %+v, log %+v", cfg.file.Keys, cfg.file.Log)
	}
	if got := len(cfg.policy.Tables()); got != 2 {
		t.Errorf("%d policy tables, want 2", got)
	}
	if want := filepath.Join("..", "..", "certs", "proxy.crt"); p.Listen.TLS.CertFile != want {
		t.Errorf("cert_file %q, want %q (relative to the config file)", p.Listen.TLS.CertFile, want)
	}

	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", "--config", path, "--offline"}, &stdout, &stderr); code != 0 {
		t.Errorf("check exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "configuration OK") || !strings.Contains(stdout.String(), "warning  listen.tls.cert_file") {
		t.Errorf("check output:\n%s", stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"check", "--config", path, "--offline", "--strict"}, &stdout, &stderr); code != 1 {
		t.Errorf("check --strict with missing files: exit %d, want 1", code)
	}
}

const minimal = `listen:
  address: 127.0.0.1:6432
  tls:
    allow_plaintext: true
upstream:
  address: 127.0.0.1:5432
  tls:
    mode: disable
`

// TestConfigErrors: unknown keys and bad values are rejected with the line
// they are on.
func TestConfigErrors(t *testing.T) {
	if _, err := parseConfig("c.yaml", []byte(minimal)); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	cases := []struct {
		name, doc, want string
	}{
		{"unknown key", minimal + "  bogus: 1\n", `c.yaml:9: unknown key "bogus" in upstream`},
		{"unknown section", minimal + "extra: {}\n", `c.yaml:9: unknown key "extra" in the top level`},
		{"bad mode", strings.Replace(minimal, "mode: disable", "mode: prefer", 1), `c.yaml:8: upstream.tls.mode: "prefer"`},
		{"bad duration", minimal + "  connect_timeout: soon\n", "c.yaml:9: want a duration such as 10s or 500ms, found a string"},
		{"bad number", minimal + "limits:\n  max_message_bytes: 12\n", "c.yaml:10: limits.max_message_bytes: 12"},
		{"tls required", strings.Replace(minimal, "allow_plaintext: true", "allow_plaintext: false", 1), "c.yaml:3: listen.tls: cert_file and key_file are required"},
		{"bad log level", minimal + "log:\n  level: loud\n", `c.yaml:9: log.level "loud"`},
		{"bad provider", minimal + "keys:\n  provider: vault\n", `c.yaml:10: keys.provider "vault"`},
		{"bad policy", minimal + "policy:\n  tables:\n    - name: public.p\n      columns:\n        ssn: { type: blob }\n", "line 13"},
		{"empty", "", "empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig("c.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestServeUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	t.Setenv(envConfig, "")
	if code := run([]string{"serve"}, &stdout, &stderr); code != 2 {
		t.Errorf("serve without --config: exit %d, want 2", code)
	}
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "phiproxy ") {
		t.Errorf("version: exit %d, %q", code, stdout.String())
	}
}

// TestServeSignal runs serve and stops it like SIGTERM does.
func TestServeSignal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	doc := strings.Replace(minimal, "127.0.0.1:6432", "127.0.0.1:0", 1) + "metrics:\n  address: 127.0.0.1:0\nlog:\n  format: text\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, []string{"--config", path}, &stdout, &stderr) }()
	time.Sleep(300 * time.Millisecond)
	cancel(context.Canceled)
	select {
	case err := <-done:
		if err == nil {
			t.Error("serve returned nil after a signal; want an error for the exit code")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(stderr.String(), "listening") || !strings.Contains(stderr.String(), "shutting down") {
		t.Errorf("logs:\n%s", stderr.String())
	}
}

func TestInterruptedCode(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(sigErr(syscall.SIGTERM.String() + " signal received"))
	if got := interruptedCode(ctx); got != 143 {
		t.Errorf("SIGTERM: %d, want 143", got)
	}
	ctx, cancel = context.WithCancelCause(context.Background())
	cancel(sigErr(os.Interrupt.String() + " signal received"))
	if got := interruptedCode(ctx); got != 130 {
		t.Errorf("SIGINT: %d, want 130", got)
	}
}

// sigErr mimics os/signal's cause (it is a context.Canceled).
type sigErr string

func (e sigErr) Error() string        { return string(e) }
func (e sigErr) Is(target error) bool { return target == context.Canceled }
