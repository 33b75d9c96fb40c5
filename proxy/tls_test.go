package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key and
// returns their paths and a pool trusting it.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "phiproxy test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func sslRequest(t *testing.T, conn net.Conn) byte {
	t.Helper()
	var req [8]byte
	binary.BigEndian.PutUint32(req[:4], 8)
	binary.BigEndian.PutUint32(req[4:], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

func TestClientTLS(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if serverStartup(t, be) {
			drain(be)
		}
	})
	certFile, keyFile, pool := writeCert(t)
	cfg := testConfig(up.addr)
	cfg.Listen.TLS = ListenTLSConfig{CertFile: certFile, KeyFile: keyFile}
	srv := startServer(t, cfg)

	t.Run("plaintext refused", func(t *testing.T) {
		c := dial(t, srv.Addr())
		c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
		if er := c.receiveFatal(t); er.Code != pgerrcode.InvalidAuthorizationSpecification {
			t.Errorf("code %s %q, want 28000", er.Code, er.Message)
		}
	})
	t.Run("GSSENCRequest then TLS 1.3", func(t *testing.T) {
		c := dial(t, srv.Addr())
		var req [8]byte
		binary.BigEndian.PutUint32(req[:4], 8)
		binary.BigEndian.PutUint32(req[4:], gssEncRequestCode)
		c.conn.Write(req[:])
		var b [1]byte
		if _, err := c.conn.Read(b[:]); err != nil || b[0] != 'N' {
			t.Fatalf("GSSENCRequest answer %q, %v; want N", b[0], err)
		}
		if a := sslRequest(t, c.conn); a != 'S' {
			t.Fatalf("SSLRequest answer %q, want S", a)
		}
		tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("TLS version %x, want 1.3", v)
		}
		fe := pgproto3.NewFrontend(tc, tc)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
		fe.Flush()
		c2 := &client{conn: tc, fe: fe}
		c2.receiveUntilReady(t)
		c2.send(t, &pgproto3.Terminate{})
	})
	t.Run("no session tickets", func(t *testing.T) {
		// PostgreSQL sends none (SSL_OP_NO_TICKET); a client that keeps
		// them gets none, so each connection makes a full handshake.
		cache := tls.NewLRUClientSessionCache(4)
		for i := range 2 {
			c := dial(t, srv.Addr())
			sslRequest(t, c.conn)
			tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", ClientSessionCache: cache})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			fe := pgproto3.NewFrontend(tc, tc)
			fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
			fe.Flush()
			c2 := &client{conn: tc, fe: fe}
			c2.receiveUntilReady(t) // a ticket would have come with the first records
			if tc.ConnectionState().DidResume {
				t.Errorf("connection %d resumed a session", i)
			}
			c2.send(t, &pgproto3.Terminate{})
		}
		if _, ok := cache.Get("127.0.0.1"); ok {
			t.Error("the client was given a session ticket")
		}
	})
	t.Run("TLS 1.2 client refused", func(t *testing.T) {
		c := dial(t, srv.Addr())
		sslRequest(t, c.conn)
		before := testutil.ToFloat64(srv.metrics.TLSHandshakeFailure.WithLabelValues("client"))
		tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12})
		if err := tc.Handshake(); err == nil {
			t.Fatal("TLS 1.2 handshake succeeded with min_version 1.3")
		}
		deadline := time.Now().Add(2 * time.Second)
		for testutil.ToFloat64(srv.metrics.TLSHandshakeFailure.WithLabelValues("client")) != before+1 {
			if time.Now().After(deadline) {
				t.Fatal("TLS handshake failure not counted")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// TestMutualTLS: with client_ca_file set, a client without a certificate
// signed by it cannot complete the handshake.
func TestMutualTLS(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	cfg := testConfig("127.0.0.1:1")
	cfg.Listen.TLS = ListenTLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: certFile, MinVersion: "1.2"}
	srv := startServer(t, cfg)
	for _, tc := range []struct {
		name    string
		certs   []tls.Certificate
		succeed bool
	}{
		{"no client certificate", nil, false},
		{"trusted client certificate", []tls.Certificate{mustKeyPair(t, certFile, keyFile)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv.Addr())
			sslRequest(t, c.conn)
			tc2 := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: tc.certs, MaxVersion: tls.VersionTLS12})
			// Accepted means the session goes on to the (unreachable)
			// upstream and answers the startup with an ErrorResponse.
			accepted := false
			if err := tc2.Handshake(); err == nil {
				fe := pgproto3.NewFrontend(tc2, tc2)
				fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
				if fe.Flush() == nil {
					msg, err := fe.Receive()
					_, accepted = msg.(*pgproto3.ErrorResponse)
					accepted = accepted && err == nil
				}
			}
			if accepted != tc.succeed {
				t.Errorf("accepted = %v, want %v", accepted, tc.succeed)
			}
		})
	}
}

func mustKeyPair(t *testing.T, certFile, keyFile string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestUpstreamTLSRefused: an upstream that answers SSLRequest with N is
// refused, never used in plaintext.
func TestUpstreamTLSRefused(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		var req [8]byte
		conn.Read(req[:])
		conn.Write([]byte{'N'})
		var b [1]byte
		if n, _ := conn.Read(b[:]); n > 0 {
			t.Error("proxy sent plaintext after the upstream refused TLS")
		}
	})
	cfg := testConfig(up.addr)
	cfg.Upstream.TLS.Mode = TLSModeRequire
	srv := startServer(t, cfg)
	c := dial(t, srv.Addr())
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
	if er := c.receiveFatal(t); er.Code != pgerrcode.SQLClientUnableToEstablishSQLConnection {
		t.Errorf("code %s, want 08001", er.Code)
	}
}
