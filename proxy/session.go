package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one client connection and its own upstream connection.
//
// Lifecycle: startup (TLS, startup message, authentication relay, in the
// session's goroutine), prepare (the seam for the proxy's own queries), then
// relay: clientToServer and serverToClient run concurrently until the first
// of them fails, the client leaves, or the server kills the session.
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
	serverW *bufio.Writer
	// clientW is written by startup, then by serverToClient and, for local
	// answers, by clientToServer: always with wmu held.
	wmu     sync.Mutex
	clientW *bufio.Writer

	// q is the FIFO of expectations shared by the two directions.
	q expectations

	// phi is the PHI state, nil when the server enforces no policy.
	phi *phiSession

	// c2s is clientToServer's tally; s2c is serverToClient's (under wmu).
	c2s, s2c relayCounts

	// Owned by clientToServer.
	// skipUntilSync: a locally rejected extended-protocol message; drop
	// everything up to the next Sync, as the server would after an error.
	skipUntilSync bool

	// Owned by serverToClient.
	// hidden: the message being handled answers a message the proxy sent
	// itself (expectation.hidden), so send drops it.
	hidden bool
	// internal: the message answers the proxy's own query (a catalog
	// reload): send drops it, errors included.
	internal bool
	// mute: a result failed to decrypt; send drops the server's messages
	// up to ReadyForQuery, as the server would have stopped there.
	mute bool
	// rowTransform is the transform for DataRows of the current result, valid
	// while rowTransformSet; reset whenever the head is popped.
	rowTransform    ResultTransformer
	rowTransformSet bool
	// serverFatal: the server sent a FATAL or PANIC ErrorResponse; its
	// closing the connection next is expected, the client already knows.
	serverFatal bool
	// out is scratch space for rewritten messages.
	out []byte

	tlsClient      bool   // the client connection is TLS
	user, database string // from the startup message, for logs
	relaying       atomic.Bool
	terminated     atomic.Bool // the client sent Terminate
	// nonStandardStrings: the server reported standard_conforming_strings
	// off, so backslashes escape in '...' literals and the SQL analysis,
	// which lexes them as PostgreSQL does with it on, cannot be trusted.
	nonStandardStrings atomic.Bool
	// errc receives the first error of the relay (buffer 1, non-blocking
	// sends): from either direction or from kill.
	errc chan error
	// stopped is closed when the relay ends: a direction waiting for the
	// other gives up.
	stopped  chan struct{}
	killOnce sync.Once
	killErr  atomic.Pointer[error]
}

func newSession(srv *Server, id uint64, conn net.Conn) *Session {
	return &Session{
		id:      id,
		srv:     srv,
		raw:     conn,
		client:  conn,
		log:     srv.log.With("conn_id", id, "remote_addr", conn.RemoteAddr().String()),
		errc:    make(chan error, 1),
		stopped: make(chan struct{}),
	}
}

// errClientTerminated ends a session on the client's Terminate or EOF.
var errClientTerminated = errors.New("client terminated the session")

// errAuthFailed: the server refused the login (its ErrorResponse was relayed).
var errAuthFailed = errors.New("server refused the login")

// clientIOError is a read or write failure on the client connection.
type clientIOError struct{ err error }

func (e *clientIOError) Error() string { return "client i/o: " + e.err.Error() }
func (e *clientIOError) Unwrap() error { return e.err }

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
	outcome := outcomeOf(err)
	m.Connections.WithLabelValues(outcome).Inc()
	s.closeConns()

	attrs := []any{"duration", time.Since(start).Round(time.Microsecond), "outcome", outcome}
	if err != nil && !errors.Is(err, errClientTerminated) {
		attrs = append(attrs, "reason", err.Error())
	}
	level := slog.LevelInfo
	switch outcome {
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
	s.log.Info("session opened", "tls", s.tlsClient)
	if err := s.prepare(ctx); err != nil {
		s.sendFinalError(err)
		return fmt.Errorf("prepare session: %w", err)
	}
	return s.relay()
}

// prepare runs after authentication (the client has its ReadyForQuery) and
// before the relay starts: the one moment the proxy owns the upstream
// connection alone. A later issue runs its catalog query here, reading the
// answers itself so the client never sees them.
//
// With a policy, it reads the catalog: the OIDs, attribute numbers and
// types of the policy's tables in this database.
func (s *Session) prepare(ctx context.Context) error {
	if s.srv.phi == nil {
		return nil
	}
	s.phi = newPHISession(s.srv.phi)
	if err := s.loadCatalog(); err != nil {
		return fmt.Errorf("load catalog: %w", err)
	}
	return nil
}

// relay runs the two directions until the first error, then stops both.
func (s *Session) relay() error {
	s.raw.SetDeadline(time.Time{})
	s.client.SetDeadline(time.Time{})
	s.server.SetDeadline(time.Time{})
	// From now on only post-startup frontend types are valid; anything
	// else fails at its header.
	s.clientR.valid = &frontendTypes
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
	if err == nil || s.clientW == nil {
		return
	}
	var cio *clientIOError
	switch {
	case errors.Is(err, errClientTerminated), errors.Is(err, errAuthFailed), errors.As(err, &cio):
		return
	case s.serverFatal:
		// The server said why it closes; the client has it already.
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.client.SetWriteDeadline(time.Now().Add(time.Second))
	s.out, _ = appendErrorResponse(s.out[:0], err)
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
// but never with message contents (the panic value is only printed with %T
// unless it is an error or string raised by our own code).
func (s *Session) recoverPanic(errp *error) {
	v := recover()
	if v == nil {
		return
	}
	s.srv.metrics.SessionPanics.Inc()
	s.log.Error("session panic", "panic_type", fmt.Sprintf("%T", v), "stack", string(debug.Stack()))
	*errp = &panicError{value: fmt.Sprintf("%T", v)}
}

// outcomeOf classifies a session's end for phiproxy_connections_total.
func outcomeOf(err error) string {
	var (
		pe  *ProtocolError
		ue  *UpstreamError
		ae  *AuthError
		pa  *panicError
		cio *clientIOError
	)
	switch {
	case err == nil, errors.Is(err, errClientTerminated):
		return outcomeOK
	case errors.Is(err, errCancelRequest):
		return outcomeCancel
	case errors.As(err, &pa):
		return outcomePanic
	case errors.Is(err, ErrShuttingDown):
		return outcomeShutdown
	case errors.Is(err, errAuthFailed):
		return outcomeAuthFailed
	case errors.Is(err, errTLSRequired), errors.As(err, &ae), errors.Is(err, errTLSHandshake):
		return outcomeRefused
	case errors.As(err, &pe):
		return outcomeProtocolError
	case errors.As(err, &ue):
		return outcomeUpstreamError
	case errors.As(err, &cio), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, os.ErrDeadlineExceeded):
		return outcomeClientError
	default:
		return outcomeInternal
	}
}

// noteParameterStatus records the server settings the proxy depends on.
func (s *Session) noteParameterStatus(msg []byte) {
	body := msg[5:]
	i := clen(body)
	if i >= len(body) {
		return
	}
	name, value := string(body[:i]), body[i+1:]
	if name == "standard_conforming_strings" {
		s.nonStandardStrings.Store(string(value[:clen(value)]) != "on")
	}
}
