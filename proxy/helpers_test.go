package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeUpstream is a scripted PostgreSQL server: each accepted connection runs
// script in its own goroutine (which reports with t.Errorf, never Fatal).
type fakeUpstream struct {
	ln   net.Listener
	addr string
}

func startFakeUpstream(t *testing.T, script func(t *testing.T, be *pgproto3.Backend, conn net.Conn)) *fakeUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait() // scripts must not outlive the test
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				script(t, pgproto3.NewBackend(conn, conn), conn)
			}()
		}
	}()
	return &fakeUpstream{ln: ln, addr: ln.Addr().String()}
}

// serverStartup accepts a StartupMessage and logs the client in (trust).
func serverStartup(t *testing.T, be *pgproto3.Backend) bool {
	msg, err := be.ReceiveStartupMessage()
	if err != nil {
		t.Errorf("fake upstream: receive startup: %v", err)
		return false
	}
	sm, ok := msg.(*pgproto3.StartupMessage)
	if !ok {
		t.Errorf("fake upstream: got %T, want StartupMessage", msg)
		return false
	}
	if sm.Parameters["user"] != "alice" {
		t.Errorf("fake upstream: user %q, want alice", sm.Parameters["user"])
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush() == nil
}

// receiveN reads n frontend messages and returns their type names.
func receiveN(t *testing.T, be *pgproto3.Backend, n int) []string {
	var got []string
	for range n {
		msg, err := be.Receive()
		if err != nil {
			t.Errorf("fake upstream: receive: %v (after %v)", err, got)
			return got
		}
		got = append(got, typeName(msg))
	}
	return got
}

// drain reads until the connection ends (Terminate, then EOF).
func drain(be *pgproto3.Backend) {
	for {
		if _, err := be.Receive(); err != nil {
			return
		}
	}
}

func typeName(msg any) string {
	s := fmt.Sprintf("%T", msg)
	return s[strings.LastIndex(s, ".")+1:]
}

func testConfig(upstream string) Config {
	return Config{
		Listen:   ListenConfig{Address: "127.0.0.1:0", TLS: ListenTLSConfig{AllowPlaintext: true}},
		Upstream: UpstreamConfig{Address: upstream, TLS: UpstreamTLSConfig{Mode: TLSModeDisable}, ConnectTimeout: 2 * time.Second},
	}
}

type testServer struct {
	*Server
	reg *prometheus.Registry
}

func startServer(t *testing.T, cfg Config, opts ...Option) testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return testServer{srv, reg}
}

// testWriter sends logs to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// client is a plaintext test client.
type client struct {
	conn net.Conn
	fe   *pgproto3.Frontend
}

func dial(t *testing.T, addr net.Addr) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{conn: conn, fe: pgproto3.NewFrontend(conn, conn)}
}

// login dials and completes the startup exchange.
func login(t *testing.T, addr net.Addr) *client {
	t.Helper()
	c := dial(t, addr)
	c.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "alice", "database": "db"}})
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	got := c.receiveUntilReady(t)
	want := []string{"AuthenticationOk", "ParameterStatus", "BackendKeyData", "ReadyForQuery"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("login: got %v, want %v", got, want)
	}
	return c
}

func (c *client) send(t *testing.T, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

// receiveUntilReady returns the type names up to and including ReadyForQuery.
func (c *client) receiveUntilReady(t *testing.T) []string {
	t.Helper()
	var got []string
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			t.Fatalf("receive after %v: %v", got, err)
		}
		got = append(got, typeName(msg))
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return got
		}
	}
}

// receiveFatal expects an ErrorResponse and then the end of the connection,
// and returns the error.
func (c *client) receiveFatal(t *testing.T) *pgproto3.ErrorResponse {
	t.Helper()
	var er *pgproto3.ErrorResponse
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			if er == nil {
				t.Fatalf("connection ended (%v) without an ErrorResponse", err)
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("after the error: %v, want EOF", err)
			}
			return er
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			cp := *e
			er = &cp
		}
	}
}
