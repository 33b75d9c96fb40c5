package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
)

// readyInterceptor is an Interceptor that is a ReadinessChecker and leaves
// sessions alone (a nil SessionInterceptor).
type readyInterceptor struct {
	err      atomic.Pointer[error]
	sessions atomic.Int32
	database atomic.Pointer[string]
}

func (ri *readyInterceptor) NewSession(ctx context.Context, c *Conn) (SessionInterceptor, error) {
	ri.sessions.Add(1)
	db := c.Database()
	ri.database.Store(&db)
	return nil, nil
}

func (ri *readyInterceptor) Ready() error {
	if p := ri.err.Load(); p != nil {
		return *p
	}
	return nil
}

var _ ReadinessChecker = (*readyInterceptor)(nil)

// TestReadinessChecker: /readyz asks an Interceptor that is a
// ReadinessChecker and shows its reason.
func TestReadinessChecker(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, _ *pgproto3.Backend, _ net.Conn) {})
	ri := &readyInterceptor{}
	srv := startServer(t, testConfig(up.addr), WithInterceptor(ri))
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		body, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(body)
	}
	if code, body := get(); code != http.StatusOK {
		t.Errorf("/readyz %d %q with a ready interceptor", code, body)
	}
	err := errors.New("database clinic: table public.encounter is missing")
	ri.err.Store(&err)
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: database clinic: table public.encounter is missing") {
		t.Errorf("/readyz %d %q with an unready interceptor", code, body)
	}
	ri.err.Store(nil)
	if code, body := get(); code != http.StatusOK {
		t.Errorf("/readyz %d %q once ready again", code, body)
	}
}

// TestNilSessionInterceptor: an Interceptor that returns no
// SessionInterceptor leaves the session's traffic untouched, and learns the
// database the client named.
func TestNilSessionInterceptor(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		if msg, err := be.Receive(); err != nil || typeName(msg) != "Query" {
			t.Errorf("fake upstream: %T %v", msg, err)
			return
		}
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	ri := &readyInterceptor{}
	srv := startServer(t, testConfig(up.addr), WithInterceptor(ri))
	c := login(t, srv.Addr())
	c.send(t, &pgproto3.Query{String: "SELECT"})
	if d := cmp.Diff([]string{"CommandComplete", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("query (-want +got):\n%s", d)
	}
	if n := ri.sessions.Load(); n != 1 {
		t.Errorf("NewSession called %d times", n)
	}
	if db := ri.database.Load(); db == nil || *db != "db" {
		t.Errorf("Conn.Database = %v, want db", db)
	}
	c.send(t, &pgproto3.Terminate{})
}

// TestQuerySkippedAfterExtendedError: after an extended-protocol error the
// server ignores a Query as it ignores everything up to Sync, so the
// ReadyForQuery that follows answers the Sync, not the Query. The relay
// must not take it for the Query's (it would then wait forever for the
// Sync's, and hand the next cycle's ReadyForQuery to the wrong message).
func TestQuerySkippedAfterExtendedError(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		for _, want := range []string{"Parse", "Query", "Sync"} {
			if msg, err := be.Receive(); err != nil || typeName(msg) != want {
				t.Errorf("fake upstream: %T %v, want %s", msg, err, want)
				return
			}
		}
		// The Parse fails; the Query is skipped; the Sync is answered.
		be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		if msg, err := be.Receive(); err != nil || typeName(msg) != "Query" {
			t.Errorf("fake upstream: %T %v, want Query", msg, err)
			return
		}
		be.Send(&pgproto3.EmptyQueryResponse{})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr))
	c := login(t, srv.Addr())
	c.send(t, &pgproto3.Parse{Query: "bad"}, &pgproto3.Query{String: "skipped"}, &pgproto3.Sync{})
	if d := cmp.Diff([]string{"ErrorResponse", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("failed batch (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Query{String: ""})
	if d := cmp.Diff([]string{"EmptyQueryResponse", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("next query (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Terminate{})
}

// TestHiddenSyncAnswersSkippedQuery: an interceptor may put a Query
// between messages of its own and a Sync of its own (proxy/phi's catalog
// guard). When its message fails, the server skips the Query and answers
// only the Sync: that ReadyForQuery is the client's. When it succeeds, the
// Query's ReadyForQuery is the client's and the Sync's is not.
func TestHiddenSyncAnswersSkippedQuery(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		recv := func(want ...string) {
			for _, w := range want {
				if msg, err := be.Receive(); err != nil || typeName(msg) != w {
					t.Errorf("fake upstream: %T %v, want %s", msg, err, w)
				}
			}
		}
		recv("Bind", "Query", "Sync")
		be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "55000", Message: "refused"})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		recv("Bind", "Query", "Sync")
		be.Send(&pgproto3.BindComplete{})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	ti := &testInterceptor{frontend: func(c *Conn, typ byte, msg []byte) error {
		if typ != 'Q' {
			return c.Pass(typ, msg)
		}
		bind, _ := (&pgproto3.Bind{PreparedStatement: "guard"}).Encode(nil)
		if err := c.Send(Expectation{Kind: KindBind, Hidden: true}, bind); err != nil {
			return err
		}
		if err := c.Pass(typ, msg); err != nil {
			return err
		}
		sync, _ := (&pgproto3.Sync{}).Encode(nil)
		return c.Send(Expectation{Kind: KindSync, Hidden: true}, sync)
	}}
	srv := startServer(t, testConfig(up.addr), WithInterceptor(ti))
	c := login(t, srv.Addr())
	c.send(t, &pgproto3.Query{String: "INSERT"})
	if d := cmp.Diff([]string{"ErrorResponse", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("refused (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Query{String: "INSERT"})
	if d := cmp.Diff([]string{"CommandComplete", "ReadyForQuery"}, c.receiveUntilReady(t)); d != "" {
		t.Errorf("run (-want +got):\n%s", d)
	}
	// Nothing more: the Sync's ReadyForQuery was the proxy's.
	c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if msg, err := c.fe.Receive(); err == nil {
		t.Errorf("client got %s after the cycle", typeName(msg))
	}
	c.send(t, &pgproto3.Terminate{})
}
