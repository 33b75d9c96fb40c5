package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// This file is the seam between the relay and whatever transforms its
// traffic (proxy/phi). The relay knows the protocol; an Interceptor knows
// what the messages mean.

// Interceptor transforms the traffic of every session of a Server
// (WithInterceptor). It is shared by all sessions and must be safe for
// concurrent use.
type Interceptor interface {
	// NewSession is called once per session, after the server accepted
	// the login and before the client gets its first ReadyForQuery: the
	// client cannot send anything, nor cancel, until it returns. c may
	// run queries (Conn.Query) then. An error ends the session with it.
	// A nil SessionInterceptor (and nil error) leaves the session alone:
	// its traffic is relayed as if the server had no Interceptor.
	NewSession(ctx context.Context, c *Conn) (SessionInterceptor, error)
}

// ReadinessChecker is implemented by an Interceptor that can tell that it
// cannot serve correctly (for proxy/phi: a governed database whose tables
// do not match the policy). /readyz reports not ready while Ready returns
// an error, whose text is the body of the answer: it must be client-safe
// (names, never values). Ready is called on the HTTP server's goroutines
// and must be cheap and safe for concurrent use.
type ReadinessChecker interface {
	Ready() error
}

// SessionInterceptor sees one session's client messages and the settings
// the server reports. Frontend and Sync run on the clientToServer
// goroutine, ParameterStatus on serverToClient.
type SessionInterceptor interface {
	// Frontend handles a Query, Parse, Bind, Describe, Execute, Close or
	// FunctionCall (typ is its type byte; msg is the whole message, header included,
	// valid until Frontend returns). It decides what goes upstream with
	// Conn.Send: msg itself, a rewritten message, or something else. An
	// error ends the session with Classify's answer to it.
	Frontend(typ byte, msg []byte) error
	// Sync is told of each Sync before the relay forwards it.
	Sync()
	// ParameterStatus is told of each ParameterStatus the server sends
	// (names and values are copies).
	ParameterStatus(name, value string)
}

// CopyInterceptor is implemented by a SessionInterceptor that rewrites the
// data of COPY FROM STDIN. It is optional: without it CopyData, CopyDone
// and CopyFail go upstream raw, as they do for sessions without an
// interceptor. Its methods run on clientToServer.
type CopyInterceptor interface {
	// CopyData handles a client CopyData (msg is the whole message,
	// header included, valid until CopyData returns): it forwards what
	// goes upstream, if anything, with Conn.Forward. An error ends the
	// session with Classify's answer to it.
	CopyData(msg []byte) error
	// CopyEnd handles the client's CopyDone ('c') or CopyFail ('f'), as
	// CopyData does. The relay has already noted that the client left
	// COPY mode.
	CopyEnd(typ byte, msg []byte) error
}

// CopyResponder is implemented by a Responder whose message may start a
// COPY and that rewrites it (optional, as CommandCompleter). Its methods
// run on serverToClient. An error that Classify calls non-fatal fails the
// COPY for the client (it gets the error, then nothing more up to
// ReadyForQuery); any other ends the session.
type CopyResponder interface {
	// CopyInResponse rewrites the CopyInResponse that starts COPY FROM
	// STDIN, appending the message to send to dst.
	CopyInResponse(dst, msg []byte) ([]byte, error)
	// CopyOutResponse rewrites the CopyOutResponse that starts COPY TO
	// STDOUT and returns how the CopyData that follow are rewritten: nil
	// forwards them raw.
	CopyOutResponse(dst, msg []byte) ([]byte, CopyTransformer, error)
}

// CopyTransformer rewrites the data of one COPY TO STDOUT. Errors are as
// a CopyResponder's.
type CopyTransformer interface {
	// CopyData appends to dst the messages the client gets for one
	// server CopyData (msg, header included): none, one or several.
	CopyData(dst, msg []byte) ([]byte, error)
	// CopyDone appends to dst what the client gets before the server's
	// CopyDone, which the relay then forwards.
	CopyDone(dst []byte) ([]byte, error)
}

// Kind is what a forwarded frontend message awaits from the server.
type Kind uint8

// Kinds of expectations.
const (
	KindQuery             Kind = iota + 1 // simple Query: results for each statement, then ReadyForQuery
	KindParse                             // ParseComplete
	KindBind                              // BindComplete
	KindDescribeStatement                 // ParameterDescription, then RowDescription or NoData
	KindDescribePortal                    // RowDescription or NoData
	KindExecute                           // DataRow*, then CommandComplete, EmptyQueryResponse or PortalSuspended (or COPY)
	KindClose                             // CloseComplete
	KindSync                              // ReadyForQuery
	KindFunctionCall                      // FunctionCallResponse, then ReadyForQuery
)

var kindNames = [...]string{
	KindQuery: "Query", KindParse: "Parse", KindBind: "Bind",
	KindDescribeStatement: "Describe(statement)", KindDescribePortal: "Describe(portal)",
	KindExecute: "Execute", KindClose: "Close", KindSync: "Sync", KindFunctionCall: "FunctionCall",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// endsCycle reports whether ReadyForQuery completes this kind.
func (k Kind) endsCycle() bool {
	return k == KindSync || k == KindQuery || k == KindFunctionCall
}

// KindOf is the kind of a frontend message that awaits an answer (0 for
// one that does not: Sync, Flush, COPY data, Terminate).
func KindOf(typ byte, msg []byte) Kind {
	switch typ {
	case 'Q':
		return KindQuery
	case 'P':
		return KindParse
	case 'B':
		return KindBind
	case 'D':
		if len(msg) > 5 && msg[5] == 'S' {
			return KindDescribeStatement
		}
		return KindDescribePortal
	case 'E':
		return KindExecute
	case 'C':
		return KindClose
	case 'F':
		return KindFunctionCall
	}
	return 0
}

// Responder rewrites the server's answers to one forwarded message on
// their way to the client. Its methods run on serverToClient; each
// appends the message to send, header included, to dst. Embed
// PassResponder for the methods that change nothing.
type Responder interface {
	// RowDescription rewrites a RowDescription (a Describe's answer, or
	// the start of one result of a Query) and returns how the DataRows of
	// that result are rewritten: nil forwards them raw. An error that
	// Classify calls non-fatal refuses the result (or the description):
	// the client gets the error in its place and nothing more up to
	// ReadyForQuery, as with a RowTransformer's; any other ends the
	// session.
	RowDescription(dst, msg []byte) ([]byte, RowTransformer, error)
	// Rows is asked at the first DataRow of an Execute's result, which
	// has no RowDescription of its own.
	Rows() (RowTransformer, error)
	// ParameterDescription rewrites a Describe(statement)'s first answer.
	ParameterDescription(dst, msg []byte) ([]byte, error)
	// ErrorResponse rewrites a server error answering this message.
	ErrorResponse(dst, msg []byte) []byte
	// Answered is told how the server answered: the type of the message
	// that completed the expectation ('1', '2', '3', 'n', 'T', 'C', 's',
	// 'I', 'Z'), 'E' for an error, or 0 when the server skipped the
	// message after an earlier error.
	Answered(typ byte)
}

// CommandCompleter is implemented by a Responder that wants the command
// tag of each CommandComplete answering its message: an Execute's, or each
// statement's of a simple Query, in order ("SELECT 3", "UPDATE 1",
// "INSERT 0 2"). It is optional, as http.Flusher is to a ResponseWriter:
// Responders that only rewrite need not implement it.
//
// The relay calls it on serverToClient before the client can receive the
// CommandComplete (and, for an Execute, before Answered('C')), also when
// the proxy has muted the result after a non-fatal error: the statement ran
// on the server all the same. tag is valid only during the call.
type CommandCompleter interface {
	CommandComplete(tag []byte)
}

// RowTransformer rewrites the DataRows of one result. An error that
// Classify calls non-fatal ends that result for the client (it gets the
// error and nothing more up to ReadyForQuery); any other ends the session.
type RowTransformer interface {
	DataRow(dst, msg []byte) ([]byte, error)
}

// PassResponder is a Responder that forwards everything unchanged.
type PassResponder struct{}

// RowDescription implements Responder.
func (PassResponder) RowDescription(dst, msg []byte) ([]byte, RowTransformer, error) {
	return append(dst, msg...), nil, nil
}

// Rows implements Responder.
func (PassResponder) Rows() (RowTransformer, error) { return nil, nil }

// ParameterDescription implements Responder.
func (PassResponder) ParameterDescription(dst, msg []byte) ([]byte, error) {
	return append(dst, msg...), nil
}

// ErrorResponse implements Responder.
func (PassResponder) ErrorResponse(dst, msg []byte) []byte { return append(dst, msg...) }

// Answered implements Responder.
func (PassResponder) Answered(byte) {}

var _ Responder = PassResponder{}

// Expectation is what one message sent upstream awaits.
type Expectation struct {
	Kind Kind
	// Responder rewrites the answers; nil forwards them raw.
	Responder Responder
	// Hidden: the proxy sent this message itself (a Describe of its own,
	// the messages of a raise). Its answers are not forwarded, except an
	// ErrorResponse, which stands for the client message it replaced.
	Hidden bool
}

// Conn is an interceptor's handle on its session's relay. Send, Flush,
// Idle and Query are for the clientToServer goroutine (Frontend, Sync)
// and for NewSession.
type Conn struct{ s *Session }

// Logger is the session's logger (conn_id, remote_addr, user, database).
func (c *Conn) Logger() *slog.Logger { return c.s.log }

// ID is the session's conn_id.
func (c *Conn) ID() uint64 { return c.s.id }

// Send records what msg awaits and buffers msg for the server.
func (c *Conn) Send(e Expectation, msg []byte) error {
	if err := c.s.push(expectation{Expectation: e}); err != nil {
		return err
	}
	return c.s.forward(msg)
}

// Forward buffers msg for the server without recording an expectation:
// for the messages that await no answer of their own (CopyData, CopyDone,
// CopyFail).
func (c *Conn) Forward(msg []byte) error { return c.s.forward(msg) }

// Pass sends a client message unchanged, its answers unchanged.
func (c *Conn) Pass(typ byte, msg []byte) error {
	return c.Send(Expectation{Kind: KindOf(typ, msg)}, msg)
}

// Flush sends what is buffered for the server.
func (c *Conn) Flush() error { return c.s.flushServer() }

// Idle reports whether nothing is awaiting an answer and the server is
// not skipping messages after an error, and the transaction status of the
// last ReadyForQuery ('I', 'T' or 'E').
func (c *Conn) Idle() (idle bool, txStatus byte) {
	q := &c.s.q
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.len() == 0 && !q.failed, q.txStatus
}

// Pending is the number of messages sent upstream (the client's and the
// interceptor's own) that await an answer.
func (c *Conn) Pending() int {
	q := &c.s.q
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.len()
}

// ErrQueryFailed is returned by Conn.Query when the server answered the
// query with an error (which the client does not see).
var ErrQueryFailed = errors.New("the proxy's query failed")

// queryTimeout bounds the wait for the answers to Conn.Query.
const queryTimeout = 30 * time.Second

// QueryName names the prepared statement and the portal of Conn.Query
// once the relay runs: it uses the extended protocol, which leaves the
// client's unnamed statement and portal alone, where a simple Query
// destroys them (a client may parse the unnamed statement in one batch
// and bind it in the next, as pgx's describe-exec mode does). Clients may
// not use the name.
const QueryName = "phiproxy_query"

// Query runs sql, a statement of the proxy's own, and returns its rows as
// text values; the client sees none of its answers. Call it only when
// Idle: the query must neither interleave with the client's pipeline nor
// be skipped, and it runs in the current transaction.
func (c *Conn) Query(sql string) ([][][]byte, error) {
	s := c.s
	if !s.relaying.Load() {
		msg, err := (&pgproto3.Query{String: sql}).Encode(nil)
		if err != nil {
			return nil, err
		}
		return s.querySync(msg)
	}
	col := &queryCollector{done: make(chan struct{})}
	// The statement and portal are closed first too: an Execute that
	// failed skipped the Closes after it. The portal must be closed: inside
	// a transaction block it outlives the Sync, and binding it again would
	// fail the client's transaction.
	for _, m := range []struct {
		kind Kind
		msg  pgproto3.FrontendMessage
	}{
		{KindClose, &pgproto3.Close{ObjectType: 'P', Name: QueryName}},
		{KindClose, &pgproto3.Close{ObjectType: 'S', Name: QueryName}},
		{KindParse, &pgproto3.Parse{Name: QueryName, Query: sql}},
		{KindBind, &pgproto3.Bind{DestinationPortal: QueryName, PreparedStatement: QueryName}},
		{KindExecute, &pgproto3.Execute{Portal: QueryName}},
		{KindClose, &pgproto3.Close{ObjectType: 'P', Name: QueryName}},
		{KindClose, &pgproto3.Close{ObjectType: 'S', Name: QueryName}},
		{KindSync, &pgproto3.Sync{}},
	} {
		msg, err := m.msg.Encode(nil)
		if err != nil {
			return nil, err
		}
		if err := s.push(expectation{Expectation: Expectation{Kind: m.kind, Responder: col}, internal: true}); err != nil {
			return nil, err
		}
		if err := s.forward(msg); err != nil {
			return nil, err
		}
	}
	if err := s.flushServer(); err != nil {
		return nil, err
	}
	timer := time.NewTimer(queryTimeout)
	defer timer.Stop()
	select {
	case <-col.done:
	case <-s.stopped:
		return nil, errors.New("session ended during the proxy's query")
	case <-timer.C:
		return nil, serverProtocolErrorf("no answer to the proxy's query in %v", queryTimeout)
	}
	if col.failed {
		return nil, ErrQueryFailed
	}
	return col.rows, nil
}

// querySync runs a query before the relay starts, reading the answers
// itself. Asynchronous messages (notices, settings) reach the client.
func (s *Session) querySync(msg []byte) ([][][]byte, error) {
	if err := s.forward(msg); err != nil {
		return nil, err
	}
	if err := s.serverW.Flush(); err != nil {
		return nil, &UpstreamError{Connected: true, Err: err}
	}
	var col queryCollector
	for {
		typ, msg, err := s.serverR.next()
		if err != nil {
			return nil, upstreamReadError(err)
		}
		switch typ {
		case 'T', 'C', 'I':
		case 'D':
			if _, err := col.DataRow(nil, msg); err != nil {
				return nil, err
			}
		case 'E':
			col.failed = true
		case 'S':
			s.noteParameterStatus(msg)
			if err := s.writeClient(msg); err != nil {
				return nil, err
			}
		case 'N', 'A':
			if err := s.writeClient(msg); err != nil {
				return nil, err
			}
		case 'Z':
			if col.failed {
				return nil, ErrQueryFailed
			}
			return col.rows, nil
		default:
			return nil, serverProtocolErrorf("unexpected message %q answering the proxy's query", typ)
		}
	}
}

// queryCollector gathers the rows of Conn.Query. Its methods run on
// serverToClient; done is closed with the ReadyForQuery that ends the
// query, after which the caller reads rows and failed.
type queryCollector struct {
	PassResponder
	rows   [][][]byte
	failed bool
	done   chan struct{}
}

// RowDescription implements Responder.
func (c *queryCollector) RowDescription(dst, msg []byte) ([]byte, RowTransformer, error) {
	return dst, c, nil
}

// Rows implements Responder: the rows of the query's Execute.
func (c *queryCollector) Rows() (RowTransformer, error) { return c, nil }

// DataRow implements RowTransformer: it keeps a copy of the row.
func (c *queryCollector) DataRow(dst, msg []byte) ([]byte, error) {
	var row pgproto3.DataRow
	if err := row.Decode(msg[5:]); err != nil {
		return nil, serverProtocolErrorf("invalid DataRow answering the proxy's query")
	}
	vals := make([][]byte, len(row.Values))
	for i, v := range row.Values {
		if v != nil {
			vals[i] = append([]byte{}, v...)
		}
	}
	c.rows = append(c.rows, vals)
	return dst, nil
}

// ErrorResponse implements Responder.
func (c *queryCollector) ErrorResponse(dst, msg []byte) []byte {
	c.failed = true
	return dst
}

// Answered implements Responder.
func (c *queryCollector) Answered(typ byte) {
	if typ == 'Z' {
		close(c.done)
	}
}
