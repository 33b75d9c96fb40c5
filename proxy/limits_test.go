package proxy

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestAuthMessageBounded: before login a client's message is bounded as
// PostgreSQL bounds it (64 KiB), not by the post-login limit: a huge
// password message is refused at its header, its body never awaited.
func TestAuthMessageBounded(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if _, err := be.ReceiveStartupMessage(); err != nil {
			return
		}
		be.Send(&pgproto3.AuthenticationCleartextPassword{})
		be.Flush()
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr))
	c := dial(t, srv.Addr())
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "alice", "database": "db"}})
	if msg, err := c.fe.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
		t.Fatalf("got %T, want the password request", msg)
	}
	hdr := []byte{'p', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], 32<<20) // 32 MiB announced, nothing sent
	if _, err := c.conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if er := c.receiveFatal(t); er.Code != pgerrcode.ProtocolViolation {
		t.Fatalf("got %s %q, want 08P01", er.Code, er.Message)
	}
}

// TestPipelineBackpressure: a client that pipelines far more messages
// than the FIFO holds is not read from while the FIFO is full (as
// PostgreSQL stops reading from a client that does not read), so the
// proxy's memory stays bounded; every message is still answered in order.
func TestPipelineBackpressure(t *testing.T) {
	const n = 5 * maxPending
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		<-release // read nothing until the test has looked
		for range n {
			if _, err := be.Receive(); err != nil {
				t.Errorf("fake upstream: %v", err)
				return
			}
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			be.Flush() // as PostgreSQL answers each Sync at once
		}
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr))
	c := login(t, srv.Addr())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n {
			c.fe.Send(&pgproto3.Sync{})
		}
		c.fe.Flush()
	}()
	var sess *Session
	deadline := time.Now().Add(5 * time.Second)
	for pending := 0; pending < maxPending && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		srv.mu.Lock()
		for s := range srv.sessions {
			sess = s
		}
		srv.mu.Unlock()
		if sess != nil {
			sess.q.mu.Lock()
			pending = sess.q.len()
			sess.q.mu.Unlock()
		}
	}
	time.Sleep(50 * time.Millisecond) // would it read more?
	sess.q.mu.Lock()
	pending := sess.q.len()
	sess.q.mu.Unlock()
	if pending != maxPending {
		t.Fatalf("%d messages pending with the server not reading, want the bound %d", pending, maxPending)
	}
	once.Do(func() { close(release) })
	for i := range n {
		if msg, err := c.fe.Receive(); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		} else if _, ok := msg.(*pgproto3.ReadyForQuery); !ok {
			t.Fatalf("answer %d: %T", i, msg)
		}
	}
	wg.Wait()
	c.send(t, &pgproto3.Terminate{})
}

// TestNothingBeforePrepared: while the interceptor runs its own query
// after login, the client has nothing, not even the cancel key, so it can
// neither send a statement nor cancel the proxy's query (issue 9, item
// 10: a cancel right after connecting used to kill the session).
func TestNothingBeforePrepared(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		if _, err := be.Receive(); err != nil { // the interceptor's query
			return
		}
		<-release
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr), WithInterceptor(&testInterceptor{
		start: func(c *Conn) error { _, err := c.Query("SELECT 'catalog'"); return err },
	}))
	c := dial(t, srv.Addr())
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "alice", "database": "db"}})
	c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if msg, err := c.fe.Receive(); err == nil {
		t.Fatalf("the client got %T while the proxy's query ran", msg)
	}
	once.Do(func() { close(release) })
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	// pgproto3's Frontend keeps a timed-out read's state; a new one reads
	// the stream afresh (nothing of it was consumed).
	c.fe = pgproto3.NewFrontend(c.conn, c.conn)
	want := []string{"AuthenticationOk", "ParameterStatus", "BackendKeyData", "ReadyForQuery"}
	if got := c.receiveUntilReady(t); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("login after the proxy's query: %v, want %v", got, want)
	}
	c.send(t, &pgproto3.Terminate{})
}
