package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

// serveConfig is a configuration for `phiproxy serve` in e's directory
// (its keyring and master key) listening on listen, with metrics on
// metrics and logs in format; extra is appended (YAML at the top level).
func serveConfig(e *opsEnv, listen, metrics, format, extra string) string {
	return fmt.Sprintf(`listen:
  address: %s
  tls:
    cert_file: %s
    key_file: %s
upstream:
  address: %s
  tls:
    mode: verify-full
    ca_file: %s
    server_name: %s
metrics:
  address: %q
log:
  format: %s
%spolicy:
  databases: [%s]
%s%s`, listen, proxyCertFile, proxyKeyFile, cluster.Addr(), cluster.CAFile(), upstreamServerName,
		metrics, format, e.keysYAML, e.db, e.policyYAML, extra)
}

// writeFile writes a file of the test's own.
func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// jsonLines parses every line of s as a JSON object; it fails the test
// on a line that is not one.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("stderr line is not JSON: %q", line)
			continue
		}
		out = append(out, m)
	}
	return out
}

// TestServeFatalStartupJSON (issue 11, item 7): a fatal error at startup
// (a configuration that does not load, a keyring that cannot be read, a
// port in use) is one log line on stderr in the configured format (JSON
// by default and with log.format json, each line parseable; text when
// the file asks for text), level ERROR, with the error, and the exit
// status is 1.
func TestServeFatalStartupJSON(t *testing.T) {
	e := newOpsEnv(t, "ops_serve_fatal", rotationPolicy)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		name, config string // config "": a file that does not exist
		format       string // json | text
		wantErr      string
	}{
		{"unknown key", serveConfig(e, "127.0.0.1:0", "", "json", "listne: {}\n"), "json", `unknown key "listne"`},
		{"unknown key, default format", strings.Replace(serveConfig(e, "127.0.0.1:0", "", "json", "bogus: 1\n"), "log:\n  format: json\n", "", 1), "json", `unknown key "bogus"`},
		{"bad value, text logs", strings.Replace(serveConfig(e, "127.0.0.1:0", "", "text", ""), "type: bytea", "type: nosuchtype", 1), "text", "nosuchtype"},
		{"no config file", "", "json", "no such file or directory"},
		{"keyring unreadable", strings.Replace(serveConfig(e, "127.0.0.1:0", "", "json", ""), "keyring_file: keyring.json", "keyring_file: missing-keyring.json", 1), "json", "keyring: "},
		{"port in use", serveConfig(e, busy.Addr().String(), "", "json", ""), "json", "address already in use"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(e.dir, fmt.Sprintf("fatal-%d.yaml", i))
			if tc.config != "" {
				writeFile(t, path, tc.config)
			}
			res := e.run(t, "serve", "--config", path)
			if res.code != 1 || res.stdout != "" {
				t.Fatalf("want exit 1 and nothing on stdout: %s", res)
			}
			if tc.format == "text" {
				if lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n"); len(lines) != 1 ||
					!strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], `msg="phiproxy cannot start"`) || !strings.Contains(lines[0], tc.wantErr) {
					t.Errorf("want one text log line, level ERROR, naming %q: %s", tc.wantErr, res)
				}
				return
			}
			lines := jsonLines(t, res.stderr)
			if len(lines) == 0 {
				t.Fatalf("nothing on stderr: %s", res)
			}
			last := lines[len(lines)-1]
			errText, _ := last["error"].(string)
			if last["level"] != "ERROR" || last["msg"] != "phiproxy cannot start" || !strings.Contains(errText, tc.wantErr) {
				t.Errorf("last line %v: want level ERROR, msg %q, an error naming %q", last, "phiproxy cannot start", tc.wantErr)
			}
			for _, l := range lines[:len(lines)-1] {
				if l["level"] == "ERROR" {
					t.Errorf("more than one error line: %v", l)
				}
			}
		})
	}
}

// startServe starts `phiproxy serve --config path` and returns the
// process, its stderr so far (a function) and the metrics address its
// "listening" line names.
func startServe(t *testing.T, e *opsEnv, path string) (*exec.Cmd, func() string, string) {
	t.Helper()
	cmd := e.command(context.Background(), t, "serve", "--config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	logs := &syncBuffer{}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(logs, sc.Text())
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "listening" {
				a, _ := m["metrics_address"].(string)
				addr <- a
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok || a == "" {
			t.Fatalf("serve did not start:\n%s", logs.String())
		}
		return cmd, logs.String, a
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start in 30s:\n%s", logs.String())
	}
	return nil, nil, ""
}

// TestBuildInfoMatchesVersion (issue 11, item 7): the running binary's
// phiproxy_build_info gauge carries the version and commit the build
// stamped (as the Makefile does) and the Go version, exactly as
// `phiproxy version` prints them; phiproxy_active_key_id follows `keys
// rotate` and a SIGHUP. SIGTERM then stops it with exit 143 and a last
// JSON line.
func TestBuildInfoMatchesVersion(t *testing.T) {
	e := newOpsEnv(t, "ops_serve_build", rotationPolicy)
	ver := e.mustRun(t, "version")
	m := regexp.MustCompile(`^phiproxy (\S+) \(commit (\S+), (\S+)\)\n$`).FindStringSubmatch(ver.stdout)
	if m == nil {
		t.Fatalf("version output %q", ver.stdout)
	}
	if m[1] != "v0.0.0-test" || m[2] != "0123abc" {
		t.Errorf("version %s commit %s: want the stamp of phiproxyBinary", m[1], m[2])
	}
	path := writeFile(t, filepath.Join(e.dir, "serve.yaml"), serveConfig(e, "127.0.0.1:0", "127.0.0.1:0", "json", ""))
	cmd, logs, metrics := startServe(t, e, path)
	body := httpGet(t, "http://"+metrics+"/metrics")
	want := fmt.Sprintf(`phiproxy_build_info{commit="%s",goversion="%s",version="%s"} 1`, m[2], m[3], m[1])
	if !strings.Contains(body, want+"\n") {
		t.Errorf("/metrics lacks %s:\n%s", want, grepLines(body, "phiproxy_build_info"))
	}

	// phiproxy_active_key_id follows a rotation and a reload.
	if !strings.Contains(body, "\nphiproxy_active_key_id 1\n") {
		t.Errorf("/metrics: %s, want phiproxy_active_key_id 1", grepLines(body, "phiproxy_active_key_id"))
	}
	e.mustRun(t, "keys", "rotate", "--config", path)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(httpGet(t, "http://"+metrics+"/metrics"), "\nphiproxy_active_key_id 2\n") {
		if time.Now().After(deadline) {
			t.Fatalf("phiproxy_active_key_id not 2 after keys rotate and SIGHUP:\n%s", logs())
		}
		time.Sleep(100 * time.Millisecond)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 143 {
		t.Errorf("after SIGTERM: %v, want exit 143", err)
	}
	time.Sleep(100 * time.Millisecond) // the reader's last lines
	lines := jsonLines(t, logs())
	if last := lines[len(lines)-1]; last["msg"] != "stopped" {
		t.Errorf("last line %v, want msg stopped", last)
	}
}

// httpGet returns the body of a 200 answer.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReadyzFollowsUpstream (issue 11, item 7): /readyz and
// phiproxy_upstream_up follow a real PostgreSQL within two seconds:
// stopping the server flips them to 503 and 0, starting it again back to
// 200 and 1, and sessions work again.
func TestReadyzFollowsUpstream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: upstreamServerName})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	defer pg.Stop()
	p, _ := startProxyReg(t, func(cfg *proxy.Config) {
		cfg.Upstream.Address = pg.Addr()
		cfg.Upstream.TLS.CAFile = pg.CAFile()
	})
	dsn := p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)
	up := func() float64 {
		body := httpGet(t, "http://"+p.srv.MetricsAddr().String()+"/metrics")
		switch {
		case strings.Contains(body, "\nphiproxy_upstream_up 1\n"):
			return 1
		case strings.Contains(body, "\nphiproxy_upstream_up 0\n"):
			return 0
		}
		t.Fatalf("no phiproxy_upstream_up in /metrics")
		return -1
	}
	// waitFor polls /readyz until it answers want, and returns how long
	// that took after the change.
	waitFor := func(want int) time.Duration {
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			if httpStatus(t, p, "/readyz") == want {
				return time.Since(start)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("/readyz did not become %d within 10s", want)
		return 0
	}
	if tryConnect(t, dsn) != "" || httpStatus(t, p, "/readyz") != http.StatusOK || up() != 1 {
		t.Fatal("not ready with the upstream up")
	}
	for round := 1; round <= 2; round++ {
		if err := pg.StopServer(ctx); err != nil {
			t.Fatal(err)
		}
		took := waitFor(http.StatusServiceUnavailable)
		t.Logf("round %d: /readyz 503 %v after the server stopped", round, took)
		if took > 2*time.Second {
			t.Errorf("round %d: /readyz took %v to see the upstream down, want ≤ 2s", round, took)
		}
		if v := up(); v != 0 {
			t.Errorf("round %d: phiproxy_upstream_up = %v with the upstream down", round, v)
		}
		if err := pg.StartServer(ctx); err != nil {
			t.Fatal(err)
		}
		took = waitFor(http.StatusOK)
		t.Logf("round %d: /readyz 200 %v after the server started", round, took)
		if took > 2*time.Second {
			t.Errorf("round %d: /readyz took %v to see the upstream back, want ≤ 2s", round, took)
		}
		if v := up(); v != 1 {
			t.Errorf("round %d: phiproxy_upstream_up = %v with the upstream back", round, v)
		}
		if msg := tryConnect(t, dsn); msg != "" {
			t.Errorf("round %d: session after the restart: %s", round, msg)
		}
	}
}
