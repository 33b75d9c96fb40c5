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

// handleFrontend hands one client message to its handler: the interceptor
// for the messages that carry SQL or name statements and portals, the
// relay itself for the rest.
func (s *Session) handleFrontend(typ byte, msg []byte) error {
	if !frontendTypes[typ] {
		return protocolErrorf("invalid frontend message type %q", typ)
	}
	s.c2s.messages++
	s.c2s.bytes += uint64(len(msg))
	switch typ {
	case 'Q', 'P', 'B', 'E':
		if typ == 'Q' {
			s.c2s.simpleQueries++
		} else if typ == 'E' {
			s.c2s.queries++
		}
		return s.intercept(typ, msg)
	case 'D', 'C':
		if !validTarget(msg) {
			return protocolErrorf("invalid %s message", KindOf(typ, msg))
		}
		return s.intercept(typ, msg)
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

// intercept hands a Query, Parse, Bind, Describe, Execute or Close to the
// interceptor, or forwards it.
func (s *Session) intercept(typ byte, msg []byte) error {
	if s.icpt != nil {
		return s.icpt.Frontend(typ, msg)
	}
	if err := s.push(expectation{Expectation: Expectation{Kind: KindOf(typ, msg)}}); err != nil {
		return err
	}
	return s.forward(msg)
}

// validTarget checks the 'S'/'P' byte and the name of Describe and Close.
func validTarget(msg []byte) bool {
	return len(msg) >= 7 && msg[len(msg)-1] == 0 && (msg[5] == 'S' || msg[5] == 'P')
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

// handleSync: Sync ends an extended-protocol batch. In COPY FROM STDIN mode
// the server ignores Sync, so it is not forwarded then (forwarding it could
// make a server that just failed the COPY answer it, out of our count).
func (s *Session) handleSync(msg []byte) error {
	if s.icpt != nil {
		s.icpt.Sync()
	}
	switch err := s.push(expectation{Expectation: Expectation{Kind: KindSync}}); {
	case errors.Is(err, errSyncInCopy):
		return nil
	case err != nil:
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
	if s.icpt != nil {
		return s.icpt.Frontend('F', msg)
	}
	if err := s.push(expectation{Expectation: Expectation{Kind: KindFunctionCall}}); err != nil {
		return err
	}
	return s.forward(msg)
}

// handleCopyData: data of COPY FROM STDIN, raw unless the interceptor
// rewrites it.
func (s *Session) handleCopyData(msg []byte) error {
	if s.copyIcpt != nil {
		return s.copyIcpt.CopyData(msg)
	}
	return s.forward(msg)
}

// handleCopyDone: CopyDone or CopyFail ends COPY FROM STDIN.
func (s *Session) handleCopyDone(msg []byte) error {
	s.q.mu.Lock()
	s.q.copyIn = false
	s.q.copyEnds++
	s.q.mu.Unlock()
	if s.copyIcpt != nil {
		return s.copyIcpt.CopyEnd(msg[0], msg)
	}
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
