package proxy

import (
	"crypto/tls"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// groupServer is an upstream that answers SSLRequest and makes TLS
// handshakes with the groups in curves, counting the bytes each handshake
// read from the client.
type groupServer struct {
	addr   string
	curves atomic.Pointer[[]tls.CurveID]
	read   chan int64
}

func startGroupServer(t *testing.T, cert tls.Certificate, curves ...tls.CurveID) *groupServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	g := &groupServer{addr: ln.Addr().String(), read: make(chan int64, 16)}
	g.curves.Store(&curves)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				var req [8]byte
				if _, err := conn.Read(req[:]); err != nil {
					return
				}
				conn.Write([]byte{'S'})
				cc := &countingConn{Conn: conn}
				tc := tls.Server(cc, &tls.Config{Certificates: []tls.Certificate{cert}, CurvePreferences: *g.curves.Load()})
				err := tc.Handshake()
				n := cc.n.Load()
				if err != nil {
					n = -1
				}
				g.read <- n
			}()
		}
	}()
	return g
}

type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// dialGroups dials g once with memo and returns the group used and how
// many bytes the server read in its successful handshake.
func dialGroups(t *testing.T, g *groupServer, base *tls.Config, memo *groupMemo) (tls.CurveID, int64) {
	t.Helper()
	conn, err := dialUpstream(t.Context(), UpstreamConfig{Address: g.addr, ConnectTimeout: 5 * time.Second}, base, memo, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := int64(-1)
	for n < 0 { // a failed narrowed handshake reports first
		n = <-g.read
	}
	return conn.(*tls.Conn).ConnectionState().CurveID, n
}

// TestUpstreamGroupMemo: against a server that takes P-256 only (as
// PostgreSQL does by default), the first handshake offers every group and
// takes a HelloRetryRequest; later ones offer P-256 alone and send far
// less. When the server then stops taking P-256, the narrowed handshake
// fails, and the same dial retries with every group and learns the new one.
func TestUpstreamGroupMemo(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	g := startGroupServer(t, cert, tls.CurveP256)
	base := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	var memo groupMemo

	id, full := dialGroups(t, g, base, &memo)
	if id != tls.CurveP256 {
		t.Fatalf("first handshake: group %v, want P-256", id)
	}
	if cfg, narrow := memo.config(base, time.Now()); !narrow || !slices.Equal(cfg.CurvePreferences, []tls.CurveID{tls.CurveP256}) {
		t.Fatalf("after the first handshake: narrow %v, groups %v; want P-256 alone", narrow, cfg.CurvePreferences)
	}
	id, short := dialGroups(t, g, base, &memo)
	t.Logf("server read %d bytes offering every group, %d offering P-256", full, short)
	if id != tls.CurveP256 || short*2 > full {
		t.Errorf("narrowed handshake: group %v, server read %d bytes (first: %d); want P-256 and under half", id, short, full)
	}
	if base.CurvePreferences != nil {
		t.Error("the base configuration was changed")
	}

	// The server changes its groups: the narrowed offer fails, the dial
	// retries with every group.
	g.curves.Store(&[]tls.CurveID{tls.X25519})
	if id, _ := dialGroups(t, g, base, &memo); id != tls.X25519 {
		t.Fatalf("after the server's change: group %v, want X25519", id)
	}
	if cfg, narrow := memo.config(base, time.Now()); !narrow || !slices.Equal(cfg.CurvePreferences, []tls.CurveID{tls.X25519}) {
		t.Errorf("after the server's change: narrow %v, groups %v; want X25519 alone", narrow, cfg.CurvePreferences)
	}

	// A learned group is offered alone for groupMemoTTL only, and for its
	// own base only.
	if _, narrow := memo.config(base, time.Now().Add(groupMemoTTL+time.Second)); narrow {
		t.Error("a learned group outlived groupMemoTTL")
	}
	if cfg, narrow := memo.config(base.Clone(), time.Now()); narrow || cfg.CurvePreferences != nil {
		t.Error("a learned group served another configuration")
	}
}

// TestUpstreamGroupMemoOperatorGroups: groups the operator chose are never
// narrowed.
func TestUpstreamGroupMemoOperatorGroups(t *testing.T) {
	var memo groupMemo
	base := &tls.Config{CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
	memo.learn(base, tls.ConnectionState{CurveID: tls.CurveP256}, time.Now())
	if cfg, narrow := memo.config(base, time.Now()); narrow || cfg != base {
		t.Error("narrowed the operator's groups")
	}
	memo.learn(&tls.Config{}, tls.ConnectionState{}, time.Now())
	if memo.p.Load() != nil {
		t.Error("learned group 0")
	}
}
