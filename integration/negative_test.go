package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/proxy"
)

func TestPlaintextClientRefused(t *testing.T) {
	p := startProxy(t)
	ctx := context.Background()

	t.Run("pgx sslmode=disable", func(t *testing.T) {
		dsn := pgcluster.DSN("127.0.0.1", p.port, pgcluster.ScramUser, pgcluster.AppDatabase, "disable", "")
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn.Close(ctx)
			t.Fatal("a plaintext client was served")
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Severity != "FATAL" {
			t.Fatalf("got %v, want a FATAL error from the proxy", err)
		}
	})

	t.Run("raw startup without SSLRequest", func(t *testing.T) {
		conn := dialProxy(t, p)
		fe := pgproto3.NewFrontend(conn, conn)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{
			"user": pgcluster.TrustUser.Name, "database": pgcluster.AppDatabase,
		}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); !ok || e.Severity != "FATAL" || e.Message == "" {
			t.Fatalf("got %#v, want a FATAL ErrorResponse", msg)
		}
		readUntilClosed(t, conn)
	})

	t.Run("GSSENCRequest answered N, then TLS", func(t *testing.T) {
		conn := dialProxy(t, p)
		buf, _ := (&pgproto3.GSSEncRequest{}).Encode(nil)
		buf, _ = (&pgproto3.SSLRequest{}).Encode(buf)
		if _, err := conn.Write(buf); err != nil {
			t.Fatal(err)
		}
		var b [2]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil || string(b[:]) != "NS" {
			t.Fatalf("answers %q, %v; want N then S", b[:], err)
		}
		tc := tls.Client(conn, proxyTLSConfig(t))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS after GSSENCRequest: %v", err)
		}
	})

	t.Run("TLS 1.2 refused by default", func(t *testing.T) {
		conn := dialProxy(t, p)
		buf, _ := (&pgproto3.SSLRequest{}).Encode(nil)
		if _, err := conn.Write(buf); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != 'S' {
			t.Fatalf("SSLRequest answer %q, %v", b[0], err)
		}
		cfg := proxyTLSConfig(t)
		cfg.MaxVersion = tls.VersionTLS12
		if err := tls.Client(conn, cfg).Handshake(); err == nil {
			t.Fatal("TLS 1.2 handshake succeeded with min_version 1.3")
		}
	})
}

// checkStillServing fails unless the live session and a new one both work.
func checkStillServing(t *testing.T, p *testProxy, live *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := live.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("existing session after the bad one: %d, %v", n, err)
	}
	fresh := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	if err := fresh.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("new session after the bad one: %d, %v", n, err)
	}
}

func TestGarbageStartupPacket(t *testing.T) {
	p := startProxy(t)
	live := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	cases := []struct {
		name    string
		tls     bool
		payload []byte
	}{
		{"http request", false, []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")},
		{"length too short", false, []byte{0, 0, 0, 2, 0, 0, 0, 0}},
		{"length huge", false, []byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0}},
		{"unknown request code", false, []byte{0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78}},
		{"tls then unknown protocol", true, []byte{0, 0, 0, 8, 0, 9, 0, 0}},
		{"tls then unterminated parameters", true, []byte{0, 0, 0, 16, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 'x', 'y', 'z'}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var conn net.Conn
			if c.tls {
				conn = dialProxyTLS(t, p)
			} else {
				conn = dialProxy(t, p)
			}
			if _, err := conn.Write(c.payload); err != nil {
				t.Fatal(err)
			}
			readUntilClosed(t, conn)
			checkStillServing(t, p, live)
		})
	}
}

func TestGarbageMessageMidSession(t *testing.T) {
	p := startProxy(t)
	live := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	cases := []struct {
		name    string
		payload []byte
	}{
		{"oversized length", []byte{'Q', 0x7f, 0xff, 0xff, 0xff}},
		{"length below 4", []byte{'Q', 0, 0, 0, 2}},
		{"unknown message type", []byte{'!', 0, 0, 0, 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hc := rawSession(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
			if _, err := hc.Conn.Write(c.payload); err != nil {
				t.Fatal(err)
			}
			_ = hc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			var fatal *pgproto3.ErrorResponse
			for {
				msg, err := hc.Frontend.Receive()
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatal("the session stayed open after a malformed message")
					}
					break
				}
				if e, ok := msg.(*pgproto3.ErrorResponse); ok && e.Severity == "FATAL" {
					fatal = e
				}
			}
			if fatal == nil || fatal.Code != "08P01" {
				t.Errorf("got %#v before the close, want a FATAL 08P01 ErrorResponse", fatal)
			}
			checkStillServing(t, p, live)
		})
	}
}

func TestUpstreamTLS(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		upTLS   proxy.UpstreamTLSConfig
		wantErr bool
		wantSSL bool
	}{
		{"verify-full wrong server name", proxy.UpstreamTLSConfig{Mode: "verify-full", CAFile: cluster.CAFile(), ServerName: "wrong.example.com"}, true, false},
		{"verify-full wrong CA", proxy.UpstreamTLSConfig{Mode: "verify-full", CAFile: proxyCAFile, ServerName: upstreamServerName}, true, false},
		{"verify-full by address", proxy.UpstreamTLSConfig{Mode: "verify-full", CAFile: cluster.CAFile()}, false, true},
		{"verify-ca ignores the name", proxy.UpstreamTLSConfig{Mode: "verify-ca", CAFile: cluster.CAFile(), ServerName: "wrong.example.com"}, false, true},
		{"require", proxy.UpstreamTLSConfig{Mode: "require"}, false, true},
		{"disable", proxy.UpstreamTLSConfig{Mode: "disable"}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startProxy(t, func(cfg *proxy.Config) { cfg.Upstream.TLS = c.upTLS })
			conn, err := pgx.Connect(ctx, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
			if c.wantErr {
				if err == nil {
					conn.Close(ctx)
					t.Fatal("connected through an upstream whose certificate should be refused")
				}
				t.Logf("refused as expected: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer conn.Close(ctx)
			var ssl bool
			if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
				t.Fatal(err)
			}
			if ssl != c.wantSSL {
				t.Fatalf("upstream ssl = %v, want %v", ssl, c.wantSSL)
			}
		})
	}
}

func TestUpstreamDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	p := startProxy(t, func(cfg *proxy.Config) {
		cfg.Upstream.Address = dead
		cfg.Upstream.ConnectTimeout = 2 * time.Second
	})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("connected with the upstream down")
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Severity != "FATAL" {
		t.Errorf("got %v, want a FATAL ErrorResponse from the proxy", err)
	}
	if code := httpStatus(t, p, "/readyz"); code == http.StatusOK {
		t.Errorf("/readyz = 200 with the upstream down")
	}
	if code := httpStatus(t, p, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	p := startProxy(t)
	conn := connect(t, p.dsn(pgcluster.ScramUser, pgcluster.AppDatabase))
	if _, err := conn.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := httpStatus(t, p, path); code != http.StatusOK {
			t.Errorf("%s = %d, want 200", path, code)
		}
	}
	resp, err := http.Get("http://" + p.srv.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "phiproxy_") {
		t.Fatalf("/metrics = %d without phiproxy_ metrics:\n%s", resp.StatusCode, body)
	}
}

func httpStatus(t *testing.T, p *testProxy, path string) int {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s%s", p.srv.MetricsAddr(), path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
