package integration

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

// Roles of the authentication tests, created once per test binary by
// authRoles (with their pg_hba.conf lines).
var (
	// authUserRole is a non-superuser auth_user: it reads secrets only
	// through the SECURITY DEFINER function phiproxy_auth.lookup.
	authUserRole = pgcluster.Role{Name: "vf_auth", Password: "vf-auth-secret", Method: "scram-sha-256"}
	// cacheRole's password the cache tests change.
	cacheRole = pgcluster.Role{Name: "cache_user", Password: "cache-secret-1", Method: "scram-sha-256"}
	// md5InScramRole has an MD5 hash under a scram-sha-256 pg_hba line:
	// PostgreSQL itself refuses it.
	md5InScramRole = pgcluster.Role{Name: "md5_in_scram", Password: "md5-in-scram-secret", Method: "scram-sha-256"}
	// noPasswordRole has no password under a scram-sha-256 line.
	noPasswordRole = pgcluster.Role{Name: "no_password", Password: "anything", Method: "scram-sha-256"}
	// ghostRole has a pg_hba line but does not exist.
	ghostRole = pgcluster.Role{Name: "ghost_role", Password: "boo", Method: "scram-sha-256"}
	// certRole logs in by certificate: pg_hba says cert, and pg_ident maps
	// the proxy's client certificate (CN proxyClientCN) to it.
	certRole = pgcluster.Role{Name: "cert_role", Method: "cert"}
)

// proxyClientCN is the common name of the proxy's own client certificate.
const proxyClientCN = "phiproxy-client"

// lookupQuery reads secrets as authUserRole may.
const lookupQuery = "SELECT rolname, rolpassword FROM phiproxy_auth.lookup($1)"

var authRolesOnce struct {
	sync.Once
	err error
}

// authRoles creates the roles above, the lookup function and their
// pg_hba.conf and pg_ident.conf lines, once.
func authRoles(t *testing.T) {
	t.Helper()
	authRolesOnce.Do(func() { authRolesOnce.err = createAuthRoles() })
	if authRolesOnce.err != nil {
		t.Fatalf("create authentication roles: %v", authRolesOnce.err)
	}
}

func createAuthRoles() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	su, err := pgx.Connect(ctx, cluster.SuperuserDSN("postgres"))
	if err != nil {
		return err
	}
	defer su.Close(ctx)
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	for _, s := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", authUserRole.Name, q(authUserRole.Password)),
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", cacheRole.Name, q(cacheRole.Password)),
		"SET password_encryption = 'md5'",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", md5InScramRole.Name, q(md5InScramRole.Password)),
		"RESET password_encryption",
		fmt.Sprintf("CREATE ROLE %s LOGIN", noPasswordRole.Name),
		fmt.Sprintf("CREATE ROLE %s LOGIN", certRole.Name),
		// What the README recommends instead of a superuser auth_user.
		`CREATE SCHEMA phiproxy_auth`,
		`CREATE FUNCTION phiproxy_auth.lookup(role_name text)
			RETURNS TABLE (rolname text, rolpassword text)
			LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
			AS $$ SELECT rolname::text, rolpassword FROM pg_catalog.pg_authid WHERE rolname = role_name $$`,
		`REVOKE ALL ON FUNCTION phiproxy_auth.lookup(text) FROM PUBLIC`,
		fmt.Sprintf(`GRANT USAGE ON SCHEMA phiproxy_auth TO %s`, authUserRole.Name),
		fmt.Sprintf(`GRANT EXECUTE ON FUNCTION phiproxy_auth.lookup(text) TO %s`, authUserRole.Name),
	} {
		if _, err := su.Exec(ctx, s); err != nil {
			return fmt.Errorf("%.60s: %w", s, err)
		}
	}
	var hba []string
	for _, r := range []pgcluster.Role{authUserRole, cacheRole, md5InScramRole, noPasswordRole, ghostRole} {
		hba = append(hba, fmt.Sprintf("host all %s 127.0.0.1/32 %s", r.Name, r.Method))
	}
	hba = append(hba, fmt.Sprintf("hostssl all %s 127.0.0.1/32 cert map=phiproxy", certRole.Name))
	if err := appendConf("pg_hba.conf", hba); err != nil {
		return err
	}
	if err := appendConf("pg_ident.conf", []string{fmt.Sprintf("phiproxy %s %s", proxyClientCN, certRole.Name)}); err != nil {
		return err
	}
	var ok bool
	if err := su.QueryRow(ctx, "SELECT pg_reload_conf()").Scan(&ok); err != nil || !ok {
		return fmt.Errorf("pg_reload_conf: %v %v", ok, err)
	}
	// The postmaster rereads pg_hba.conf on SIGHUP: wait until it has.
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := pgx.Connect(ctx, cluster.DSN(cacheRole, "postgres", "require"))
		if err == nil {
			c.Close(ctx)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pg_hba.conf not reloaded: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func appendConf(name string, lines []string) error {
	f, err := os.OpenFile(filepath.Join(cluster.DataDir(), name), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("\n# phiproxy authentication tests\n" + strings.Join(lines, "\n") + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startProxyReg is startProxy with a registry the test reads.
func startProxyReg(t *testing.T, mutate ...func(*proxy.Config)) (*testProxy, *prometheus.Registry) {
	t.Helper()
	cfg := baseConfig()
	for _, f := range mutate {
		f(&cfg)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	srv, err := proxy.New(cfg, logger, reg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	return runProxy(t, srv, logs), reg
}

// metricValue is the value of the counter (or histogram count) name with
// the given label value ("" for none).
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return 0
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tryConnect connects with pgx and returns the error rendered by
// errString, "" on success (the connection is closed).
func tryConnect(t *testing.T, dsn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return errString(err)
	}
	conn.Close(ctx)
	return ""
}

// scramSaltSeen starts a SCRAM exchange as role r at addr (TLS when
// tlsCfg is set) and returns the salt and iteration count of the
// server-first-message, abandoning the exchange.
func scramSaltSeen(t *testing.T, addr string, tlsCfg *tls.Config, r pgcluster.Role) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var c net.Conn = conn
	if tlsCfg != nil {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:4], 8)
		binary.BigEndian.PutUint32(req[4:8], 80877103)
		if _, err := conn.Write(req[:]); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != 'S' {
			t.Fatalf("SSLRequest: %q %v", b, err)
		}
		tc := tls.Client(conn, tlsCfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c = tc
	}
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": r.Name, "database": "postgres"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok {
		t.Fatalf("got %#v, want AuthenticationSASL", msg)
	}
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abcdefghijklmnop")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err = fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatalf("got %#v, want AuthenticationSASLContinue", msg)
	}
	_, saltIter, _ := strings.Cut(string(cont.Data), ",s=")
	return saltIter
}

// startMITM is a man in the middle between a client and addr (the proxy):
// it ends the client's TLS with a certificate of its own, which a client
// with sslmode=require accepts, and relays the bytes over its own TLS
// connection to addr. It returns its port.
func startMITM(t *testing.T, addr string) int {
	t.Helper()
	ca, err := pgcluster.NewCA("mitm CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer client.Close()
				var req [8]byte
				if _, err := io.ReadFull(client, req[:]); err != nil {
					return
				}
				client.Write([]byte{'S'})
				ct := tls.Server(client, &tls.Config{Certificates: []tls.Certificate{cert}})
				if ct.Handshake() != nil {
					return
				}
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				up.Write(req[:])
				var b [1]byte
				if _, err := io.ReadFull(up, b[:]); err != nil || b[0] != 'S' {
					return
				}
				ut := tls.Client(up, &tls.Config{InsecureSkipVerify: true})
				if ut.Handshake() != nil {
					return
				}
				go io.Copy(ut, ct)
				io.Copy(ct, ut)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeFileT(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
