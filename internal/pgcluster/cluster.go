// Package pgcluster starts a throwaway PostgreSQL server for integration
// tests, benchmarks and the demo: initdb into a temporary directory, a free
// 127.0.0.1 port, a Unix socket inside that directory, server TLS with a
// generated CA, every statement logged to a file, and one login role per
// password method (SCRAM-SHA-256, MD5, cleartext, trust).
//
// When run as root the server runs as the postgres OS user (PostgreSQL
// refuses to run as root), through `runuser -u postgres --`.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/novamind/phiproxy/policy"
)

// Role is a login role that the cluster creates, with the pg_hba method that
// authenticates it over TCP.
type Role struct {
	Name     string
	Password string
	Method   string // pg_hba auth method: scram-sha-256 | md5 | password | trust
}

// The roles every cluster has. Superuser is also trusted over the Unix socket.
var (
	Superuser    = Role{Name: "postgres", Password: "postgres-secret", Method: "scram-sha-256"}
	ScramUser    = Role{Name: "scram_user", Password: "scram-secret", Method: "scram-sha-256"}
	MD5User      = Role{Name: "md5_user", Password: "md5-secret", Method: "md5"}
	PasswordUser = Role{Name: "password_user", Password: "cleartext-secret", Method: "password"}
	TrustUser    = Role{Name: "trust_user", Method: "trust"}
)

// AppDatabase is a database owned by ScramUser, for test tables.
const AppDatabase = "app"

// Options configure Start. The zero value is usable.
type Options struct {
	// ServerName is an extra DNS name in the server certificate, beside
	// "localhost" and 127.0.0.1 (for example "db.internal").
	ServerName string
	// Settings are extra postgresql.conf lines ("name = value").
	Settings []string
	// Logf, if set, receives progress messages.
	Logf func(format string, args ...any)
}

// Cluster is a running PostgreSQL server. Stop it when done.
type Cluster struct {
	dir     string // root of everything; removed by Stop
	dataDir string
	sockDir string
	logFile string
	caFile  string
	binDir  string
	port    int
	asUser  string // OS user the server runs as via runuser, "" for the current user
	ca      *CA

	stopOnce sync.Once
	stopErr  error
}

// Start initializes and starts a new cluster. On error nothing is left
// running or on disk.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	asUser, uid, gid, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgcluster-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: temp dir: %w", err)
	}
	c := &Cluster{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		sockDir: filepath.Join(dir, "sock"),
		logFile: filepath.Join(dir, "postgresql.log"),
		caFile:  filepath.Join(dir, "ca.crt"),
		binDir:  binDir,
		asUser:  asUser,
	}
	defer func() {
		if err != nil {
			if log, lerr := c.LogContents(); lerr == nil && len(log) > 0 {
				err = fmt.Errorf("%w\n--- server log ---\n%s", err, lastLines(log, 30))
			}
			_ = c.Stop()
		}
	}()
	logf("pgcluster: initdb with %s into %s", binDir, dir)
	if err := c.prepare(ctx, opts, uid, gid); err != nil {
		return nil, err
	}
	// The port is chosen free but may be taken before the server binds it;
	// try a few times.
	for attempt := 1; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = c.run(ctx, "pg_ctl", "-D", c.dataDir, "-l", c.logFile, "-w", "-t", "60",
			"-o", fmt.Sprintf("-p %d", c.port), "start"); err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return nil, fmt.Errorf("pgcluster: start server: %w", err)
		}
	}
	logf("pgcluster: PostgreSQL listening on %s", c.Addr())
	if err := c.createRoles(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// prepare runs initdb, writes the TLS files, postgresql.conf and pg_hba.conf.
func (c *Cluster) prepare(ctx context.Context, opts Options, uid, gid int) error {
	if err := os.Mkdir(c.sockDir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: socket dir: %w", err)
	}
	ca, err := NewCA("pgcluster test CA", 30*24*time.Hour)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	c.ca = ca
	hosts := []string{"localhost", "127.0.0.1"}
	if opts.ServerName != "" {
		hosts = append(hosts, opts.ServerName)
	}
	certFile, keyFile := filepath.Join(c.dir, "server.crt"), filepath.Join(c.dir, "server.key")
	if err := ca.WriteServerFiles(c.caFile, certFile, keyFile, hosts, 30*24*time.Hour); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if c.asUser != "" {
		if err := chownTree(c.dir, uid, gid); err != nil {
			return err
		}
	}
	if err := c.run(ctx, "initdb", "-D", c.dataDir, "-U", Superuser.Name, "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return fmt.Errorf("pgcluster: initdb: %w", err)
	}
	conf := []string{
		"",
		"# pgcluster",
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = " + quoteConf(c.sockDir),
		"ssl = on",
		"ssl_cert_file = " + quoteConf(certFile),
		"ssl_key_file = " + quoteConf(keyFile),
		"ssl_ca_file = " + quoteConf(c.caFile),
		"password_encryption = 'scram-sha-256'",
		"logging_collector = off",
		"log_destination = 'stderr'",
		"log_statement = 'all'",
		"log_parameter_max_length = -1",
		"log_parameter_max_length_on_error = -1",
		"log_connections = on",
		"log_disconnections = on",
		"log_line_prefix = '%m [%p] %q%u@%d '",
		"max_connections = 100",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
	}
	conf = append(conf, opts.Settings...)
	if err := appendFile(filepath.Join(c.dataDir, "postgresql.conf"), strings.Join(conf, "\n")+"\n"); err != nil {
		return err
	}
	hba := []string{
		"# pgcluster: superuser over the Unix socket, one TCP line per role and method",
		"local all " + Superuser.Name + " trust",
	}
	for _, r := range []Role{TrustUser, MD5User, PasswordUser, ScramUser, Superuser} {
		// "host" matches both TLS and plaintext connections.
		hba = append(hba, fmt.Sprintf("host all %s 127.0.0.1/32 %s", r.Name, r.Method))
	}
	if err := os.WriteFile(filepath.Join(c.dataDir, "pg_hba.conf"), []byte(strings.Join(hba, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("pgcluster: write pg_hba.conf: %w", err)
	}
	if c.asUser != "" {
		// initdb made the data dir as the server user; the files just
		// written are root's.
		return chownTree(c.dir, uid, gid)
	}
	return nil
}

func (c *Cluster) createRoles(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.SuperuserDSN("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: connect as superuser: %w", err)
	}
	defer conn.Close(ctx)
	stmts := []string{
		fmt.Sprintf("ALTER ROLE %s PASSWORD %s", Superuser.Name, quoteLiteral(Superuser.Password)),
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", ScramUser.Name, quoteLiteral(ScramUser.Password)),
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", PasswordUser.Name, quoteLiteral(PasswordUser.Password)),
		fmt.Sprintf("CREATE ROLE %s LOGIN", TrustUser.Name),
		// An MD5 verifier needs password_encryption = md5 when it is set.
		"SET password_encryption = 'md5'",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", MD5User.Name, quoteLiteral(MD5User.Password)),
		"RESET password_encryption",
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", AppDatabase, ScramUser.Name),
	}
	// The catalog epoch of phiproxy (policy.EpochDDL), as `phiproxy
	// schema` has operators install it, in template1 before any database
	// is made from it, and in postgres.
	if err := InstallEpoch(ctx, conn); err != nil {
		return err
	}
	tc, err := pgx.Connect(ctx, c.SuperuserDSN("template1"))
	if err != nil {
		return fmt.Errorf("pgcluster: connect to template1: %w", err)
	}
	err = InstallEpoch(ctx, tc)
	tc.Close(ctx)
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("pgcluster: create roles: %w", err)
		}
	}
	return nil
}

// InstallEpoch runs policy.EpochDDL on conn's database (as a superuser).
func InstallEpoch(ctx context.Context, conn *pgx.Conn) error {
	for _, s := range policy.EpochDDL() {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("pgcluster: install phiproxy's catalog epoch: %w", err)
		}
	}
	return nil
}

// Stop shuts the server down (fast mode) and removes its directory. It is
// safe to call more than once and from a deferred cleanup.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			if err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
				errs = append(errs, fmt.Errorf("pgcluster: stop server: %w", err))
				c.killPostmaster()
			}
			cancel()
		}
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: remove %s: %w", c.dir, err))
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// StopServer stops the server (fast mode) and keeps its data directory:
// StartServer starts it again on the same port. For tests of what a
// client sees while its database is down.
func (c *Cluster) StopServer(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60", "stop")
}

// StartServer starts a server that StopServer stopped, on its port, and
// waits until it accepts connections.
func (c *Cluster) StartServer(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "-D", c.dataDir, "-l", c.logFile, "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d", c.port), "start")
}

// killPostmaster is the last resort when pg_ctl stop failed.
func (c *Cluster) killPostmaster() {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && pid > 0 {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

// Addr is the server's TCP address, 127.0.0.1:port.
func (c *Cluster) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)) }

// Port is the server's TCP port.
func (c *Cluster) Port() int { return c.port }

// SocketDir is the directory holding the server's Unix socket.
func (c *Cluster) SocketDir() string { return c.sockDir }

// DataDir is the server's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// BinDir is the directory of the server binaries in use.
func (c *Cluster) BinDir() string { return c.binDir }

// CAFile is the path of the CA certificate that signed the server's
// certificate (for sslrootcert and the proxy's upstream ca_file).
func (c *Cluster) CAFile() string { return c.caFile }

// CA is the certificate authority that signed the server's certificate.
func (c *Cluster) CA() *CA { return c.ca }

// LogFile is the path of the server log.
func (c *Cluster) LogFile() string { return c.logFile }

// LogContents returns the server log so far.
func (c *Cluster) LogContents() ([]byte, error) {
	b, err := os.ReadFile(c.logFile)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: read server log: %w", err)
	}
	return b, nil
}

// SuperuserDSN is a keyword/value connection string for the superuser over
// the Unix socket (trust).
func (c *Cluster) SuperuserDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.sockDir, c.port, Superuser.Name, db)
}

// DSN is a keyword/value connection string for role r to database db over
// TCP. sslmode is a libpq mode; with verify-ca and verify-full the
// cluster's CA is the root.
func (c *Cluster) DSN(r Role, db, sslmode string) string {
	return DSN("127.0.0.1", c.port, r, db, sslmode, c.caFile)
}

// DSN builds a keyword/value connection string (libpq, pgx and lib/pq all
// read this form). rootCert is used only with sslmode verify-ca/verify-full.
func DSN(host string, port int, r Role, db, sslmode, rootCert string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "host=%s port=%d user=%s dbname=%s sslmode=%s", host, port, r.Name, db, sslmode)
	if r.Password != "" {
		fmt.Fprintf(&b, " password=%s", quoteDSN(r.Password))
	}
	if rootCert != "" && strings.HasPrefix(sslmode, "verify-") {
		fmt.Fprintf(&b, " sslrootcert=%s", quoteDSN(rootCert))
	}
	return b.String()
}

// run runs a server binary, as the server user when root.
func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	path := filepath.Join(c.binDir, name)
	var cmd *exec.Cmd
	if c.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	// The server user must be able to read its working directory.
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// serverUser decides which OS user runs the server: "" (the current user)
// unless we are root, then "postgres", created if missing.
func serverUser() (name string, uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return "", os.Getuid(), os.Getgid(), nil
	}
	const name0 = "postgres"
	u, err := user.Lookup(name0)
	if err != nil {
		// Debian's package creates this user; binaries installed another
		// way may not have.
		out, cerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name0).CombinedOutput()
		if cerr != nil {
			return "", 0, 0, fmt.Errorf("pgcluster: running as root needs an OS user %q for the server: useradd: %w: %s", name0, cerr, out)
		}
		if u, err = user.Lookup(name0); err != nil {
			return "", 0, 0, fmt.Errorf("pgcluster: look up user %q: %w", name0, err)
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return name0, uid, gid, nil
}

func chownTree(root string, uid, gid int) error {
	err := filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("pgcluster: chown %s: %w", root, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: open %s: %w", filepath.Base(path), err)
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return fmt.Errorf("pgcluster: write %s: %w", filepath.Base(path), err)
	}
	return f.Close()
}

func quoteConf(s string) string    { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func quoteDSN(s string) string {
	if s != "" && !strings.ContainsAny(s, ` '\`) {
		return s
	}
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, `'`, `\'`) + "'"
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
