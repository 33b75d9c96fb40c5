package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/novamind/phiproxy/crypto"
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
	var printed strings.Builder
	timeout := time.After(2 * time.Minute)
	for dsn == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("demo ended before printing the psql command: %v\n%s", <-done, stderr.String())
			}
			printed.WriteString(line + "\n")
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
	if !regexp.MustCompile(`(?m)^  email +` + regexp.QuoteMeta(demoPatients[0].email) + ` +phi1:\S+`).MatchString(printed.String()) {
		t.Errorf("demo did not print the sample email beside its ciphertext:\n%s", printed.String())
	}
	for _, f := range []string{"proxy-ca.crt", "proxy.crt", "proxy.key", "master.key", "keyring.json"} {
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

// TestDemoPHI runs the demo's steps against a real PostgreSQL and checks
// what it shows: the application's view is plaintext, PostgreSQL holds
// only ciphertext and blind indexes (and refuses plaintext by itself), a
// LIKE through the proxy is refused with 0A000, and a second run reuses
// the keys and tolerates existing tables.
func TestDemoPHI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	d, err := startDemo(ctx, demoOptions{dir: dir, listen: "127.0.0.1:0", metrics: "127.0.0.1:0", stdout: &out, logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close(io.Discard)
	env := d.env
	for _, f := range []string{"master.key", "keyring.json"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("demo did not create %s: %v", f, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", f, fi.Mode().Perm())
		}
	}

	proxied := demoConnect(ctx, t, env.proxyDSN())
	direct := demoConnect(ctx, t, env.directDSN())
	want := demoPatients[0]

	t.Run("app view is plaintext", func(t *testing.T) {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			var first, last, email string
			var dob time.Time
			err := proxied.QueryRow(ctx, "SELECT first_name, last_name, email, date_of_birth FROM patients WHERE email = $1", mode, want.email).
				Scan(&first, &last, &email, &dob)
			if err != nil {
				t.Fatalf("%v: %v", mode, err)
			}
			if diff := cmp.Diff([]string{want.first, want.last, want.email, want.dob.Format(time.DateOnly)},
				[]string{first, last, email, dob.Format(time.DateOnly)}); diff != "" {
				t.Errorf("%v: through the proxy (-want +got):\n%s", mode, diff)
			}
		}
		var diagnosis string
		if err := proxied.QueryRow(ctx, "SELECT n.diagnosis FROM clinical_notes n JOIN patients p ON p.id = n.patient_id WHERE p.email = $1", want.email).
			Scan(&diagnosis); err != nil || diagnosis != demoNotes[0].diagnosis {
			t.Errorf("note of the first patient: %q, %v; want %q", diagnosis, err, demoNotes[0].diagnosis)
		}
	})

	t.Run("stored row is ciphertext", func(t *testing.T) {
		var plain []string
		for _, p := range demoPatients {
			plain = append(plain, p.first, p.last, p.email, p.ssn, p.phone, p.street, p.city, p.postal)
		}
		for _, n := range demoNotes {
			plain = append(plain, n.diagnosis, n.medication, n.treatment)
		}
		counts := map[string]int{}
		for _, tbl := range env.policy.Tables() {
			var cols []string
			for _, c := range tbl.Columns {
				cols = append(cols, c.Name)
				if c.Indexed() {
					cols = append(cols, c.BlindIndex.Column)
				}
			}
			rows, err := direct.Query(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+tbl.QualifiedName())
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				counts[tbl.Name]++
				vals := make([]*string, len(cols))
				dest := make([]any, len(cols))
				for i := range vals {
					dest[i] = &vals[i]
				}
				if err := rows.Scan(dest...); err != nil {
					t.Fatal(err)
				}
				i := 0
				for _, c := range tbl.Columns {
					v := vals[i]
					i++
					if v != nil && !crypto.IsCiphertext([]byte(*v)) {
						t.Errorf("%s holds a value that is not ciphertext", c.QualifiedName())
					}
					if v != nil {
						for _, p := range plain {
							// A short value (a first name of three letters)
							// turns up by chance in a long base64 ciphertext.
							if len(p) >= 8 && strings.Contains(*v, p) {
								t.Errorf("%s holds a sample value in plaintext", c.QualifiedName())
							}
						}
					}
					if c.Indexed() {
						idx := vals[i]
						i++
						if (v == nil) != (idx == nil) || (idx != nil && (*idx == "" || strings.HasPrefix(*idx, crypto.TextPrefix))) {
							t.Errorf("%s: blind index %v for value present=%v", c.BlindIndex.Column, idx, v != nil)
						}
					}
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
		}
		if counts["patients"] != len(demoPatients) || counts["clinical_notes"] != len(demoNotes) {
			t.Errorf("stored rows: %v, want %d patients and %d notes", counts, len(demoPatients), len(demoNotes))
		}

		// What the demo printed is what is stored.
		v, err := demoReadRow(ctx, env, want.email)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range v.stored[:4] {
			if !crypto.IsCiphertext([]byte(s)) || !strings.Contains(out.String(), truncate(s, 40)) {
				t.Errorf("printed stored column %d: %q not shown as ciphertext in:\n%s", i, truncate(s, 40), out.String())
			}
		}
		if !strings.Contains(out.String(), v.stored[4]) {
			t.Errorf("demo did not print the blind index %q", v.stored[4])
		}
		for _, s := range v.app {
			if !strings.Contains(out.String(), s) {
				t.Errorf("demo did not print the application's value %q", s)
			}
		}
	})

	t.Run("database refuses plaintext", func(t *testing.T) {
		_, err := direct.Exec(ctx, "INSERT INTO patients (first_name) VALUES ('Not Encrypted')")
		if code := sqlState(err); code != "23514" {
			t.Errorf("plaintext insert past the proxy: %v, want check_violation 23514", err)
		}
	})

	t.Run("LIKE refused", func(t *testing.T) {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			rows, err := proxied.Query(ctx, "SELECT * FROM patients WHERE email LIKE 'a%'", mode)
			if err == nil {
				rows.Close()
				err = rows.Err()
			}
			if code := sqlState(err); code != "0A000" {
				t.Errorf("%v: LIKE on email through the proxy: %v, want SQLSTATE 0A000", mode, err)
			}
		}
	})

	t.Run("steps again", func(t *testing.T) {
		var out2 strings.Builder
		env.stdout = &out2
		for _, step := range append([]func(context.Context, *demoEnv) error{demoSchema}, demoLiveSteps...) {
			if err := step(ctx, env); err != nil {
				t.Fatalf("demo step on existing tables: %v", err)
			}
		}
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM patients").Scan(&n); err != nil || n != len(demoPatients) {
			t.Errorf("patients after a second run: %d, %v; want %d", n, err, len(demoPatients))
		}
	})

	// A second demo in the same directory reuses the master key and keyring.
	master, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	id := env.keyring.ID()
	proxied.Close(ctx)
	direct.Close(ctx)
	d.close(io.Discard)
	var out3 strings.Builder
	d2, err := startDemo(ctx, demoOptions{dir: dir, listen: "127.0.0.1:0", metrics: "127.0.0.1:0", stdout: &out3, logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("second run in the same directory: %v", err)
	}
	defer d2.close(io.Discard)
	master2, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	if d2.env.keyring.ID() != id || string(master2) != string(master) {
		t.Errorf("second run did not reuse the keyring (%s, was %s) or the master key", d2.env.keyring.ID(), id)
	}
	if strings.Contains(out3.String(), "Created") || !strings.Contains(out3.String(), "phi1:") {
		t.Errorf("second run's output:\n%s", out3.String())
	}
}

func demoConnect(ctx context.Context, t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// sqlState returns the SQLSTATE of a server error, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestDemoStopsOnSignals runs the demo binary as make demo does and stops
// it with SIGHUP (a closed terminal) and SIGTERM: each time it removes
// its database and exits.
func TestDemoStopsOnSignals(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "phiproxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(bin, "demo", "--dir", filepath.Join(t.TempDir(), "demo"), "--metrics", "127.0.0.1:0")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = io.Discard
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			logRE := regexp.MustCompile(`its log: (\S+)/postgresql\.log`)
			var dataDir string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if m := logRE.FindStringSubmatch(sc.Text()); m != nil {
					dataDir = m[1]
				}
				if strings.Contains(sc.Text(), "Press Ctrl-C to stop") {
					break
				}
			}
			if dataDir == "" {
				t.Fatal("the demo did not print its banner")
			}
			go io.Copy(io.Discard, out)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("demo exited with %v after %v", err, sig)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("demo did not stop within 60 s of %v", sig)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the demo's database %s is still there after %v (%v)", dataDir, sig, err)
			}
		})
	}
}
