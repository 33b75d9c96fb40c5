package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/internal/seed"
)

// TestReloadUnderLoad: SIGHUP arrives 20 times while clients write and
// read through the proxy, with new certificates each time and the
// keyring rotated half-way: no statement fails, the process lives, and
// after the rotation new writes use the new active key (issue 11, item 5).
// A configuration that does not load is logged and the old one kept.
func TestReloadUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: "db.internal"})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	defer cluster.Stop()
	pol, err := seed.Policy()
	if err != nil {
		t.Fatal(err)
	}
	direct, err := pgx.Connect(ctx, cluster.DSN(pgcluster.ScramUser, pgcluster.AppDatabase, "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if _, err := direct.Exec(ctx, seed.SchemaSQL(pol, true)); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	ca, err := pgcluster.NewCA("reload test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	if err := ca.WriteServerFiles(caFile, certFile, keyFile, []string{"localhost", "127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// New certificates are written aside and renamed into place, as an
	// operator replaces files that a running process reads.
	stage := filepath.Join(dir, "stage")
	os.Mkdir(stage, 0o700)
	newCert := func() {
		sc, sk := filepath.Join(stage, "proxy.crt"), filepath.Join(stage, "proxy.key")
		if err := ca.WriteServerFiles(filepath.Join(stage, "ca.crt"), sc, sk, []string{"localhost", "127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(sc, certFile); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(sk, keyFile); err != nil {
			t.Fatal(err)
		}
	}
	masterFile, keyringFile := filepath.Join(dir, "master.key"), filepath.Join(dir, "keyring.json")
	if err := crypto.WriteNewMasterKeyFile(masterFile); err != nil {
		t.Fatal(err)
	}
	prov, err := crypto.LoadLocalProvider(crypto.LocalConfig{MasterKeyFile: masterFile}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	kr, err := crypto.CreateKeyring(ctx, keyringFile, prov)
	if err != nil {
		t.Fatal(err)
	}
	firstKey := kr.ActiveKeyID()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	config := fmt.Sprintf(`listen:
  address: %s
  tls: { cert_file: %s, key_file: %s }
upstream:
  address: %s
  tls: { mode: verify-full, ca_file: %s, server_name: db.internal }
log: { format: text, level: %%s }
keys:
  keyring_file: %s
  provider: local
  local: { master_key_file: %s }
%s`, addr, certFile, keyFile, cluster.Addr(), cluster.CAFile(), keyringFile, masterFile, indent(seed.PolicyYAML))
	path := filepath.Join(dir, "phiproxy.yaml")
	write := func(level string) {
		if err := os.WriteFile(path, []byte(fmt.Sprintf(config, level)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("info")

	sctx, stop := context.WithCancelCause(ctx)
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- runServe(sctx, []string{"--config", path}, &bytes.Buffer{}, &stderr) }()
	defer func() {
		stop(context.Canceled)
		<-done
	}()
	dsn := pgcluster.DSN("127.0.0.1", l.Addr().(*net.TCPAddr).Port, pgcluster.ScramUser, pgcluster.AppDatabase, "verify-full", caFile)
	for i := 0; ; i++ {
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			c.Close(ctx)
			break
		}
		if i == 100 {
			t.Fatalf("proxy did not come up: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Clients: each writes and reads back its own rows, reconnecting now
	// and then so that new sessions meet the new certificates and keys.
	var (
		wg     sync.WaitGroup
		failed atomic.Value
		ops    atomic.Int64
	)
	load, endLoad := context.WithCancel(ctx)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *pgx.Conn
			defer func() {
				if c != nil {
					c.Close(ctx)
				}
			}()
			for i := 0; load.Err() == nil; i++ {
				if c == nil || i%10 == 0 {
					if c != nil {
						c.Close(ctx)
					}
					if c, err = pgx.Connect(ctx, dsn); err != nil {
						failed.Store(fmt.Sprintf("client %d connect: %v", w, err))
						return
					}
				}
				city := fmt.Sprintf("city-%d-%d", w, i)
				var got string
				if err := c.QueryRow(ctx, "INSERT INTO patients (city, email) VALUES ($1, $2) RETURNING city", city, city+"@x.org").Scan(&got); err != nil || got != city {
					failed.Store(fmt.Sprintf("client %d insert: %q %v", w, got, err))
					return
				}
				if err := c.QueryRow(ctx, "SELECT city FROM patients WHERE email = $1", city+"@x.org").Scan(&got); err != nil || got != city {
					failed.Store(fmt.Sprintf("client %d read back: %q %v", w, got, err))
					return
				}
				ops.Add(1)
			}
		}()
	}
	hangup := func() {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 20 {
		newCert()
		if i == 10 {
			if _, err := kr.Rotate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := kr.Save(keyringFile); err != nil {
				t.Fatal(err)
			}
		}
		hangup()
	}
	// A broken file is refused, the running configuration kept.
	os.WriteFile(path, []byte("listen: [\n"), 0o600)
	hangup()
	endLoad()
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatalf("%v (after %d operations)\n%s", f, ops.Load(), stderr.String())
	}
	if ops.Load() < 20 {
		t.Fatalf("only %d operations ran", ops.Load())
	}
	logs := stderr.String()
	if n := strings.Count(logs, "configuration reloaded"); n != 20 {
		t.Errorf("%d reloads logged, want 20", n)
	}
	if !strings.Contains(logs, "reload failed") {
		t.Error("the broken configuration was not reported")
	}

	// A new session writes with the rotated key.
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("after the reloads: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "INSERT INTO patients (city) VALUES ('after-rotation')"); err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := direct.QueryRow(ctx, "SELECT city FROM patients ORDER BY id DESC LIMIT 1").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if id, ok := crypto.EnvelopeKeyID([]byte(stored)); !ok || id == firstKey || id != kr.ActiveKeyID() {
		t.Errorf("a write after rotate and reload used key %d (ok %v), want the new active key %d", id, ok, kr.ActiveKeyID())
	}
}

// indent turns the seed policy file (tables: …) into the config's policy
// section.
func indent(policyYAML []byte) string {
	var b strings.Builder
	b.WriteString("policy:\n")
	for _, line := range strings.Split(strings.TrimRight(string(policyYAML), "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
