package proxy

import (
	"bytes"
	"context"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
)

// copyInterceptor rewrites COPY: client data is uppercased on its way up,
// server data lowercased on its way down with a row added before CopyDone,
// and the CopyInResponse announces one column.
type copyInterceptor struct{}

func (copyInterceptor) NewSession(ctx context.Context, c *Conn) (SessionInterceptor, error) {
	return &copySession{c: c}, nil
}

type copySession struct{ c *Conn }

func (s *copySession) Frontend(typ byte, msg []byte) error {
	return s.c.Send(Expectation{Kind: KindOf(typ, msg), Responder: copyResponder{}}, msg)
}
func (s *copySession) Sync()                       {}
func (s *copySession) ParameterStatus(_, _ string) {}
func (s *copySession) CopyData(msg []byte) error {
	out, _ := (&pgproto3.CopyData{Data: bytes.ToUpper(msg[5:])}).Encode(nil)
	return s.c.Forward(out)
}
func (s *copySession) CopyEnd(typ byte, msg []byte) error { return s.c.Forward(msg) }

var _ CopyInterceptor = (*copySession)(nil)

type copyResponder struct{ PassResponder }

func (copyResponder) CopyInResponse(dst, msg []byte) ([]byte, error) {
	return (&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}).Encode(dst)
}
func (copyResponder) CopyOutResponse(dst, msg []byte) ([]byte, CopyTransformer, error) {
	return append(dst, msg...), lowerCopy{}, nil
}

type lowerCopy struct{}

func (lowerCopy) CopyData(dst, msg []byte) ([]byte, error) {
	return (&pgproto3.CopyData{Data: bytes.ToLower(msg[5:])}).Encode(dst)
}
func (lowerCopy) CopyDone(dst []byte) ([]byte, error) {
	return (&pgproto3.CopyData{Data: []byte("tail\n")}).Encode(dst)
}

// TestCopySeam drives the COPY hooks of the seam: client CopyData
// rewritten by the CopyInterceptor, the CopyInResponse and the server's
// CopyData by the Query's CopyResponder; and the Syncs around a COPY: the
// server ignores those sent before the client's CopyDone and answers those
// sent after it, pipelined in the simple and the extended protocol.
func TestCopySeam(t *testing.T) {
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
			if d, ok := msg.(*pgproto3.CopyData); ok {
				got = append(got, "CopyData "+string(d.Data))
			} else {
				got = append(got, typeName(msg))
			}
			return msg
		}
		// COPY FROM STDIN (simple), the Sync after CopyDone answered.
		recv()
		be.Send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0, 0}})
		be.Flush()
		recv() // CopyData
		recv() // CopyDone
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		recv() // Sync
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		// COPY FROM STDIN (extended): the Sync before the data ignored.
		for range 3 {
			recv() // Parse, Bind, Execute
		}
		be.Send(&pgproto3.ParseComplete{})
		be.Send(&pgproto3.BindComplete{})
		be.Send(&pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0, 0}})
		be.Flush()
		for range 4 {
			recv() // Sync (ignored in COPY mode), CopyData, CopyDone, Sync
		}
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		// COPY TO STDOUT.
		recv()
		be.Send(&pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}})
		be.Send(&pgproto3.CopyData{Data: []byte("ROW 1\n")})
		be.Send(&pgproto3.CopyData{Data: []byte("ROW 2\n")})
		be.Send(&pgproto3.CopyDone{})
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 2")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
		received <- got
		drain(be)
	})
	srv := startServer(t, testConfig(up.addr), WithInterceptor(copyInterceptor{}))
	c := login(t, srv.Addr())
	all := func() []string {
		t.Helper()
		var got []string
		for {
			msg, err := c.fe.Receive()
			if err != nil {
				t.Fatalf("receive after %v: %v", got, err)
			}
			switch m := msg.(type) {
			case *pgproto3.CopyData:
				got = append(got, "CopyData "+string(m.Data))
			case *pgproto3.CopyInResponse:
				got = append(got, "CopyInResponse "+string(rune('0'+len(m.ColumnFormatCodes))))
			default:
				got = append(got, typeName(msg))
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				return got
			}
		}
	}
	c.send(t, &pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("row\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
	want := []string{"CopyInResponse 1", "CommandComplete", "ReadyForQuery"}
	if d := cmp.Diff(want, all()); d != "" {
		t.Errorf("COPY FROM (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"ReadyForQuery"}, all()); d != "" {
		t.Errorf("the Sync after CopyDone (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Parse{Query: "COPY t FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.CopyData{Data: []byte("ext\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
	want = []string{"ParseComplete", "BindComplete", "CopyInResponse 1", "CommandComplete", "ReadyForQuery"}
	if d := cmp.Diff(want, all()); d != "" {
		t.Errorf("extended COPY FROM (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Query{String: "COPY t TO STDOUT"})
	want = []string{"CopyOutResponse", "CopyData row 1\n", "CopyData row 2\n", "CopyData tail\n", "CopyDone", "CommandComplete", "ReadyForQuery"}
	if d := cmp.Diff(want, all()); d != "" {
		t.Errorf("COPY TO (-want +got):\n%s", d)
	}
	wantServer := []string{"Query", "CopyData ROW\n", "CopyDone", "Sync", "Parse", "Bind", "Execute", "Sync", "CopyData EXT\n", "CopyDone", "Sync", "Query"}
	if d := cmp.Diff(wantServer, <-received); d != "" {
		t.Errorf("server received (-want +got):\n%s", d)
	}
	c.send(t, &pgproto3.Terminate{})
}
