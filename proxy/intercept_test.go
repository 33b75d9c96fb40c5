package proxy

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
)

// testInterceptor runs the given functions; nil ones pass messages through.
type testInterceptor struct {
	start    func(c *Conn) error
	frontend func(c *Conn, typ byte, msg []byte) error
	params   []string // "name=value" of ParameterStatus, in order
}

func (ti *testInterceptor) NewSession(ctx context.Context, c *Conn) (SessionInterceptor, error) {
	if ti.start != nil {
		if err := ti.start(c); err != nil {
			return nil, err
		}
	}
	return &testSession{ti: ti, c: c}, nil
}

type testSession struct {
	ti *testInterceptor
	c  *Conn
}

func (ts *testSession) Frontend(typ byte, msg []byte) error {
	if ts.ti.frontend != nil {
		return ts.ti.frontend(ts.c, typ, msg)
	}
	return ts.c.Pass(typ, msg)
}
func (ts *testSession) Sync() {}
func (ts *testSession) ParameterStatus(name, value string) {
	ts.ti.params = append(ts.ti.params, name+"="+value)
}

// upperRows uppercases every value of a result; a value "bad" fails the row
// with a non-fatal client error.
type upperRows struct{ PassResponder }

func (upperRows) RowDescription(dst, msg []byte) ([]byte, RowTransformer, error) {
	return append(dst, msg...), upperRows{}, nil
}
func (upperRows) Rows() (RowTransformer, error) { return upperRows{}, nil }
func (upperRows) DataRow(dst, msg []byte) ([]byte, error) {
	var row pgproto3.DataRow
	if err := row.Decode(msg[5:]); err != nil {
		return nil, err
	}
	for i, v := range row.Values {
		if string(v) == "bad" {
			return nil, testClientError{}
		}
		row.Values[i] = bytes.ToUpper(v)
	}
	return row.Encode(dst)
}

type testClientError struct{}

func (testClientError) Error() string         { return "bad value" }
func (testClientError) SQLState() string      { return "XX001" }
func (testClientError) ClientMessage() string { return "bad value in column x" }

// TestInterceptor drives the seam: a query of the interceptor's own before
// the client's first ReadyForQuery, a rewritten Query, rows rewritten by a
// RowTransformer, a non-fatal row error that mutes the rest of the cycle,
// and a hidden Describe whose answers the client never sees.
func TestInterceptor(t *testing.T) {
	received := make(chan []string, 1)
	up := startFakeUpstream(t, func(t *testing.T, be *pgproto3.Backend, conn net.Conn) {
		if !serverStartup(t, be) {
			return
		}
		var got []string
		recv := func() pgproto3.FrontendMessage {
			msg, err := be.Receive()
			if err != nil {
				t.Errorf("fake upstream: %v", err)
				return nil
			}
			if q, ok := msg.(*pgproto3.Query); ok {
				got = append(got, "Query "+q.String)
			} else {
				got = append(got, typeName(msg))
			}
			return msg
		}
		row := func(v string) { be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(v)}}) }
		rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x")}}}
		// The interceptor's own query, answered with a notice and a row.
		recv()
		be.Send(rd)
		be.Send(&pgproto3.NoticeResponse{Severity: "NOTICE", Message: "hello"})
		row("catalog")
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		// A rewritten Query with two rows, then one whose second row fails.
		for _, rows := range [][]string{{"a", "b"}, {"c", "bad", "d"}} {
			recv()
			be.Send(rd)
			for _, v := range rows {
				row(v)
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			be.Flush()
		}
		// Bind, hidden Describe, Execute, Sync.
		for range 4 {
			recv()
		}
		be.Send(&pgproto3.BindComplete{})
		be.Send(rd)
		row("e")
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		received <- got
		drain(be)
	})
	ti := &testInterceptor{
		start: func(c *Conn) error {
			rows, err := c.Query("catalog")
			if err != nil || len(rows) != 1 || string(rows[0][0]) != "catalog" {
				t.Errorf("Query: %q, %v", rows, err)
			}
			return err
		},
		frontend: func(c *Conn, typ byte, msg []byte) error {
			switch typ {
			case 'Q':
				q := strings.ReplaceAll(string(msg[5:len(msg)-1]), "client", "rewritten")
				out, _ := (&pgproto3.Query{String: q}).Encode(nil)
				return c.Send(Expectation{Kind: KindQuery, Responder: upperRows{}}, out)
			case 'E':
				d, _ := (&pgproto3.Describe{ObjectType: 'P'}).Encode(nil)
				if err := c.Send(Expectation{Kind: KindDescribePortal, Hidden: true}, d); err != nil {
					return err
				}
				return c.Send(Expectation{Kind: KindExecute, Responder: upperRows{}}, msg)
			}
			return c.Pass(typ, msg)
		},
	}
	srv := startServer(t, testConfig(up.addr), WithInterceptor(ti))

	c := dial(t, srv.Addr())
	c.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "alice", "database": "db"}})
	want := []string{"AuthenticationOk", "ParameterStatus", "BackendKeyData", "NoticeResponse", "ReadyForQuery"}
	if d := cmp.Diff(want, c.receiveUntilReady(t)); d != "" {
		t.Errorf("login (-want +got):\n%s", d)
	}
	values := func() []string {
		var got []string
		for {
			msg, err := c.fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := msg.(type) {
			case *pgproto3.DataRow:
				got = append(got, string(m.Values[0]))
			case *pgproto3.ErrorResponse:
				got = append(got, "error "+m.Code+" "+m.Severity)
			case *pgproto3.ReadyForQuery:
				return got
			default:
				got = append(got, typeName(msg))
			}
		}
	}
	c.send(t, &pgproto3.Query{String: "client one"})
	if d := cmp.Diff([]string{"RowDescription", "A", "B", "CommandComplete"}, values()); d != "" {
		t.Errorf("rewritten rows (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Query{String: "client two"})
	if d := cmp.Diff([]string{"RowDescription", "C", "error XX001 ERROR"}, values()); d != "" {
		t.Errorf("failed row (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if d := cmp.Diff([]string{"BindComplete", "E", "CommandComplete"}, values()); d != "" {
		t.Errorf("hidden describe (-want +got):\n%s", d)
	}
	wantServer := []string{"Query catalog", "Query rewritten one", "Query rewritten two", "Bind", "Describe", "Execute", "Sync"}
	if d := cmp.Diff(wantServer, <-received); d != "" {
		t.Errorf("server received (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string(nil), ti.params); d != "" {
		t.Errorf("parameter statuses after startup (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Terminate{})
}
