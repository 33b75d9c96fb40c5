package main

// PgBouncer as the reference middlebox, configured as phiproxy is measured:
// TLS to its clients and verified TLS to PostgreSQL, and SCRAM-SHA-256
// end to end. PgBouncer 1.18 (Debian 12) can log in to the server with
// SCRAM only by pass-through: its auth_file must hold the role's verifier
// exactly as the server stores it (same salt and iterations), and then it
// reuses the ClientKey the client proved (pgbouncer(5), "Authentication
// file format"). So the auth_file is read from pg_authid, and no password
// is written anywhere.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// bouncer is a running PgBouncer child process.
type bouncer struct {
	cmd  *exec.Cmd
	dir  string // its ini, auth_file, TLS files and log; removed by stop
	port int
}

// pid is PgBouncer's process ID (it runs in one process, not forked).
func (b *bouncer) pid() int { return b.cmd.Process.Pid }

func (b *bouncer) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGINT)
	_ = b.cmd.Wait()
	os.RemoveAll(b.dir)
}

// startPgBouncer runs PgBouncer in session mode in front of cluster's app
// database for role r, accepting up to maxClients clients, each of which
// may hold its own server connection. It runs as the postgres OS user when
// root (PgBouncer refuses to run as root).
func startPgBouncer(ctx context.Context, cluster *pgcluster.Cluster, r pgcluster.Role, maxClients int) (_ *bouncer, err error) {
	bin, err := findPgBouncer()
	if err != nil {
		return nil, err
	}
	verifier, err := scramVerifier(ctx, cluster, r.Name)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgbouncer-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	certFile, keyFile, err := writeServerCert(dir, "pgbouncer")
	if err != nil {
		return nil, err
	}
	// A copy of the cluster's CA, readable by the postgres user.
	caFile := filepath.Join(dir, "server-ca.crt")
	if err := os.WriteFile(caFile, cluster.CA().CertPEM, 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// Connection logging is off as phiproxy's is (it logs at Warn here),
	// so that -C measures the same work. TLS 1.3 on both legs, as phiproxy
	// (listen.tls.min_version 1.3; PostgreSQL 15 and Go negotiate 1.3).
	// verify-full checks the server certificate's 127.0.0.1 SAN.
	ini := fmt.Sprintf(`[databases]
%[1]s = host=127.0.0.1 port=%[2]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[3]d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %[4]s/userlist.txt
pool_mode = session
max_client_conn = %[5]d
default_pool_size = %[5]d
logfile = %[4]s/pgbouncer.log
pidfile = %[4]s/pgbouncer.pid
log_connections = 0
log_disconnections = 0
client_tls_sslmode = require
client_tls_cert_file = %[6]s
client_tls_key_file = %[7]s
client_tls_protocols = tlsv1.3
server_tls_sslmode = verify-full
server_tls_ca_file = %[8]s
server_tls_protocols = tlsv1.3
`, pgcluster.AppDatabase, cluster.Port(), port, dir, maxClients, certFile, keyFile, caFile)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o600); err != nil {
		return nil, err
	}
	userlist := fmt.Sprintf("%s %s\n", authFileQuote(r.Name), authFileQuote(verifier))
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgbouncer needs a non-root user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Pdeathsig: syscall.SIGTERM}
	}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pgbouncer: %w", err)
	}
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	b := &bouncer{cmd: cmd, dir: dir, port: port}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			return b, nil
		}
		if i == 50 {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, fmt.Errorf("pgbouncer did not start: %s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findPgBouncer is the path of the pgbouncer binary: on PATH, or where
// Debian puts it (/usr/sbin is not on every PATH).
func findPgBouncer() (string, error) {
	if bin, err := exec.LookPath("pgbouncer"); err == nil {
		return bin, nil
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err != nil {
		return "", errors.New("pgbouncer is not installed (apt-get install -y pgbouncer)")
	}
	return "/usr/sbin/pgbouncer", nil
}

// scramVerifier is role's password verifier as PostgreSQL stores it,
// SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>.
func scramVerifier(ctx context.Context, cluster *pgcluster.Cluster, role string) (string, error) {
	c, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var v string
	if err := c.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&v); err != nil {
		return "", fmt.Errorf("verifier of %s: %w", role, err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$") {
		return "", fmt.Errorf("role %s has no SCRAM-SHA-256 verifier", role)
	}
	return v, nil
}

// authFileQuote quotes s for PgBouncer's auth_file: double quotes, with
// a double quote written twice.
func authFileQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeServerCert writes a certificate for localhost and 127.0.0.1, issued
// by a fresh CA (pgcluster's helpers), and its key into dir as name.crt and
// name.key. Clients use sslmode=require, so the CA is not written.
func writeServerCert(dir, name string) (certFile, keyFile string, err error) {
	ca, err := pgcluster.NewCA("bench "+name+" CA", 24*time.Hour)
	if err != nil {
		return "", "", err
	}
	certPEM, keyPEM, err := ca.Issue([]string{"localhost", "127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// closeIdleBackends ends the role's idle backends: between runs, those are
// PgBouncer's pooled server connections. A new backend costs PostgreSQL
// more per transaction for its first seconds (it maps shared buffers and
// fills its caches: measured 70 against 50 µs per select-only transaction
// in a 4 s window), which direct connections and phiproxy, one backend per
// client connection, pay in every run; closing them makes PgBouncer pay it
// too, so that the runs compare the relays and not the backends' age.
func closeIdleBackends(ctx context.Context, cluster *pgcluster.Cluster, r pgcluster.Role) error {
	c, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	// Wait for each to exit, then give PgBouncer a moment to read the
	// closed connections off its idle list.
	if _, err = c.Exec(ctx, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1 AND state = 'idle' AND pid <> pg_backend_pid()", r.Name); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	return nil
}
