package proxy

import (
	"bytes"
	"sync"
)

// Sets of expectation kinds a server message may complete or belong to.
type kindSet uint16

func kinds(ks ...Kind) kindSet {
	var s kindSet
	for _, k := range ks {
		s |= 1 << k
	}
	return s
}

func (s kindSet) has(k Kind) bool { return s&(1<<k) != 0 }

var (
	kindsAny        = ^kindSet(0)
	kindsParse      = kinds(KindParse)
	kindsBind       = kinds(KindBind)
	kindsClose      = kinds(KindClose)
	kindsDescribe   = kinds(KindDescribeStatement, KindDescribePortal)
	kindsExecute    = kinds(KindExecute)
	kindsResult     = kinds(KindExecute, KindQuery)
	kindsRowDesc    = kinds(KindDescribeStatement, KindDescribePortal, KindQuery)
	kindsFunction   = kinds(KindFunctionCall)
	kindsStatement  = kinds(KindDescribeStatement)
	kindsNoPopError = kinds(KindQuery, KindFunctionCall, KindSync)
)

// serverToClient reads the server's messages, matches each response to the
// head of the FIFO and forwards it (or its transformation). Writes to the
// client are flushed whenever the server has nothing more buffered: before
// the frame reader would block, so ReadyForQuery, COPY responses,
// notifications and notices never wait in a buffer.
func (s *Session) serverToClient(wg *sync.WaitGroup) {
	defer wg.Done()
	var err error
	defer func() { s.fail(err) }()
	defer s.recoverPanic(&err) // runs first: recover must be called by the deferred function itself
	err = s.serverLoop()
}

func (s *Session) serverLoop() error {
	for {
		typ, msg, err := s.serverR.next()
		if err != nil {
			if s.terminated.Load() {
				return errClientTerminated
			}
			return upstreamReadError(err)
		}
		if err := s.handleBackend(typ, msg); err != nil {
			return err
		}
	}
}

// handleBackend hands one server message to its handler.
func (s *Session) handleBackend(typ byte, msg []byte) error {
	s.s2c.messages++
	s.s2c.bytes += uint64(len(msg))
	switch typ {
	case 'D':
		return s.handleDataRow(msg)
	case 'T':
		return s.handleRowDescription(msg)
	case 'C', 'I':
		// CommandComplete, EmptyQueryResponse
		return s.handleCommandComplete(typ, msg)
	case 's':
		// PortalSuspended: Execute stopped at its row limit.
		return s.complete(typ, msg, kindsExecute)
	case '1':
		return s.complete(typ, msg, kindsParse)
	case '2':
		return s.complete(typ, msg, kindsBind)
	case '3':
		return s.complete(typ, msg, kindsClose)
	case 'n':
		// NoData: the answer to Describe of something without a result.
		return s.complete(typ, msg, kindsDescribe)
	case 't':
		return s.handleParameterDescription(msg)
	case 'Z':
		return s.handleReadyForQuery(msg)
	case 'E':
		return s.handleErrorResponse(msg)
	case 'G', 'W':
		return s.handleCopyInResponse(msg)
	case 'H':
		return s.handleCopyOutResponse(msg)
	case 'V':
		// FunctionCallResponse: ReadyForQuery follows and completes it.
		return s.within(typ, msg, kindsFunction)
	case 'S':
		s.noteParameterStatus(msg)
		return s.send(toClient, msg)
	case 'd':
		return s.handleServerCopyData(msg)
	case 'c':
		return s.handleServerCopyDone(msg)
	case 'A', 'N':
		// NotificationResponse, NoticeResponse: no expectation involved.
		return s.send(toClient, msg)
	default:
		return serverProtocolErrorf("unexpected message type %q", typ)
	}
}

// send buffers msg for the client, unless its audience is the proxy or
// the current result failed in the proxy (s2cMuted). Asynchronous
// messages always reach the client, and so does a server error answering
// a message the proxy sent in place of a client's.
func (s *Session) send(to audience, msg []byte) error {
	if len(msg) == 0 {
		return nil
	}
	if to != toClient || s.state == s2cMuted {
		switch msg[0] {
		case 'A', 'N', 'S':
		case 'E':
			if to == toProxyOnly || s.state == s2cMuted {
				return nil
			}
		default:
			return nil
		}
	}
	s.wmu.Lock()
	_, err := s.clientW.Write(msg)
	s.wmu.Unlock()
	if err != nil {
		return &clientIOError{err}
	}
	return nil
}

// flushClient sends what is buffered for the client and publishes
// serverToClient's counts. The server frame reader calls it before blocking.
func (s *Session) flushClient() error {
	if s.holding {
		return nil
	}
	s.wmu.Lock()
	var err error
	if s.clientW.Buffered() > 0 {
		err = s.clientW.Flush()
	}
	s.wmu.Unlock()
	if err != nil {
		return &clientIOError{err}
	}
	if c := &s.s2c; c.messages > 0 {
		m := s.srv.metrics
		m.messagesS2C.Add(float64(c.messages))
		m.bytesS2C.Add(float64(c.bytes))
		*c = relayCounts{}
	}
	return nil
}

// desync is the error for a response that matches no pending expectation:
// the session can no longer tell which answer belongs to which request.
func desync(typ byte, e *expectation) error {
	pending := "nothing"
	if e != nil {
		pending = e.Kind.String()
	}
	return protocolErrorf("protocol out of sync: server message %q while %s was pending", typ, pending)
}

// head returns the head entry's Responder and audience for a message that
// belongs to it (one of want) without completing it.
func (s *Session) head(typ byte, want kindSet) (Responder, audience, Kind, error) {
	s.q.mu.Lock()
	defer s.q.mu.Unlock()
	e := s.q.peek()
	if e == nil || !want.has(e.Kind) {
		return nil, 0, 0, desync(typ, e)
	}
	return e.Responder, e.audience(), e.Kind, nil
}

// pop completes the head entry (one of want) with msg and returns its
// Responder and audience; the Responder is told how it was answered.
func (s *Session) pop(typ byte, want kindSet) (Responder, audience, error) {
	s.q.mu.Lock()
	e := s.q.peek()
	if e == nil || !want.has(e.Kind) {
		s.q.mu.Unlock()
		return nil, 0, desync(typ, e)
	}
	r, to := e.Responder, e.audience()
	s.q.pop()
	s.q.mu.Unlock()
	s.setState(s2cBetween)
	return r, to, nil
}

// complete forwards msg, which completes the head entry (one of want).
// The Responder learns the answer before the client can act on it.
func (s *Session) complete(typ byte, msg []byte, want kindSet) error {
	r, to, err := s.pop(typ, want)
	if err != nil {
		return err
	}
	if r != nil {
		r.Answered(typ)
	}
	return s.send(to, msg)
}

// within forwards msg, which belongs to the head entry (one of want)
// without completing it.
func (s *Session) within(typ byte, msg []byte, want kindSet) error {
	_, to, _, err := s.head(typ, want)
	if err != nil {
		return err
	}
	return s.send(to, msg)
}

// handleParameterDescription: the first answer to Describe(statement).
func (s *Session) handleParameterDescription(msg []byte) error {
	r, to, _, err := s.head('t', kindsStatement)
	if err != nil {
		return err
	}
	if r == nil {
		return s.send(to, msg)
	}
	if s.out, err = r.ParameterDescription(s.out[:0], msg); err != nil {
		return err
	}
	return s.send(to, s.out)
}

// handleRowDescription: the answer to Describe, or the start of a result of
// a simple Query (whose DataRows follow).
func (s *Session) handleRowDescription(msg []byte) error {
	r, to, kind, err := s.head('T', kindsRowDesc)
	if err != nil {
		return err
	}
	if kind != KindQuery {
		if r, to, err = s.pop('T', kindsDescribe); err != nil {
			return err
		}
	}
	var rows RowTransformer
	out := msg
	if r != nil {
		s.out, rows, err = r.RowDescription(s.out[:0], msg)
		if kind != KindQuery {
			r.Answered('T')
		}
		if err != nil {
			if Classify(err).Fatal {
				return err
			}
			// Refused by the interceptor: the client gets its error in
			// place of the description and nothing more of this cycle.
			s.rows, s.rowsTo = nil, to
			return s.resultFailed(err)
		}
		out = s.out
	}
	if kind == KindQuery {
		s.setState(s2cRows)
		s.rows, s.rowsTo = rows, to
	}
	return s.send(to, out)
}

// handleDataRow: one row of the current result. The hot path: no lock
// unless the result just started.
func (s *Session) handleDataRow(msg []byte) error {
	switch s.state {
	case s2cMuted:
		return nil
	case s2cBetween:
		// The first row of an Execute's result.
		r, to, _, err := s.head('D', kindsResult)
		if err != nil {
			return err
		}
		s.rows, s.rowsTo = nil, to
		if r != nil {
			if s.rows, err = r.Rows(); err != nil {
				return s.resultFailed(err)
			}
		}
		s.setState(s2cRows)
	}
	if s.rows == nil {
		return s.send(s.rowsTo, msg)
	}
	out, err := s.rows.DataRow(s.out[:0], msg)
	if err != nil {
		return s.resultFailed(err)
	}
	s.out = out
	return s.send(s.rowsTo, out)
}

// handleCommandComplete ends an Execute, or one statement of a simple
// Query (CommandComplete or EmptyQueryResponse).
func (s *Session) handleCommandComplete(typ byte, msg []byte) error {
	r, to, kind, err := s.head(typ, kindsResult)
	if err != nil {
		return err
	}
	if typ == 'C' && r != nil {
		if cc, ok := r.(CommandCompleter); ok {
			tag, _, ok := CString(msg[5:])
			if !ok {
				return serverProtocolErrorf("invalid CommandComplete")
			}
			cc.CommandComplete(tag)
		}
	}
	if kind == KindExecute {
		return s.complete(typ, msg, kindsExecute)
	}
	s.setState(s2cBetween)
	return s.send(to, msg)
}

// handleCopyInResponse: COPY FROM STDIN (or COPY BOTH) starts. The server
// now ignores Sync until the copy ends, so the Syncs already pipelined
// behind the COPY will not be answered.
func (s *Session) handleCopyInResponse(msg []byte) error {
	s.q.mu.Lock()
	e := s.q.peek()
	if e == nil || !kindsResult.has(e.Kind) {
		s.q.mu.Unlock()
		return desync(msg[0], e)
	}
	to, r := e.audience(), e.Responder
	s.q.copyIn = true
	s.q.dropSyncsAfterHead()
	s.q.mu.Unlock()
	if cr, ok := r.(CopyResponder); ok && msg[0] == 'G' {
		out, err := cr.CopyInResponse(s.out[:0], msg)
		if err != nil {
			s.rowsTo = to
			return s.resultFailed(err)
		}
		s.out, msg = out, out
	}
	return s.send(to, msg)
}

// handleCopyOutResponse: COPY TO STDOUT starts; CopyData and CopyDone
// follow, then CommandComplete. Its Responder may rewrite the data.
func (s *Session) handleCopyOutResponse(msg []byte) error {
	r, to, _, err := s.head('H', kindsResult)
	if err != nil {
		return err
	}
	s.copyOut, s.rowsTo = nil, to
	cr, ok := r.(CopyResponder)
	if !ok || s.state == s2cMuted {
		return s.send(to, msg)
	}
	out, t, err := cr.CopyOutResponse(s.out[:0], msg)
	if err != nil {
		return s.resultFailed(err)
	}
	s.out, s.copyOut = out, t
	return s.send(to, out)
}

// handleServerCopyData: one CopyData of COPY TO STDOUT (or of COPY BOTH),
// rewritten when the COPY's Responder asked to.
func (s *Session) handleServerCopyData(msg []byte) error {
	if s.copyOut == nil {
		return s.send(toClient, msg)
	}
	if s.state == s2cMuted {
		return nil
	}
	out, err := s.copyOut.CopyData(s.out[:0], msg)
	if err != nil {
		s.copyOut = nil
		return s.resultFailed(err)
	}
	s.out = out
	return s.send(s.rowsTo, out)
}

// handleServerCopyDone: the server's CopyDone ends COPY TO STDOUT.
func (s *Session) handleServerCopyDone(msg []byte) error {
	t := s.copyOut
	if t == nil {
		return s.send(toClient, msg)
	}
	s.copyOut = nil
	if s.state == s2cMuted {
		return nil
	}
	out, err := t.CopyDone(s.out[:0])
	if err != nil {
		return s.resultFailed(err)
	}
	s.out = append(out, msg...)
	return s.send(s.rowsTo, s.out)
}

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
		r  Responder
		to = toClient
	)
	if e != nil {
		r, to = e.Responder, e.audience()
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
		s.out = r.ErrorResponse(s.out[:0], msg)
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

// resultFailed ends a result whose row the proxy could not rewrite with a
// non-fatal error (a value that failed to decrypt): the client gets the
// error and none of the server's messages up to ReadyForQuery, as if the
// server had failed the statement there. A fatal error ends the session.
func (s *Session) resultFailed(err error) error {
	info := Classify(err)
	if info.Fatal {
		return err
	}
	s.log.Warn("result failed", "sqlstate", info.Code, "error", info.Message)
	s.out = appendErrorResponse(s.out[:0], info)
	if err := s.send(s.rowsTo, s.out); err != nil {
		return err
	}
	s.setState(s2cMuted)
	return nil
}
