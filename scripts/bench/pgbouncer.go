package main

// PgBouncer as the reference middlebox.

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
	"syscall"
	"time"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// startPgBouncer runs PgBouncer in session mode in front of cluster, as the
// postgres OS user when root (PgBouncer refuses to run as root).
func startPgBouncer(ctx context.Context, cluster *pgcluster.Cluster, r pgcluster.Role) (stop func(), port int, err error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			return nil, 0, errors.New("pgbouncer is not installed (apt-get install -y pgbouncer)")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	dir, err := os.MkdirTemp("", "pgbouncer-bench-")
	if err != nil {
		return nil, 0, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, err
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	ini := fmt.Sprintf(`[databases]
%[1]s = host=127.0.0.1 port=%[2]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[3]d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %[4]s/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = %[4]s/pgbouncer.log
pidfile = %[4]s/pgbouncer.pid
server_tls_sslmode = disable
`, pgcluster.AppDatabase, cluster.Port(), port, dir)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o600); err != nil {
		return nil, 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), fmt.Appendf(nil, "%q %q\n", r.Name, r.Password), 0o600); err != nil {
		return nil, 0, err
	}
	cmd := exec.CommandContext(ctx, bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, 0, fmt.Errorf("pgbouncer needs a non-root user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Pdeathsig: syscall.SIGTERM}
	}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start pgbouncer: %w", err)
	}
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			return stop, port, nil
		}
		if i == 50 {
			stop()
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			return nil, 0, fmt.Errorf("pgbouncer did not start: %s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
