package proxy

import "bytes"

// handleErrorResponse relays a server error (through the Responder of the
// message it answers). In the extended protocol it answers the head entry,
// and the server then skips every message up to Sync: those entries are
// popped, unanswered, at the next ReadyForQuery. For a simple Query, a
// FunctionCall or a Sync (a failed commit) ReadyForQuery follows. With
// nothing pending it is asynchronous (a FATAL before the server closes).
func (s *Session) handleErrorResponse(msg []byte) error {
	fatal := isFatal(msg)
	s.q.mu.Lock()
	s.q.copyIn = false
	e := s.q.peek()
	var (
		r     Responder
		to    = toClient
		query bool
	)
	if e != nil {
		r, to, query = e.Responder, e.audience(), e.Kind == KindQuery
	}
	pops := e != nil && !kindsNoPopError.has(e.Kind)
	if pops {
		s.q.failed = true // the entries behind it go unanswered
		s.q.pop()
	}
	s.q.mu.Unlock()
	s.setState(s2cBetween)
	s.copyOut = nil
	if fatal {
		s.state = s2cServerClosing
	}
	if r != nil {
		if o, ok := r.(OwnStatements); ok && query && o.Own(s.stmt) {
			s.out = o.OwnErrorResponse(s.out[:0], msg)
		} else {
			s.out = r.ErrorResponse(s.out[:0], msg)
		}
		msg = s.out
		if pops {
			r.Answered('E')
		}
	}
	return s.send(to, msg)
}

// handleReadyForQuery completes a Sync, Query or FunctionCall, popping the
// entries the server skipped after an error.
func (s *Session) handleReadyForQuery(msg []byte) error {
	if len(msg) != 6 {
		return serverProtocolErrorf("invalid ReadyForQuery")
	}
	s.q.mu.Lock()
	// owed: a client's Query or FunctionCall was skipped; the client waits
	// for a ReadyForQuery, which this one must be even if the Sync that
	// gets it is the proxy's own.
	owed := false
	for {
		e := s.q.peek()
		if e == nil {
			s.q.mu.Unlock()
			return desync('Z', e)
		}
		// After an extended-protocol error the server skips every message
		// up to Sync, a Query or FunctionCall among them (it reads them,
		// answers nothing): only a Sync ends that cycle.
		if e.Kind == KindSync || e.Kind.endsCycle() && !s.q.failed {
			break
		}
		if !s.q.failed {
			s.q.mu.Unlock()
			return desync('Z', e)
		}
		owed = owed || e.Kind.endsCycle() && e.audience() == toClient
		e.answered(0) // skipped by the server after an error
		s.q.pop()
	}
	s.q.failed = false
	s.q.copyIn = false
	s.q.txStatus = msg[5]
	s.stmt = 0
	s.q.mu.Unlock()
	if s.state == s2cMuted {
		s.state = s2cBetween
	}
	if owed {
		r, _, err := s.pop('Z', kindsAny)
		if err != nil {
			return err
		}
		if r != nil {
			r.Answered('Z')
		}
		return s.send(toClient, msg)
	}
	return s.complete('Z', msg, kindsAny)
}

// isFatal reports whether an ErrorResponse has severity FATAL or PANIC. It
// reads only the severity fields, never the message or detail.
func isFatal(msg []byte) bool {
	fields := msg[5:]
	for len(fields) > 1 {
		code := fields[0]
		end := bytes.IndexByte(fields[1:], 0)
		if end < 0 {
			return false
		}
		value := fields[1 : 1+end]
		if code == 'V' || code == 'S' {
			return string(value) == "FATAL" || string(value) == "PANIC"
		}
		fields = fields[end+2:]
	}
	return false
}
