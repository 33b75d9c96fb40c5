package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// psqlPath finds psql or fails the test: psql is part of what we promise to
// work, so its absence is an error, not a skip.
func psqlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql"); len(m) > 0 {
		return m[len(m)-1]
	}
	t.Fatal("psql not found; install it with: apt-get install -y postgresql-client")
	return ""
}

// psqlCmd builds a psql process with a clean PG* environment.
func psqlCmd(ctx context.Context, t *testing.T, dsn string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, psqlPath(t), append([]string{"-X", "-v", "ON_ERROR_STOP=1", "-d", dsn}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGCONNECT_TIMEOUT=10", "LC_ALL=C")
	return cmd
}

type psqlResult struct {
	Stdout, Stderr string
	Exit           int
}

func runPsql(t *testing.T, dsn string, args ...string) psqlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := psqlCmd(ctx, t, dsn, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := psqlResult{Stdout: stdout.String(), Stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.Exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run psql: %v", err)
	}
	return res
}

func TestPsql(t *testing.T) {
	p := startProxy(t)
	su := superuser(t)
	ctx := context.Background()
	if _, err := su.Exec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS psql_t, psql_copy;
		CREATE TABLE psql_t(id int PRIMARY KEY, name text NOT NULL, note text DEFAULT 'n/a', created timestamptz DEFAULT now());
		CREATE INDEX psql_t_name ON psql_t(name);
		INSERT INTO psql_t(id, name, note) SELECT g, 'name ' || g, CASE WHEN g %% 3 = 0 THEN NULL ELSE 'tab	and, comma' END FROM generate_series(1, 300) g;
		CREATE TABLE psql_copy (LIKE psql_t);
		ALTER TABLE psql_t OWNER TO %[1]s; ALTER TABLE psql_copy OWNER TO %[1]s`, pgcluster.ScramUser.Name)); err != nil {
		t.Fatal(err)
	}
	direct := directDSN(pgcluster.ScramUser, pgcluster.AppDatabase)
	proxied := p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)

	same := func(t *testing.T, args ...string) psqlResult {
		t.Helper()
		want := runPsql(t, direct, args...)
		got := runPsql(t, proxied, args...)
		if got != want {
			t.Fatalf("psql %q differs\ndirect: %+v\nproxy:  %+v", args, want, got)
		}
		return got
	}

	t.Run("describe", func(t *testing.T) {
		res := same(t, "-c", `\d psql_t`)
		if res.Exit != 0 || !strings.Contains(res.Stdout, `"psql_t_name" btree (name)`) {
			t.Fatalf("\\d output: %+v", res)
		}
		same(t, "-c", `\dt`)
		same(t, "-c", `\l`)
	})

	t.Run("multi-statement", func(t *testing.T) {
		res := same(t, "-c", "SELECT 1 AS a; SELECT 'two' AS b, now() IS NOT NULL AS c; SELECT count(*), min(name) FROM psql_t WHERE note IS NULL")
		if res.Exit != 0 || !strings.Contains(res.Stdout, "100 | name 102") {
			t.Fatalf("multi-statement output: %+v", res)
		}
		res = same(t, "-c", "SELECT 1; SELECT 1/0; SELECT 3")
		if res.Exit == 0 || !strings.Contains(res.Stderr, "division by zero") {
			t.Fatalf("error output: %+v", res)
		}
	})

	t.Run("copy", func(t *testing.T) {
		dir := t.TempDir()
		out1, out2 := filepath.Join(dir, "direct.tsv"), filepath.Join(dir, "proxy.tsv")
		if r := runPsql(t, direct, "-c", fmt.Sprintf(`\copy (SELECT * FROM psql_t ORDER BY id) TO '%s'`, out1)); r.Exit != 0 {
			t.Fatalf("direct \\copy to: %+v", r)
		}
		if r := runPsql(t, proxied, "-c", fmt.Sprintf(`\copy (SELECT * FROM psql_t ORDER BY id) TO '%s'`, out2)); r.Exit != 0 {
			t.Fatalf("proxy \\copy to: %+v", r)
		}
		b1, _ := os.ReadFile(out1)
		b2, _ := os.ReadFile(out2)
		if len(b1) == 0 || !bytes.Equal(b1, b2) {
			t.Fatalf("\\copy TO output differs: direct %d bytes, proxy %d bytes", len(b1), len(b2))
		}
		r := runPsql(t, proxied, "-c", fmt.Sprintf(`\copy psql_copy FROM '%s'`, out2))
		if r.Exit != 0 || strings.TrimSpace(r.Stdout) != "COPY 300" {
			t.Fatalf("proxy \\copy from: %+v", r)
		}
		var diff int
		if err := su.QueryRow(ctx, "SELECT count(*) FROM ((TABLE psql_t EXCEPT TABLE psql_copy) UNION ALL (TABLE psql_copy EXCEPT TABLE psql_t)) d").Scan(&diff); err != nil || diff != 0 {
			t.Fatalf("copied table differs in %d rows (err %v)", diff, err)
		}
	})

	// psql (libpq) sends its CancelRequest in plaintext on a new connection
	// when it gets SIGINT.
	t.Run("cancel on SIGINT", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := psqlCmd(cctx, t, proxied+" application_name=psql_cancel_test", "-c", "SELECT pg_sleep(25)")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			var n int
			if err := su.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql_cancel_test' AND state = 'active'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("psql's query never became active; stderr: %s", stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		start := time.Now()
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if time.Since(start) > 10*time.Second {
			t.Errorf("psql took %v to stop after SIGINT", time.Since(start))
		}
		if err == nil || !strings.Contains(stderr.String(), "canceling statement due to user request") {
			t.Fatalf("psql after SIGINT: err=%v stderr=%q", err, stderr.String())
		}
	})
}
