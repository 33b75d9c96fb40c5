package proxy

import (
	"errors"
	"sync"
)

// frontendTypes are the message types a client may send after startup.
var frontendTypes = [256]bool{
	'B': true, 'C': true, 'D': true, 'E': true, 'F': true, 'H': true, 'P': true,
	'Q': true, 'S': true, 'X': true, 'c': true, 'd': true, 'f': true,
}

// clientToServer reads the client's messages, records what each expects in
// the FIFO and forwards it. Writes to the server are buffered and flushed
// whenever the client has nothing more buffered (the frame reader calls
// flushServer before it would block), so a batch read in one go leaves in
// one write and nothing the server must answer waits in a buffer.
func (s *Session) clientToServer(wg *sync.WaitGroup) {
	defer wg.Done()
	var err error
	defer func() { s.fail(err) }()
	defer s.recoverPanic(&err) // runs first: recover must be called by the deferred function itself
	err = s.clientLoop()
}

func (s *Session) clientLoop() error {
	for {
		typ, msg, err := s.clientR.next()
		if err != nil {
			err = clientReadError(err)
			if errors.Is(err, errClientTerminated) {
				// The client left without Terminate: say goodbye for it,
				// so the server does not log an unexpected EOF.
				s.terminated.Store(true)
				s.serverW.Write([]byte{'X', 0, 0, 0, 4})
				s.serverW.Flush()
			}
			return err
		}
		if err := s.handleFrontend(typ, msg); err != nil {
			return err
		}
	}
}

// handleFrontend classifies one client message and hands it to its handler.
func (s *Session) handleFrontend(typ byte, msg []byte) error {
	if !frontendTypes[typ] {
		return protocolErrorf("invalid frontend message type %q", typ)
	}
	s.c2s.messages++
	s.c2s.bytes += uint64(len(msg))
	if s.skipUntilSync && typ != 'S' && typ != 'X' {
		return nil
	}
	if h := s.srv.hooks.frontend; h != nil {
		if err := h(typ, msg); err != nil {
			return s.rejectLocally(expectKindOf(typ, msg), err)
		}
	}
	if s.phi != nil {
		defer s.phi.noteBatch(typ)
	}
	switch typ {
	case 'Q':
		return s.handleQuery(msg)
	case 'P':
		return s.handleParse(msg)
	case 'B':
		return s.handleBind(msg)
	case 'D':
		return s.handleDescribe(msg)
	case 'E':
		return s.handleExecute(msg)
	case 'C':
		return s.handleClose(msg)
	case 'S':
		return s.handleSync(msg)
	case 'H':
		return s.handleFlush(msg)
	case 'F':
		return s.handleFunctionCall(msg)
	case 'd':
		return s.handleCopyData(msg)
	case 'c', 'f':
		return s.handleCopyDone(msg)
	default: // 'X'
		return s.handleTerminate(msg)
	}
}

// expectKindOf is the expectation a frontend message would push.
func expectKindOf(typ byte, msg []byte) expectKind {
	switch typ {
	case 'Q':
		return expectQuery
	case 'P':
		return expectParse
	case 'B':
		return expectBind
	case 'D':
		if len(msg) > 5 && msg[5] == 'S' {
			return expectDescribeStatement
		}
		return expectDescribePortal
	case 'E':
		return expectExecute
	case 'C':
		return expectClose
	case 'F':
		return expectFunctionCall
	}
	return 0
}

// forward buffers msg for the server.
func (s *Session) forward(msg []byte) error {
	if _, err := s.serverW.Write(msg); err != nil {
		return &UpstreamError{Connected: true, Err: err}
	}
	return nil
}

// flushServer sends what clientToServer buffered and publishes its counts.
// The client frame reader calls it before blocking.
func (s *Session) flushServer() error {
	if s.serverW.Buffered() > 0 {
		if err := s.serverW.Flush(); err != nil {
			return &UpstreamError{Connected: true, Err: err}
		}
	}
	c := &s.c2s
	if c.messages > 0 {
		m := s.srv.metrics
		m.messagesC2S.Add(float64(c.messages))
		m.bytesC2S.Add(float64(c.bytes))
		if c.queries > 0 {
			m.queryExt.Add(float64(c.queries))
		}
		if c.simpleQueries > 0 {
			m.querySimple.Add(float64(c.simpleQueries))
		}
		if c.functionCalls > 0 {
			m.queryFunc.Add(float64(c.functionCalls))
		}
		*c = relayCounts{}
	}
	return nil
}

// expect pushes an expectation for a message about to be forwarded.
func (s *Session) expect(kind expectKind) error {
	s.q.mu.Lock()
	err := s.q.push(expectation{kind: kind})
	s.q.mu.Unlock()
	return err
}

// pushExpectation pushes e for a message about to be forwarded.
func (s *Session) pushExpectation(e expectation) error {
	s.q.mu.Lock()
	err := s.q.push(e)
	s.q.mu.Unlock()
	return err
}

// pushAndForward pushes e and forwards msg.
func (s *Session) pushAndForward(e expectation, msg []byte) error {
	if err := s.pushExpectation(e); err != nil {
		return err
	}
	return s.forward(msg)
}

// expectAndForward is the pass-through path of a message awaiting a response.
func (s *Session) expectAndForward(kind expectKind, msg []byte) error {
	if err := s.expect(kind); err != nil {
		return err
	}
	return s.forward(msg)
}

// handleQuery: a simple Query, which may hold several statements.
func (s *Session) handleQuery(msg []byte) error {
	s.c2s.simpleQueries++
	if s.phi != nil {
		return s.phiQuery(msg)
	}
	return s.expectAndForward(expectQuery, msg)
}

// handleParse: Parse (a prepared statement, named or unnamed).
func (s *Session) handleParse(msg []byte) error {
	if s.phi != nil {
		return s.phiParse(msg)
	}
	return s.expectAndForward(expectParse, msg)
}

// handleBind: Bind (a portal from a statement and parameter values).
func (s *Session) handleBind(msg []byte) error {
	if s.phi != nil {
		return s.phiBind(msg)
	}
	return s.expectAndForward(expectBind, msg)
}

// handleDescribe: Describe of a statement ('S') or a portal ('P').
func (s *Session) handleDescribe(msg []byte) error {
	kind, err := targetKind(msg, "Describe")
	if err != nil {
		return err
	}
	if s.phi != nil {
		return s.phiDescribe(kind, msg)
	}
	if kind == 'S' {
		return s.expectAndForward(expectDescribeStatement, msg)
	}
	return s.expectAndForward(expectDescribePortal, msg)
}

// handleExecute: Execute of a portal.
func (s *Session) handleExecute(msg []byte) error {
	s.c2s.queries++
	if s.phi != nil {
		return s.phiExecute(msg)
	}
	return s.expectAndForward(expectExecute, msg)
}

// handleClose: Close of a statement or portal.
func (s *Session) handleClose(msg []byte) error {
	kind, err := targetKind(msg, "Close")
	if err != nil {
		return err
	}
	if s.phi != nil {
		return s.phiClose(kind, msg)
	}
	return s.expectAndForward(expectClose, msg)
}

// handleSync: Sync ends an extended-protocol batch. In COPY FROM STDIN mode
// the server ignores Sync, so it is not forwarded then (forwarding it could
// make a server that just failed the COPY answer it, out of our count).
func (s *Session) handleSync(msg []byte) error {
	s.skipUntilSync = false
	if s.phi != nil {
		s.phi.batch++
	}
	s.q.mu.Lock()
	if s.q.copyIn {
		s.q.mu.Unlock()
		return nil
	}
	err := s.q.push(expectation{kind: expectSync})
	s.q.mu.Unlock()
	if err != nil {
		return err
	}
	return s.forward(msg)
}

// handleFlush: Flush asks the server to send what it has; it has no
// response of its own.
func (s *Session) handleFlush(msg []byte) error {
	return s.forward(msg)
}

// handleFunctionCall: the legacy fast-path FunctionCall.
func (s *Session) handleFunctionCall(msg []byte) error {
	s.c2s.functionCalls++
	return s.expectAndForward(expectFunctionCall, msg)
}

// handleCopyData: a row of COPY FROM STDIN.
func (s *Session) handleCopyData(msg []byte) error {
	return s.forward(msg)
}

// handleCopyDone: CopyDone or CopyFail ends COPY FROM STDIN.
func (s *Session) handleCopyDone(msg []byte) error {
	s.q.mu.Lock()
	s.q.copyIn = false
	s.q.mu.Unlock()
	return s.forward(msg)
}

// handleTerminate forwards Terminate and ends the session.
func (s *Session) handleTerminate(msg []byte) error {
	// The server closes after Terminate: serverToClient's EOF then is the
	// client leaving, not the upstream failing.
	s.terminated.Store(true)
	if err := s.forward(msg); err != nil {
		return err
	}
	if err := s.flushServer(); err != nil {
		return err
	}
	return errClientTerminated
}

// targetKind validates the 'S'/'P' byte of Describe and Close.
func targetKind(msg []byte, name string) (byte, error) {
	if len(msg) < 7 || msg[len(msg)-1] != 0 || (msg[5] != 'S' && msg[5] != 'P') {
		return 0, protocolErrorf("invalid %s message", name)
	}
	return msg[5], nil
}

// rejectLocally answers a message the proxy refuses itself, without
// forwarding it: the ErrorResponse for err is sent when the entry reaches
// the head of the FIFO, so it stays in order with the server's answers. In
// the extended protocol the rest of the batch is dropped up to Sync, as the
// server would after an error.
//
// TODO(issue 3): a rejection inside a transaction block must also abort the
// server's transaction (DESIGN.md "Fail closed").
func (s *Session) rejectLocally(kind expectKind, err error) error {
	resp, fatal := appendErrorResponse(nil, err)
	if fatal || kind == 0 {
		return err
	}
	s.q.mu.Lock()
	defer s.q.mu.Unlock()
	if perr := s.q.push(expectation{kind: kind, local: true, response: resp}); perr != nil {
		return perr
	}
	if kind != expectQuery {
		s.skipUntilSync = true
	}
	if !s.q.emitting && s.q.len() == 1 {
		// Nothing is pending before it: the server will not prompt
		// serverToClient, so answer now.
		return s.drainLocalLocked()
	}
	return nil
}
