package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var extendedTriple = []pgproto3.FrontendMessage{
	&pgproto3.Parse{Name: "s1", Query: "select $1"},
	&pgproto3.Bind{PreparedStatement: "s1"},
	&pgproto3.Describe{ObjectType: 'P'},
	&pgproto3.Execute{},
}

// TestPipelineOrder sends three Parse/Bind/Describe/Execute groups and one
// Sync in a single write; every message reaches the server in order and
// every response reaches the client in order.
func TestPipelineOrder(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		got := receiveN(t, be, 13)
		want := strings.Split(strings.Repeat("Parse,Bind,Describe,Execute,", 3)+"Sync", ",")
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("server received (-want +got):\n%s", d)
		}
		for i := range 3 {
			be.Send(&pgproto3.ParseComplete{})
			be.Send(&pgproto3.BindComplete{})
			be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x")}}})
			for range i + 1 {
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("v")}})
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		}
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr))
	c := login(t, srv.Addr())
	var msgs []pgproto3.FrontendMessage
	for range 3 {
		msgs = append(msgs, extendedTriple...)
	}
	c.send(t, append(msgs, &pgproto3.Sync{})...)
	got := c.receiveUntilReady(t)
	var want []string
	for i := range 3 {
		want = append(want, "ParseComplete", "BindComplete", "RowDescription")
		for range i + 1 {
			want = append(want, "DataRow")
		}
		want = append(want, "CommandComplete")
	}
	want = append(want, "ReadyForQuery")
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("client received (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Terminate{})
	waitSessions(t, srv.Server, 0)
	if got := testutil.ToFloat64(srv.metrics.queryExt); got != 3 {
		t.Errorf("extended queries counted: %v, want 3", got)
	}
	if got := testutil.ToFloat64(srv.metrics.Connections.WithLabelValues(outcomeOK)); got != 1 {
		t.Errorf("ok sessions: %v, want 1", got)
	}
}

// TestErrorSkipsToSync: after an ErrorResponse in the extended protocol
// the server ignores everything up to Sync; the FIFO must drop those
// entries so that the next exchange still lines up.
func TestErrorSkipsToSync(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		receiveN(t, be, 9) // P B D E  P B D E  S
		be.Send(&pgproto3.ParseComplete{})
		be.Send(&pgproto3.BindComplete{})
		be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "22012", Message: "division by zero"})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		receiveN(t, be, 1) // Query
		be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x")}}})
		be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		be.Send(&pgproto3.EmptyQueryResponse{})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr))
	c := login(t, srv.Addr())
	c.send(t, append(append(append([]pgproto3.FrontendMessage{}, extendedTriple...), extendedTriple...), &pgproto3.Sync{})...)
	if d := cmp.Diff([]string{"ParseComplete", "BindComplete", "ErrorResponse", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("after error (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Query{String: "select 1;;"})
	want := []string{"RowDescription", "DataRow", "CommandComplete", "EmptyQueryResponse", "ReadyForQuery"}
	if d := cmp.Diff(want, c.receiveUntilReady(t)); d != "" {
		t.Errorf("next query (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Terminate{})
}

// TestCopyInExtendedPipelinedSync: a COPY FROM STDIN sent with the extended
// protocol and a pipelined Sync (libpq's PQexecParams). The server ignores
// Sync during COPY, so the FIFO must not wait for its answer.
func TestCopyInExtendedPipelinedSync(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		receiveN(t, be, 4) // P B E S
		be.Send(&pgproto3.ParseComplete{})
		be.Send(&pgproto3.BindComplete{})
		be.Send(&pgproto3.CopyInResponse{OverallFormat: 0})
		be.Flush()
		got := receiveN(t, be, 4) // CopyData CopyData CopyDone Sync
		if d := cmp.Diff([]string{"CopyData", "CopyData", "CopyDone", "Sync"}, got); d != "" {
			t.Errorf("copy (-want +got):\n%s", d)
		}
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 2")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		receiveN(t, be, 1) // Query
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SET")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr))
	c := login(t, srv.Addr())
	c.send(t, &pgproto3.Parse{Query: "copy t from stdin"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	for _, want := range []string{"ParseComplete", "BindComplete", "CopyInResponse"} {
		msg, err := c.fe.Receive()
		if err != nil || typeName(msg) != want {
			t.Fatalf("got %T, %v; want %s", msg, err, want)
		}
	}
	c.send(t, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.Sync{}, &pgproto3.CopyData{Data: []byte("2\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
	if d := cmp.Diff([]string{"CommandComplete", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("after copy (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Query{String: "set x = 1"})
	if d := cmp.Diff([]string{"CommandComplete", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("next query (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Terminate{})
}

// TestSCRAMPlusStripped: with SCRAM relayed, the client is offered the
// server's mechanisms without SCRAM-SHA-256-PLUS, and its answers reach the
// server unchanged.
func TestSCRAMPlusStripped(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if _, err := be.ReceiveStartupMessage(); err != nil {
			t.Errorf("startup: %v", err)
			return
		}
		be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}})
		be.Flush()
		be.SetAuthType(pgproto3.AuthTypeSASL)
		msg, err := be.Receive()
		if err != nil {
			t.Errorf("receive: %v", err)
			return
		}
		init, ok := msg.(*pgproto3.SASLInitialResponse)
		if !ok || init.AuthMechanism != "SCRAM-SHA-256" || string(init.Data) != "n,,n=,r=abc" {
			t.Errorf("server got %#v", msg)
		}
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
		be.Flush()
	})
	srv := startServer(t, testConfig(up.addr))
	c := dial(t, srv.Addr())
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
	msg, err := c.fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	sasl, ok := msg.(*pgproto3.AuthenticationSASL)
	if !ok {
		t.Fatalf("got %T, want AuthenticationSASL", msg)
	}
	if d := cmp.Diff([]string{"SCRAM-SHA-256"}, sasl.AuthMechanisms); d != "" {
		t.Errorf("mechanisms (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=abc")})
	if er := c.receiveFatal(t); er.Code != "28P01" {
		t.Errorf("code %s, want the server's 28P01", er.Code)
	}
	waitSessions(t, srv.Server, 0)
	if got := testutil.ToFloat64(srv.metrics.Connections.WithLabelValues(outcomeAuthFailed)); got != 1 {
		t.Errorf("auth_failed sessions: %v, want 1", got)
	}
}

// TestMalformedMessages: each bad message ends its own session with FATAL
// 08P01 while another session keeps working.
func TestMalformedMessages(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		for {
			msg, err := be.Receive()
			if err != nil {
				return
			}
			if _, ok := msg.(*pgproto3.Query); ok {
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				be.Flush()
			}
		}
	})
	cfg := testConfig(up.addr)
	cfg.Limits.MaxMessageBytes = 4096
	srv := startServer(t, cfg)
	bystander := login(t, srv.Addr())

	big := make([]byte, 5+10000)
	big[0] = 'Q'
	binary.BigEndian.PutUint32(big[1:], 4+10000)
	cases := []struct {
		name string
		raw  []byte
	}{
		{"unknown type", []byte{'!', 0, 0, 0, 4}},
		{"length below 4", []byte{'Q', 0, 0, 0, 3}},
		{"negative length", []byte{'Q', 0xff, 0xff, 0xff, 0xff}},
		{"oversized", big},
		{"password after login", []byte{'p', 0, 0, 0, 5, 0}},
		{"bad describe target", []byte{'D', 0, 0, 0, 6, 'X', 0}},
		{"startup message mid-session", []byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := login(t, srv.Addr())
			if _, err := c.conn.Write(tc.raw); err != nil {
				t.Fatal(err)
			}
			er := c.receiveFatal(t)
			if er.Code != pgerrcode.ProtocolViolation || er.Severity != "FATAL" {
				t.Errorf("got %s %s %q, want FATAL 08P01", er.Severity, er.Code, er.Message)
			}
		})
	}
	bystander.send(t, &pgproto3.Query{String: "select"})
	if d := cmp.Diff([]string{"CommandComplete", "ReadyForQuery"}, bystander.receiveUntilReady(t)); d != "" {
		t.Errorf("bystander (-want +got):\n%s", d)
	}
	waitSessions(t, srv.Server, 1)
	if got := testutil.ToFloat64(srv.metrics.Connections.WithLabelValues(outcomeProtocolError)); got != float64(len(cases)) {
		t.Errorf("protocol_error sessions: %v, want %d", got, len(cases))
	}
}

// TestGarbageStartup: a startup packet that is not PostgreSQL's ends that
// connection only.
func TestGarbageStartup(t *testing.T) {
	srv := startServer(t, testConfig("127.0.0.1:1"))
	c := dial(t, srv.Addr())
	c.conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	buf := make([]byte, 1)
	if _, err := c.conn.Read(buf); err == nil {
		t.Errorf("read %q, want the connection closed", buf)
	}
	c = dial(t, srv.Addr())
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: 2 << 16, Parameters: map[string]string{"user": "alice"}})
	if er := c.receiveFatal(t); er.Code != pgerrcode.ProtocolViolation {
		t.Errorf("protocol 2: code %s, want 08P01", er.Code)
	}
}

// TestPanicRecovered: a panic inside a session closes that session with
// XX000, counts it, and the server keeps serving.
func TestPanicRecovered(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		for {
			if _, err := be.Receive(); err != nil {
				return
			}
		}
	})
	srv := startServer(t, testConfig(up.addr), WithInterceptor(&testInterceptor{
		frontend: func(c *Conn, typ byte, msg []byte) error {
			if typ == 'Q' && bytes.Contains(msg, []byte("boom")) {
				panic("boom")
			}
			return c.Pass(typ, msg)
		},
	}))
	c := login(t, srv.Addr())
	c.send(t, &pgproto3.Query{String: "boom"})
	if er := c.receiveFatal(t); er.Code != pgerrcode.InternalError || strings.Contains(er.Message, "boom") {
		t.Errorf("got %s %q, want XX000 without the panic value", er.Code, er.Message)
	}
	waitSessions(t, srv.Server, 0)
	if got := testutil.ToFloat64(srv.metrics.SessionPanics); got != 1 {
		t.Errorf("panics: %v, want 1", got)
	}
	login(t, srv.Addr()) // still serving
}

// TestUpstreamFailures: an unreachable upstream gives 08001, one that dies
// mid-session 08006; either way a clean FATAL.
func TestUpstreamFailures(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		srv := startServer(t, testConfig(addr))
		c := dial(t, srv.Addr())
		c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
		if er := c.receiveFatal(t); er.Code != pgerrcode.SQLClientUnableToEstablishSQLConnection {
			t.Errorf("code %s %q, want 08001", er.Code, er.Message)
		}
	})
	t.Run("dies", func(t *testing.T) {
		up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
			if serverStartup(t, be) {
				be.Receive()
			}
		})
		srv := startServer(t, testConfig(up.addr))
		c := login(t, srv.Addr())
		c.send(t, &pgproto3.Query{String: "select 1"})
		if er := c.receiveFatal(t); er.Code != pgerrcode.ConnectionFailure {
			t.Errorf("code %s %q, want 08006", er.Code, er.Message)
		}
	})
}

// TestCancelForwarded: a CancelRequest reaches the upstream byte for byte.
func TestCancelForwarded(t *testing.T) {
	got := make(chan []byte, 1)
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		buf := make([]byte, 16)
		if _, err := conn.Read(buf); err != nil {
			t.Errorf("read: %v", err)
		}
		got <- buf
	})
	srv := startServer(t, testConfig(up.addr))
	c := dial(t, srv.Addr())
	req, _ := (&pgproto3.CancelRequest{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}}).Encode(nil)
	c.conn.Write(req)
	select {
	case b := <-got:
		if !bytes.Equal(b, req) {
			t.Errorf("upstream got %x, want %x", b, req)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel request not forwarded")
	}
}

// TestShutdownDrain: Shutdown waits for sessions, then closes the rest
// with 57P01 and reports how many; readiness fails while draining.
func TestShutdownDrain(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if serverStartup(t, be) {
			be.Receive()
		}
	})
	srv := startServer(t, testConfig(up.addr))
	c := login(t, srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	time.Sleep(50 * time.Millisecond)
	if !srv.draining.Load() {
		t.Error("not draining during Shutdown")
	}
	if er := c.receiveFatal(t); er.Code != pgerrcode.AdminShutdown {
		t.Errorf("code %s, want 57P01", er.Code)
	}
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "closed 1 open sessions") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want it to report 1 closed session", err)
	}
	if _, err := net.DialTimeout("tcp", srv.Addr().String(), time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func waitSessions(t *testing.T, srv *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.ActiveSessions() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions open, want %d", srv.ActiveSessions(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
