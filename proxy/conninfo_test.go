package proxy

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
)

// tagRecorder is a Responder that records what the relay tells it, in
// order: command tags, errors and how each message was answered. A
// RowDescription naming the column "secret" is refused with a non-fatal
// client error.
type tagRecorder struct {
	PassResponder
	mu     *sync.Mutex
	events *[]string
}

var _ CommandCompleter = tagRecorder{}

func (r tagRecorder) note(s string) {
	r.mu.Lock()
	*r.events = append(*r.events, s)
	r.mu.Unlock()
}

func (r tagRecorder) RowDescription(dst, msg []byte) ([]byte, RowTransformer, error) {
	if strings.Contains(string(msg), "secret") {
		r.note("refused RowDescription")
		return dst, nil, testClientError{}
	}
	return append(dst, msg...), nil, nil
}
func (r tagRecorder) CommandComplete(tag []byte) { r.note("tag " + string(tag)) }
func (r tagRecorder) Answered(typ byte) {
	if typ != 0 {
		r.note("answered " + string(typ))
	}
}

// TestCommandCompleterAndConnInfo: the tags of a two-statement Query and
// of an Execute reach an optional CommandCompleter in order (the
// Execute's before Answered); a refused RowDescription answers the client
// with the error in its place while the server's tag still reaches the
// Responder; and the Conn tells who the client is.
func TestCommandCompleterAndConnInfo(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		rd := func(name string) *pgproto3.RowDescription {
			return &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte(name)}}}
		}
		receiveN(t, be, 1) // Query: two statements
		be.Send(rd("x"))
		be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("UPDATE 2")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		receiveN(t, be, 3) // Bind, Execute, Sync
		be.Send(&pgproto3.BindComplete{})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 3")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		receiveN(t, be, 1) // Query whose result is refused
		be.Send(rd("secret"))
		be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("hidden")}})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		drain(be)
	})
	var (
		mu     sync.Mutex
		events []string
		info   []string
	)
	rec := tagRecorder{mu: &mu, events: &events}
	ti := &testInterceptor{
		start: func(c *Conn) error {
			info = []string{c.User(), c.Database(), c.ClientCertSubject()}
			if !strings.HasPrefix(c.RemoteAddr(), "127.0.0.1:") {
				t.Errorf("RemoteAddr = %q", c.RemoteAddr())
			}
			return nil
		},
		frontend: func(c *Conn, typ byte, msg []byte) error {
			if typ == 'Q' || typ == 'E' {
				return c.Send(Expectation{Kind: KindOf(typ, msg), Responder: rec}, msg)
			}
			return c.Pass(typ, msg)
		},
	}
	srv := startServer(t, testConfig(up.addr), WithInterceptor(ti))
	c := login(t, srv.Addr())
	if d := cmp.Diff([]string{"alice", "db", ""}, info); d != "" {
		t.Errorf("User, Database, ClientCertSubject (-want +got):\n%s", d)
	}

	c.send(t, &pgproto3.Query{String: "two statements"})
	want := []string{"RowDescription", "DataRow", "CommandComplete", "CommandComplete", "ReadyForQuery"}
	if d := cmp.Diff(want, c.receiveUntilReady(t)); d != "" {
		t.Errorf("query (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	want = []string{"BindComplete", "CommandComplete", "ReadyForQuery"}
	if d := cmp.Diff(want, c.receiveUntilReady(t)); d != "" {
		t.Errorf("execute (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Query{String: "refused"})
	want = []string{"ErrorResponse", "ReadyForQuery"}
	if d := cmp.Diff(want, c.receiveUntilReady(t)); d != "" {
		t.Errorf("refused result (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Terminate{})

	mu.Lock()
	defer mu.Unlock()
	wantEvents := []string{
		"tag SELECT 1", "tag UPDATE 2", "answered Z",
		"tag INSERT 0 3", "answered C",
		"refused RowDescription", "tag SELECT 1", "answered Z",
	}
	if d := cmp.Diff(wantEvents, events); d != "" {
		t.Errorf("Responder events (-want +got):\n%s", d)
	}
}

// TestClientCertSubject: with client_ca_file, the interceptor sees the
// subject of the client's verified certificate.
func TestClientCertSubject(t *testing.T) {
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if serverStartup(t, be) {
			drain(be)
		}
	})
	certFile, keyFile, pool := writeCert(t)
	cfg := testConfig(up.addr)
	cfg.Listen.TLS = ListenTLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: certFile}
	subject := make(chan string, 1)
	srv := startServer(t, cfg, WithInterceptor(&testInterceptor{start: func(c *Conn) error {
		subject <- c.ClientCertSubject()
		return nil
	}}))
	c := dial(t, srv.Addr())
	sslRequest(t, c.conn)
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{mustKeyPair(t, certFile, keyFile)}})
	fe := pgproto3.NewFrontend(tc, tc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "alice"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := <-subject; got != "CN=phiproxy test" {
		t.Errorf("ClientCertSubject = %q, want CN=phiproxy test", got)
	}
	fe.Send(&pgproto3.Terminate{})
	fe.Flush()
}
