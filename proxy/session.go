package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one client connection and its own upstream connection.
//
// Lifecycle: startup (TLS, startup message, authentication relay, in the
// session's goroutine), prepare (the interceptor's NewSession, while the
// client still waits for its first ReadyForQuery), then relay:
// clientToServer and serverToClient run concurrently until the first of
// them fails, the client leaves, or the server kills the session.
type Session struct {
	id  uint64
	srv *Server
	log *slog.Logger // child logger with conn_id, remote_addr (user, database after startup)

	// raw is the accepted connection; client is raw or the TLS conn over it.
	// Written during startup only.
	raw    net.Conn
	client net.Conn
	// server is the upstream connection (TLS or not). connMu guards its
	// assignment against kill.
	connMu sync.Mutex
	server net.Conn

	// clientR: read by startup, then by clientToServer only.
	clientR *frameReader
	// serverR: read by startup, then by serverToClient only.
	serverR *frameReader
	// serverW: written by startup, then by clientToServer only.
	serverW *frameWriter
	// clientW is written by startup, then by serverToClient; wmu guards it
	// against sendFinalError and flushes.
	wmu     sync.Mutex
	clientW *frameWriter

	// q is the FIFO of expectations shared by the two directions.
	q expectations

	// icpt transforms the traffic; nil when the server has no Interceptor.
	// copyIcpt is icpt when it rewrites COPY FROM STDIN data, else nil.
	// Set by prepare.
	icpt     SessionInterceptor
	copyIcpt CopyInterceptor
	// params are the server's settings reported during startup, for the
	// interceptor's NewSession. Startup and prepare only.
	params map[string]string
	// ready is the server's first ReadyForQuery, held back from the client
	// until prepare is done, so the client can neither send nor cancel
	// while the interceptor runs its own queries; holding makes
	// flushClient keep what is buffered for the client (the cancel key
	// among it) until then. Startup and prepare only.
	ready   []byte
	holding bool

	// c2s is clientToServer's tally; s2c is serverToClient's.
	c2s, s2c relayCounts

	// Owned by serverToClient (read by relay once it has ended).
	state s2cState
	// rows rewrites the DataRows of the current result (state s2cRows);
	// nil forwards them raw. rowsTo is who receives them.
	rows   RowTransformer
	rowsTo audience
	// copyOut rewrites the CopyData of the COPY TO STDOUT under way (nil:
	// raw); rowsTo receives them.
	copyOut CopyTransformer
	// out is scratch space for rewritten messages.
	out []byte
	// stmt counts the statements of the simple Query under way that the
	// server answered (OwnStatements); ReadyForQuery resets it.
	stmt int

	tlsClient      bool   // the client connection is TLS
	user, database string // from the startup message, for logs
	relaying       atomic.Bool
	terminated     atomic.Bool // the client sent Terminate
	// errc receives the first error of the relay (buffer 1, non-blocking
	// sends): from either direction or from kill.
	errc chan error
	// stopped is closed when the relay ends: a direction waiting for the
	// other gives up.
	stopped  chan struct{}
	killOnce sync.Once
	killErr  atomic.Pointer[error]
}

// s2cState is where serverToClient stands in the server's answers.
//
//	s2cBetween → s2cRows        RowDescription of a Query's result, first DataRow of an Execute
//	s2cRows    → s2cBetween     the result ends (CommandComplete, EmptyQueryResponse,
//	                            PortalSuspended, an ErrorResponse, ReadyForQuery)
//	any        → s2cMuted       a result's row failed in the proxy with a non-fatal error
//	s2cMuted   → s2cBetween     ReadyForQuery
//	any        → s2cServerClosing  the server sent FATAL or PANIC (final)
type s2cState uint8

const (
	s2cBetween s2cState = iota // between results
	s2cRows                    // inside a result: DataRows go through rows
	// s2cMuted: the client got the proxy's error for the current result;
	// the server's answers are dropped up to ReadyForQuery, as if the
	// server had failed the statement there.
	s2cMuted
	// s2cServerClosing: the server said why it closes; its EOF is
	// expected and the client needs no error of ours.
	s2cServerClosing
)

// setState moves serverToClient to to, unless it is muted (which only
// ReadyForQuery ends) or the server is closing (final).
func (s *Session) setState(to s2cState) {
	if s.state != s2cMuted && s.state != s2cServerClosing {
		s.state = to
	}
}

func newSession(srv *Server, id uint64, conn net.Conn) *Session {
	s := &Session{
		id:      id,
		srv:     srv,
		raw:     conn,
		client:  conn,
		log:     srv.log.With("conn_id", id, "remote_addr", conn.RemoteAddr().String()),
		errc:    make(chan error, 1),
		stopped: make(chan struct{}),
	}
	s.q.space.L = &s.q.mu
	return s
}

// run serves the session to its end and records how it ended.
func (s *Session) run(ctx context.Context) {
	start := time.Now()
	m := s.srv.metrics
	m.ActiveConnections.Inc()
	defer m.ActiveConnections.Dec()

	stop := context.AfterFunc(ctx, func() { s.kill(ErrShuttingDown) })
	defer stop()

	err := s.serve(ctx)
	if k := s.killErr.Load(); k != nil && !errors.Is(err, errClientTerminated) {
		err = *k
	}
	info := Classify(err)
	m.Connections.WithLabelValues(info.Reason).Inc()
	s.closeConns()

	attrs := []any{"duration_s", durationSeconds(time.Since(start)), "outcome", info.Reason}
	if err != nil && !errors.Is(err, errClientTerminated) {
		attrs = append(attrs, "reason", err.Error())
	}
	level := slog.LevelInfo
	switch info.Reason {
	case outcomeOK, outcomeCancel, outcomeAuthFailed, outcomeRefused:
	case outcomePanic, outcomeInternal:
		level = slog.LevelError
	default:
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "session closed", attrs...)
}

// serve runs the phases; it recovers a panic of the startup phase (the relay
// goroutines recover their own).
func (s *Session) serve(ctx context.Context) (err error) {
	defer s.recoverPanic(&err)
	if err := s.startup(ctx); err != nil {
		s.sendFinalError(err)
		return err
	}
	if err := s.prepare(ctx); err != nil {
		s.sendFinalError(err)
		return fmt.Errorf("prepare session: %w", err)
	}
	s.log.Info("session opened", "tls", s.tlsClient)
	return s.relay()
}

// prepare runs after authentication and before the client has its first
// ReadyForQuery: the one moment the proxy owns the upstream connection
// alone. The interceptor starts its session here; then the client gets
// the ReadyForQuery.
func (s *Session) prepare(ctx context.Context) error {
	if icpt := s.srv.interceptor(); icpt != nil {
		si, err := icpt.NewSession(ctx, &Conn{s})
		if err != nil {
			return err
		}
		s.icpt = si
		s.copyIcpt, _ = si.(CopyInterceptor)
	}
	s.params = nil
	s.holding = false
	if err := s.writeClient(s.ready); err != nil {
		return err
	}
	return s.flushClient()
}

// ServerParameter returns a setting the server reported during startup
// (client_encoding, standard_conforming_strings, ...). Valid in
// NewSession; later changes reach SessionInterceptor.ParameterStatus.
func (c *Conn) ServerParameter(name string) string { return c.s.params[name] }

// relay runs the two directions until the first error, then stops both.
func (s *Session) relay() error {
	s.raw.SetDeadline(time.Time{})
	s.client.SetDeadline(time.Time{})
	s.server.SetDeadline(time.Time{})
	// From now on only post-startup frontend types are valid, up to the
	// configured size.
	s.clientR.valid = &frontendTypes
	s.clientR.max = s.srv.cfg.Limits.MaxMessageBytes
	s.relaying.Store(true)
	if k := s.killErr.Load(); k != nil { // killed during startup
		return *k
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go s.clientToServer(&wg)
	go s.serverToClient(&wg)
	first := <-s.errc
	close(s.stopped)
	s.q.mu.Lock()
	s.q.space.Broadcast() // a clientToServer waiting for room gives up
	s.q.mu.Unlock()

	// Unblock both directions: closing the upstream stops serverToClient's
	// read and clientToServer's writes; deadlines stop clientToServer's
	// read and any write to a client that does not read. The client
	// connection stays open for the final error message.
	s.server.Close()
	now := time.Now()
	s.client.SetReadDeadline(now)
	s.client.SetWriteDeadline(now.Add(time.Second))
	wg.Wait()

	s.sendFinalError(first)
	return first
}

// fail reports a direction's end without blocking: the first error wins.
func (s *Session) fail(err error) {
	select {
	case s.errc <- err:
	default:
	}
}

// kill ends the session from outside (Shutdown, Close).
func (s *Session) kill(err error) {
	s.killOnce.Do(func() {
		s.killErr.Store(&err)
		if s.relaying.Load() {
			s.fail(err)
			return
		}
		// Startup is one goroutine blocked on one of the conns.
		s.raw.SetDeadline(time.Now())
		s.connMu.Lock()
		if s.server != nil {
			s.server.SetDeadline(time.Now())
		}
		s.connMu.Unlock()
	})
}

// sendFinalError writes the client-facing form of err, if it has one, as the
// session's last message. Only called when no relay goroutine runs.
func (s *Session) sendFinalError(err error) {
	info := Classify(err)
	if info.Code == "" || s.clientW == nil || s.state == s2cServerClosing {
		return
	}
	info.Fatal = true // the session ends with it, whatever it is
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.client.SetWriteDeadline(time.Now().Add(time.Second))
	s.out = appendErrorResponse(s.out[:0], info)
	s.clientW.Write(s.out)
	s.clientW.Flush()
}

func (s *Session) closeConns() {
	s.client.Close()
	s.raw.Close()
	s.connMu.Lock()
	if s.server != nil {
		s.server.Close()
	}
	s.connMu.Unlock()
}

// recoverPanic turns a panic into the session's error, logged with a stack
// but never with message contents (the panic value is only printed with %T).
func (s *Session) recoverPanic(errp *error) {
	v := recover()
	if v == nil {
		return
	}
	s.srv.metrics.SessionPanics.Inc()
	s.log.Error("session panic", "panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
	*errp = &panicError{value: fmt.Sprintf("%T", v)}
}

// noteParameterStatus hands a ParameterStatus to whoever tracks the
// server's settings: the interceptor once it runs, the startup
// snapshot before.
func (s *Session) noteParameterStatus(msg []byte) {
	name, rest, ok := CString(msg[5:])
	if !ok {
		return
	}
	value, _, _ := CString(rest)
	if s.icpt != nil {
		s.icpt.ParameterStatus(string(name), string(value))
		return
	}
	if s.params == nil {
		s.params = map[string]string{}
	}
	s.params[string(name)] = string(value)
}
