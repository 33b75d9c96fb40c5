package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// TestDemo runs the demo as a user would, connects with the printed
// connection string, then stops it with a cancelled context (Ctrl-C).
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr strings.Builder
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, []string{"-dir", dir, "-listen", "127.0.0.1:0", "-metrics", "127.0.0.1:0", "-log-level", "warn"}, pw, &stderr)
		pw.Close()
	}()

	lineRE := regexp.MustCompile(`PGPASSWORD=(\S+) psql "([^"]+)"`)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var password, dsn string
	timeout := time.After(2 * time.Minute)
	for dsn == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("demo ended before printing the psql command: %v\n%s", <-done, stderr.String())
			}
			if m := lineRE.FindStringSubmatch(line); m != nil {
				password, dsn = m[1], m[2]
			}
		case <-timeout:
			t.Fatal("demo did not print the psql command within 2 minutes")
		}
	}
	go func() {
		for range lines {
		}
	}()
	if !strings.Contains(dsn, "sslmode=verify-full") || !strings.Contains(dsn, "sslrootcert=") {
		t.Fatalf("printed connection string %q lacks verify-full and sslrootcert", dsn)
	}
	for _, f := range []string{"proxy-ca.crt", "proxy.crt", "proxy.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("demo did not keep %s: %v", f, err)
		}
	}

	cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
	defer ccancel()
	conn, err := pgx.Connect(cctx, dsn+" password="+password)
	if err != nil {
		t.Fatalf("connect with the printed command: %v", err)
	}
	var user string
	var ssl bool
	if err := conn.QueryRow(cctx, "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &ssl); err != nil {
		t.Fatal(err)
	}
	conn.Close(cctx)
	if user != pgcluster.ScramUser.Name || !ssl {
		t.Fatalf("through the demo proxy: user %q ssl %v", user, ssl)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo returned %v after Ctrl-C", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop within 30s of Ctrl-C")
	}
}
