package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
)

// TestAuthMethods logs in through the proxy with each password method; the
// server sees each user's own role and a TLS connection from the proxy.
func TestAuthMethods(t *testing.T) {
	p := startProxy(t)
	for _, r := range []pgcluster.Role{pgcluster.ScramUser, pgcluster.MD5User, pgcluster.PasswordUser, pgcluster.TrustUser, pgcluster.Superuser} {
		t.Run(r.Method+"/"+r.Name, func(t *testing.T) {
			// pgx prefers SCRAM-SHA-256-PLUS when offered over TLS: this
			// fails unless the proxy strips it from the mechanism list.
			conn := connect(t, p.dsn(r, pgcluster.AppDatabase))
			var user string
			var ssl bool
			if err := conn.QueryRow(context.Background(), "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &ssl); err != nil {
				t.Fatal(err)
			}
			if user != r.Name || !ssl {
				t.Fatalf("server sees user %q ssl=%v, want %q over TLS", user, ssl, r.Name)
			}
		})
	}

	t.Run("channel binding required is refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase)+" channel_binding=require")
		if err == nil {
			conn.Close(ctx)
			t.Fatal("channel_binding=require succeeded through a TLS-terminating proxy")
		}
		if !strings.Contains(err.Error(), "channel binding") {
			t.Fatalf("error %v, want one about channel binding", err)
		}
	})
}

// TestWrongPassword: the client gets the server's own error and the proxy
// keeps no session.
func TestWrongPassword(t *testing.T) {
	p := startProxy(t)
	ctx := context.Background()
	for _, r := range []pgcluster.Role{pgcluster.ScramUser, pgcluster.MD5User, pgcluster.PasswordUser} {
		t.Run(r.Method, func(t *testing.T) {
			bad := r
			bad.Password = "wrong-" + r.Password
			var errs [2]string
			for i, dsn := range []string{directDSN(bad, pgcluster.AppDatabase), p.dsn(bad, pgcluster.AppDatabase)} {
				conn, err := pgx.Connect(ctx, dsn)
				if err == nil {
					conn.Close(ctx)
					t.Fatalf("connected with a wrong password (%s)", dsn)
				}
				errs[i] = errString(err)
			}
			if errs[0] != errs[1] || !strings.Contains(errs[1], "28P01") {
				t.Fatalf("wrong password: direct %q, proxy %q; want the same 28P01 error", errs[0], errs[1])
			}
		})
	}

	t.Run("connection closed after the error", func(t *testing.T) {
		conn := dialProxyTLS(t, p)
		fe := pgproto3.NewFrontend(conn, conn)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{
			"user": pgcluster.PasswordUser.Name, "database": pgcluster.AppDatabase,
		}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
			t.Fatalf("got %T, want AuthenticationCleartextPassword", msg)
		}
		fe.Send(&pgproto3.PasswordMessage{Password: "wrong"})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err = fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); !ok || e.Code != "28P01" || e.Severity != "FATAL" {
			t.Fatalf("got %#v, want FATAL 28P01", msg)
		}
		// No session: a query gets nothing back and the connection ends.
		fe.Send(&pgproto3.Query{String: "SELECT 1"})
		_ = fe.Flush()
		if msg, err := fe.Receive(); err == nil {
			t.Fatalf("after a failed login the proxy answered %T", msg)
		}
	})

	var n int
	if err := superuser(t).QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename IN ($1, $2, $3)",
		pgcluster.ScramUser.Name, pgcluster.MD5User.Name, pgcluster.PasswordUser.Name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d server sessions left after failed logins", n)
	}
}

// TestNoSecretsInLogs: passwords, literals and parameters never reach the
// proxy's log.
func TestNoSecretsInLogs(t *testing.T) {
	p := startProxy(t)
	ctx := context.Background()
	conn := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	if _, err := conn.Exec(ctx, "SELECT 'literal-marker-4411'"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT $1::text", "param-marker-8822"); err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Exec(ctx, "SELECT 'error-marker-9933'::int")
	bad := pgcluster.MD5User
	bad.Password = "wrong-password-marker-5544"
	if c, err := pgx.Connect(ctx, p.dsn(bad, pgcluster.AppDatabase)); err == nil {
		c.Close(ctx)
	}
	pw := connect(t, p.dsn(pgcluster.PasswordUser, pgcluster.AppDatabase))
	pw.Close(ctx)
	conn.Close(ctx)
	time.Sleep(100 * time.Millisecond)
	logs := p.logs.String()
	for _, secret := range []string{"literal-marker-4411", "param-marker-8822", "error-marker-9933", "wrong-password-marker-5544",
		pgcluster.ScramUser.Password, pgcluster.MD5User.Password, pgcluster.PasswordUser.Password} {
		if strings.Contains(logs, secret) {
			t.Errorf("proxy log contains %q:\n%s", secret, logs)
		}
	}
	if logs == "" {
		t.Error("the proxy logged nothing at all (want at least session open/close)")
	}
}

// dialProxyTLS opens a TCP connection to the proxy, sends SSLRequest and
// completes the TLS handshake, verifying the proxy's certificate.
func dialProxyTLS(t *testing.T, p *testProxy) net.Conn {
	t.Helper()
	conn := dialProxy(t, p)
	buf, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	if _, err := conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != 'S' {
		t.Fatalf("SSLRequest answer %q, %v; want 'S'", b[0], err)
	}
	tc := tls.Client(conn, proxyTLSConfig(t))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake with the proxy: %v", err)
	}
	return tc
}

func dialProxy(t *testing.T, p *testProxy) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(p.host, fmt.Sprint(p.port)), 5*time.Second)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return conn
}

func proxyTLSConfig(t *testing.T) *tls.Config {
	pem, err := os.ReadFile(proxyCAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{ServerName: "localhost", RootCAs: pool}
}

// readUntilClosed reads until EOF and returns what came, failing if the peer
// keeps the connection open.
func readUntilClosed(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the proxy kept the connection open (read %q)", b)
	}
	return b
}
