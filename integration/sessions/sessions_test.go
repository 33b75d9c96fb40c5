// Package sessions holds phiproxy's many-sessions test: 1,000 concurrent
// TLS sessions through one PHI-enforcing proxy against a real PostgreSQL
// of its own (max_connections raised), each reading the catalog at start,
// running a statement and checking its answer (issue 13, item 4).
package sessions

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/proxy/phi"
)

const (
	sessions = 1000
	// dialers bounds the logins in progress at once: each costs the
	// server a fork and both legs a TLS handshake.
	dialers = 32
	// maxGoroutinesPerSession: the session's own and one per direction.
	maxGoroutinesPerSession = 3
	// maxHeapPerSession bounds the Go heap growth per open session, client
	// side (pgx, in this process too) and proxy side together.
	maxHeapPerSession = 224 << 10
)

func TestThousandSessions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{ServerName: "db.internal", Settings: []string{
		fmt.Sprintf("max_connections = %d", sessions+20),
		"log_connections = off", "log_disconnections = off",
	}})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	defer cluster.Stop()

	pol, err := seed.Policy()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := pgx.Connect(ctx, cluster.DSN(pgcluster.ScramUser, pgcluster.AppDatabase, "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, seed.SchemaSQL(pol, true)); err != nil {
		t.Fatalf("schema: %v", err)
	}
	owner.Close(ctx)

	dir := t.TempDir()
	master := make([]byte, 32)
	rand.Read(master)
	prov, err := crypto.NewLocalProvider(master)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := crypto.CreateKeyring(ctx, filepath.Join(dir, "keyring.json"), prov)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pgcluster.NewCA("sessions test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	if err := ca.WriteServerFiles(caFile, certFile, keyFile, []string{"localhost", "127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	eng, err := phi.New(pol, phi.KeyringKeys(kr), reg, phi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Config{
		Listen: proxy.ListenConfig{Address: "127.0.0.1:0", TLS: proxy.ListenTLSConfig{CertFile: certFile, KeyFile: keyFile}},
		Upstream: proxy.UpstreamConfig{Address: cluster.Addr(), TLS: proxy.UpstreamTLSConfig{
			Mode: proxy.TLSModeVerifyFull, CAFile: cluster.CAFile(), ServerName: "db.internal"}},
	}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), reg, proxy.WithInterceptor(eng))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dsn := pgcluster.DSN("127.0.0.1", srv.Addr().(*net.TCPAddr).Port, pgcluster.ScramUser, pgcluster.AppDatabase, "verify-full", caFile)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	conns := make([]*pgx.Conn, sessions)
	errs := make(chan error, sessions)
	sem := make(chan struct{}, dialers)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errs <- fmt.Errorf("session %d: connect: %w", i, err)
				return
			}
			conns[i] = c
			var got int
			// A statement on a policy table (the session's catalog is in
			// use) that checks it is this session's own answer.
			if err := c.QueryRow(ctx, "SELECT count(*) + $1 FROM patients WHERE email = $2", i, "nobody@example.org").Scan(&got); err != nil || got != i {
				errs <- fmt.Errorf("session %d: got %d, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if n := srv.ActiveSessions(); n != sessions {
		t.Fatalf("%d sessions open through the proxy, want %d", n, sessions)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := runtime.NumGoroutine() - goroutines
	heap := int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)
	t.Logf("%d open sessions: %d goroutines more (%.2f a session), Go heap and stacks %d KiB more (%.1f KiB a session, pgx clients included)",
		sessions, grown, float64(grown)/sessions, heap>>10, float64(heap)/1024/sessions)
	if grown > maxGoroutinesPerSession*sessions+16 {
		t.Errorf("%d goroutines for %d sessions, want at most %d a session", grown, sessions, maxGoroutinesPerSession)
	}
	if heap > maxHeapPerSession*sessions {
		t.Errorf("heap grew %d KiB for %d sessions, want at most %d KiB a session", heap>>10, sessions, maxHeapPerSession>>10)
	}

	for _, c := range conns {
		c.Close(ctx)
	}
	deadline := time.Now().Add(30 * time.Second)
	for srv.ActiveSessions() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := srv.ActiveSessions(); n != 0 {
		t.Errorf("%d sessions still open after every client closed", n)
	}
}
