package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// The operations tests (schema, migrate, keys, check) run the phiproxy
// binary as an operator would, against a database of their own, with a
// configuration file, a keyring and a local master key in a directory of
// their own. The binary connects to PostgreSQL directly with the
// configuration's upstream settings and the PG* variables of opsEnv.run.

// phiproxyBin is the binary built from cmd/phiproxy, once per test run.
var phiproxyBin struct {
	once sync.Once
	path string
	err  error
}

// phiproxyBinary builds cmd/phiproxy (with the Makefile's version stamp)
// into a temporary directory and returns its path.
func phiproxyBinary(t *testing.T) string {
	t.Helper()
	phiproxyBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "phiproxy-bin-")
		if err != nil {
			phiproxyBin.err = err
			return
		}
		phiproxyBin.path = filepath.Join(dir, "phiproxy")
		cmd := exec.Command("go", "build", "-ldflags", "-X main.buildVersion=v0.0.0-test -X main.buildCommit=0123abc",
			"-o", phiproxyBin.path, "github.com/novamind/phiproxy/cmd/phiproxy")
		if out, err := cmd.CombinedOutput(); err != nil {
			phiproxyBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if phiproxyBin.err != nil {
		t.Fatal(phiproxyBin.err)
	}
	return phiproxyBin.path
}

// opsEnv is one operations test's database, key files and configuration.
type opsEnv struct {
	dir     string // config.yaml, keyring.json, master.key
	config  string
	keyring string
	db      string
	policy  *policy.Policy

	// What writeConfig writes: the policy section's tables (indented by
	// two), the keys section (default: local, keyring.json, master.key)
	// and the listen certificate (default: the suite's).
	policyYAML, keysYAML string
	certFile, keyFile    string
}

// localKeys is the default keys section of an opsEnv.
const localKeys = `keys:
  keyring_file: keyring.json
  provider: local
  local:
    master_key_file: master.key
`

// newOpsEnv creates database db (owned by ScramUser), a keyring with a
// local master key (by `phiproxy keys init`) and a configuration whose
// policy section is policyYAML (a `tables:` list, indented by two).
func newOpsEnv(t *testing.T, db, policyYAML string) *opsEnv {
	t.Helper()
	e := &opsEnv{dir: t.TempDir(), db: db}
	e.config = filepath.Join(e.dir, "config.yaml")
	e.keyring = filepath.Join(e.dir, "keyring.json")
	su := connect(t, cluster.SuperuserDSN("postgres"))
	for _, s := range []string{"DROP DATABASE IF EXISTS " + db + " WITH (FORCE)", "CREATE DATABASE " + db + " OWNER " + pgcluster.ScramUser.Name} {
		if _, err := su.Exec(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	// Dropped at the end, unless the test failed: the leak check then
	// searches fewer files, and a failure leaves the database to look at.
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		su, err := pgx.Connect(context.Background(), cluster.SuperuserDSN("postgres"))
		if err == nil {
			su.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
			su.Close(context.Background())
		}
	})
	e.policyYAML, e.keysYAML, e.certFile, e.keyFile = policyYAML, localKeys, proxyCertFile, proxyKeyFile
	e.writeConfig(t)
	var err error
	if e.policy, err = policy.Parse([]byte(strings.ReplaceAll("\n"+policyYAML, "\n  ", "\n"))); err != nil {
		t.Fatalf("policy: %v", err)
	}
	e.mustRun(t, "keys", "init", "--config", e.config)
	return e
}

// writeConfig writes the configuration file from e's fields.
func (e *opsEnv) writeConfig(t *testing.T) {
	t.Helper()
	cfg := fmt.Sprintf(`listen:
  address: 127.0.0.1:0
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
  address: ""
log:
  format: text
%spolicy:
  databases: [%s]
%s`, e.certFile, e.keyFile, cluster.Addr(), cluster.CAFile(), upstreamServerName, e.keysYAML, e.db, e.policyYAML)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// opsResult is one phiproxy run.
type opsResult struct {
	stdout, stderr string
	code           int
}

func (r opsResult) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// run runs phiproxy with args, as ScramUser (PGUSER, PGPASSWORD), and
// returns its output and exit code.
func (e *opsEnv) run(t *testing.T, args ...string) opsResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := e.command(ctx, t, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := opsResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run phiproxy %v: %v", args, err)
	}
	return res
}

// command builds a phiproxy process (see run).
func (e *opsEnv) command(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, phiproxyBinary(t), args...)
	cmd.Dir = e.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "PHIPROXY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGUSER="+pgcluster.ScramUser.Name, "PGPASSWORD="+pgcluster.ScramUser.Password, "LC_ALL=C")
	return cmd
}

// mustRun is run for a command that must succeed.
func (e *opsEnv) mustRun(t *testing.T, args ...string) opsResult {
	t.Helper()
	res := e.run(t, args...)
	if res.code != 0 {
		t.Fatalf("phiproxy %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// openKeyring opens the environment's keyring with its master key.
func (e *opsEnv) openKeyring(t *testing.T) *crypto.Keyring {
	t.Helper()
	p, err := crypto.LoadLocalProvider(crypto.LocalConfig{MasterKeyFile: filepath.Join(e.dir, "master.key")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := crypto.OpenKeyring(context.Background(), e.keyring, p)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// startProxy starts a PHI proxy with the keyring as it is now on disk
// (as `phiproxy serve` would after a restart); it stops with the test.
func (e *opsEnv) startProxy(t *testing.T) *testProxy {
	t.Helper()
	kr := e.openKeyring(t)
	t.Cleanup(kr.Close)
	logs := &syncBuffer{}
	phiLogs.add(logs)
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	eng, err := phi.New(e.policy, phi.KeyringKeys(kr), reg, phi.Config{})
	if err != nil {
		t.Fatalf("phi.New: %v", err)
	}
	srv, err := proxy.New(baseConfig(), logger, reg, proxy.WithInterceptor(eng))
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	return runProxy(t, srv, logs)
}

// direct connects straight to the environment's database as its owner.
func (e *opsEnv) direct(t *testing.T) *pgx.Conn {
	return connect(t, directDSN(pgcluster.ScramUser, e.db))
}

// psqlFile runs a SQL script with psql, directly, as the owner.
func (e *opsEnv) psqlFile(t *testing.T, script string) {
	t.Helper()
	path := filepath.Join(e.dir, fmt.Sprintf("script-%d.sql", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := runPsql(t, directDSN(pgcluster.ScramUser, e.db), "-q", "-f", path); res.Exit != 0 {
		t.Fatalf("psql -f script: exit %d\n%s\n--- script\n%s", res.Exit, res.Stderr, script)
	}
}

// keyringFile reads the environment's keyring file.
func (e *opsEnv) keyringFile(t *testing.T) *crypto.KeyringFile {
	t.Helper()
	f, err := crypto.ReadKeyringFile(e.keyring)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
