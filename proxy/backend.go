package proxy

import (
	"bytes"
	"errors"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Sets of expectation kinds a server message may complete or belong to.
type kindSet uint16

func kinds(ks ...expectKind) kindSet {
	var s kindSet
	for _, k := range ks {
		s |= 1 << k
	}
	return s
}

func (s kindSet) has(k expectKind) bool { return s&(1<<k) != 0 }

var (
	kindsParse      = kinds(expectParse)
	kindsBind       = kinds(expectBind)
	kindsClose      = kinds(expectClose)
	kindsDescribe   = kinds(expectDescribeStatement, expectDescribePortal)
	kindsExecute    = kinds(expectExecute)
	kindsResult     = kinds(expectExecute, expectQuery)
	kindsRowDesc    = kinds(expectDescribeStatement, expectDescribePortal, expectQuery)
	kindsFunction   = kinds(expectFunctionCall)
	kindsStatement  = kinds(expectDescribeStatement)
	kindsNoPopError = kinds(expectQuery, expectFunctionCall, expectSync)
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
	case 'C':
		return s.handleCommandComplete(msg)
	case 'I':
		return s.handleEmptyQueryResponse(msg)
	case 's':
		return s.handlePortalSuspended(msg)
	case '1':
		return s.handleParseComplete(msg)
	case '2':
		return s.handleBindComplete(msg)
	case '3':
		return s.handleCloseComplete(msg)
	case 't':
		return s.handleParameterDescription(msg)
	case 'n':
		return s.handleNoData(msg)
	case 'Z':
		return s.handleReadyForQuery(msg)
	case 'E':
		return s.handleErrorResponse(msg)
	case 'G', 'W':
		return s.handleCopyInResponse(msg)
	case 'H':
		return s.handleCopyOutResponse(msg)
	case 'V':
		return s.handleFunctionCallResponse(msg)
	case 'S':
		s.noteParameterStatus(msg)
		return s.send(msg)
	case 'd', 'c', 'A', 'N':
		// CopyData, CopyDone, NotificationResponse, NoticeResponse: no
		// expectation involved.
		return s.send(msg)
	default:
		return serverProtocolErrorf("unexpected message type %q", typ)
	}
}

// send buffers msg for the client, unless it answers a message the proxy
// sent itself or belongs to a result that failed to decrypt.
func (s *Session) send(msg []byte) error {
	if s.hidden || s.mute || s.internal {
		switch msg[0] {
		case 'A', 'N', 'S': // asynchronous: always the client's
		case 'E':
			if s.mute || s.internal {
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
		pending = e.kind.String()
	}
	return protocolErrorf("protocol out of sync: server message %q while %s was pending", typ, pending)
}

// complete forwards msg, which completes the head entry (one of want),
// through the entry's transformation when transform is set; then answers
// the local entries that reach the head.
func (s *Session) complete(typ byte, msg []byte, want kindSet, transform bool) error {
	s.q.mu.Lock()
	e := s.q.peek()
	if e == nil || e.local || !want.has(e.kind) {
		s.q.mu.Unlock()
		return desync(typ, e)
	}
	t := e.transform
	s.hidden = e.hidden
	s.internal = e.internal
	onReady := e.onReady
	e.record(typ)
	s.q.pop()
	s.q.emitting = true
	s.q.mu.Unlock()
	s.rowTransformSet = false

	var err error
	if transform && t != nil {
		err = s.sendRowDescription(t, msg)
	} else {
		err = s.send(msg)
	}
	s.hidden, s.internal = false, false
	if onReady != nil && typ == 'Z' {
		onReady()
	}
	s.q.mu.Lock()
	s.q.emitting = false
	if derr := s.drainLocalLocked(); err == nil {
		err = derr
	}
	s.q.mu.Unlock()
	return err
}

// drainLocalLocked answers the locally rejected entries at the head of the
// FIFO (dropping them silently while the server skips to Sync). q.mu held.
func (s *Session) drainLocalLocked() error {
	wrote := false
	for e := s.q.peek(); e != nil && e.local; e = s.q.peek() {
		if !s.q.failed {
			s.wmu.Lock()
			s.clientW.Write(e.response)
			if e.kind == expectQuery {
				s.clientW.Write([]byte{'Z', 0, 0, 0, 5, s.q.txStatus})
			}
			s.wmu.Unlock()
			wrote = true
		}
		s.q.pop()
	}
	if !wrote {
		return nil
	}
	s.wmu.Lock()
	err := s.clientW.Flush()
	s.wmu.Unlock()
	if err != nil {
		return &clientIOError{err}
	}
	return nil
}

// inspect returns the head entry for a message that belongs to it without
// completing it. Call with q.mu held.
func (s *Session) inspect(typ byte, want kindSet) (*expectation, error) {
	e := s.q.peek()
	if e == nil || e.local || !want.has(e.kind) {
		return nil, desync(typ, e)
	}
	s.internal = e.internal
	return e, nil
}

// handleParseComplete: ParseComplete answers Parse.
func (s *Session) handleParseComplete(msg []byte) error {
	return s.complete('1', msg, kindsParse, false)
}

// handleBindComplete: BindComplete answers Bind.
func (s *Session) handleBindComplete(msg []byte) error {
	return s.complete('2', msg, kindsBind, false)
}

// handleCloseComplete: CloseComplete answers Close.
func (s *Session) handleCloseComplete(msg []byte) error {
	return s.complete('3', msg, kindsClose, false)
}

// handleParameterDescription: the first answer to Describe(statement).
func (s *Session) handleParameterDescription(msg []byte) error {
	s.q.mu.Lock()
	e, err := s.inspect('t', kindsStatement)
	var st *phiStatement
	if err == nil {
		e.gotParams = true
		st = e.stmt
	}
	s.q.mu.Unlock()
	if err != nil {
		return err
	}
	if st != nil {
		out, err := st.describeParams(s.out[:0], msg)
		if err != nil {
			return err
		}
		s.out = out
		return s.send(out)
	}
	return s.send(msg)
}

// handleRowDescription: the answer to Describe, or the start of a result of
// a simple Query (whose DataRows follow).
func (s *Session) handleRowDescription(msg []byte) error {
	s.q.mu.Lock()
	e, err := s.inspect('T', kindsRowDesc)
	if err != nil {
		s.q.mu.Unlock()
		return err
	}
	if e.kind != expectQuery {
		s.q.mu.Unlock()
		return s.complete('T', msg, kindsDescribe, true)
	}
	t := e.transform
	s.q.mu.Unlock()
	s.rowTransform, s.rowTransformSet = t, true
	if t == nil {
		return s.send(msg)
	}
	if err := s.sendRowDescription(t, msg); err != nil {
		return err
	}
	if r, ok := t.(*phiResult); ok && r.t == nil {
		s.rowTransform = nil // no PHI column: rows go through raw
	}
	return nil
}

func (s *Session) sendRowDescription(t ResultTransformer, msg []byte) error {
	out, err := t.RowDescription(s.out[:0], msg)
	if err != nil {
		return err
	}
	s.out = out
	return s.send(out)
}

// handleDataRow: one row of the current result. The hot path: no lock
// unless the result just started.
func (s *Session) handleDataRow(msg []byte) error {
	if !s.rowTransformSet {
		s.q.mu.Lock()
		e, err := s.inspect('D', kindsResult)
		if err == nil {
			s.rowTransform = e.transform
		}
		s.q.mu.Unlock()
		if err != nil {
			return err
		}
		s.rowTransformSet = true
	}
	if s.rowTransform == nil {
		return s.send(msg)
	}
	out, err := s.rowTransform.DataRow(s.out[:0], msg)
	if err != nil {
		return s.resultFailed(err)
	}
	if r, ok := s.rowTransform.(*phiResult); ok && r.t == nil {
		s.rowTransform = nil // no PHI column: the next rows go through raw
	}
	s.out = out
	return s.send(out)
}

// handleCommandComplete ends an Execute, or one statement of a simple Query.
func (s *Session) handleCommandComplete(msg []byte) error {
	return s.endResult('C', msg)
}

// handleEmptyQueryResponse: an empty statement; ends it as CommandComplete does.
func (s *Session) handleEmptyQueryResponse(msg []byte) error {
	return s.endResult('I', msg)
}

func (s *Session) endResult(typ byte, msg []byte) error {
	s.q.mu.Lock()
	e, err := s.inspect(typ, kindsResult)
	if err != nil {
		s.q.mu.Unlock()
		return err
	}
	if e.kind == expectExecute {
		s.q.mu.Unlock()
		return s.complete(typ, msg, kindsExecute, false)
	}
	e.statement++
	s.q.mu.Unlock()
	s.rowTransformSet = false
	return s.send(msg)
}

// handlePortalSuspended: Execute stopped at its row limit.
func (s *Session) handlePortalSuspended(msg []byte) error {
	return s.complete('s', msg, kindsExecute, false)
}

// handleNoData: the answer to Describe for a statement without result.
func (s *Session) handleNoData(msg []byte) error {
	return s.complete('n', msg, kindsDescribe, false)
}

// handleFunctionCallResponse: the result of FunctionCall (ReadyForQuery
// follows and completes it).
func (s *Session) handleFunctionCallResponse(msg []byte) error {
	s.q.mu.Lock()
	_, err := s.inspect('V', kindsFunction)
	s.q.mu.Unlock()
	if err != nil {
		return err
	}
	return s.send(msg)
}

// handleCopyInResponse: COPY FROM STDIN (or COPY BOTH) starts. The server
// now ignores Sync until the copy ends, so the Syncs already pipelined
// behind the COPY will not be answered.
func (s *Session) handleCopyInResponse(msg []byte) error {
	s.q.mu.Lock()
	_, err := s.inspect(msg[0], kindsResult)
	if err == nil {
		s.q.copyIn = true
		s.q.dropSyncsAfterHead()
	}
	s.q.mu.Unlock()
	if err != nil {
		return err
	}
	return s.send(msg)
}

// handleCopyOutResponse: COPY TO STDOUT starts; CopyData and CopyDone
// follow, then CommandComplete.
func (s *Session) handleCopyOutResponse(msg []byte) error {
	s.q.mu.Lock()
	_, err := s.inspect('H', kindsResult)
	s.q.mu.Unlock()
	if err != nil {
		return err
	}
	return s.send(msg)
}

// handleErrorResponse relays a server error unchanged. In the extended
// protocol it answers the head entry, and the server then skips every
// message up to Sync: those entries are popped, unanswered, at the next
// ReadyForQuery. For a simple Query, a FunctionCall or a Sync (a failed
// commit) ReadyForQuery follows. With nothing pending it is asynchronous
// (a FATAL before the server closes).
func (s *Session) handleErrorResponse(msg []byte) error {
	if isFatal(msg) {
		s.serverFatal = true
	}
	s.q.mu.Lock()
	s.q.copyIn = false
	e := s.q.peek()
	if e != nil && e.raise {
		msg = s.raisedError(msg)
	}
	if e != nil && e.internal {
		if c, ok := e.transform.(*catalogCollector); ok {
			c.failed = true // the session keeps the catalog it had
		}
		s.q.mu.Unlock()
		return nil
	}
	if e == nil || e.local || kindsNoPopError.has(e.kind) {
		// Nothing to complete: asynchronous (e.g. FATAL before closing
		// while only local answers are pending), or ReadyForQuery follows.
		s.q.mu.Unlock()
		return s.send(msg)
	}
	// complete pops the failed entry, whose answer this error is; failed
	// makes the skipped entries behind it go unanswered.
	s.q.failed = true
	s.q.mu.Unlock()
	return s.complete('E', msg, ^kindSet(0), false)
}

// handleReadyForQuery completes a Sync, Query or FunctionCall, popping the
// entries the server skipped after an error.
func (s *Session) handleReadyForQuery(msg []byte) error {
	if len(msg) != 6 {
		return serverProtocolErrorf("invalid ReadyForQuery")
	}
	s.q.mu.Lock()
	for {
		e := s.q.peek()
		if e == nil || e.local {
			s.q.mu.Unlock()
			return desync('Z', e)
		}
		if e.kind.endsCycle() {
			break
		}
		if !s.q.failed {
			s.q.mu.Unlock()
			return desync('Z', e)
		}
		e.record('Z')
		s.q.pop() // skipped by the server after an error
	}
	s.q.failed = false
	s.q.copyIn = false
	s.q.txStatus = msg[5]
	s.q.mu.Unlock()
	s.mute = false
	return s.complete('Z', msg, ^kindSet(0), false)
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

// resultFailed ends a result whose row failed to decrypt: the client gets
// an ErrorResponse (XX001, naming the column, never the value) and none of
// the server's messages up to ReadyForQuery, as if the server had failed
// the statement there. Other errors end the session.
func (s *Session) resultFailed(err error) error {
	var de *DecryptError
	if !errors.As(err, &de) {
		return err
	}
	if s.phi != nil {
		s.phi.eng.metrics.decryptFailure.Inc()
	}
	s.log.Warn("decryption failed", "column", de.Column)
	out, _ := appendErrorResponse(s.out[:0], err)
	s.out = out
	if err := s.send(out); err != nil {
		return err
	}
	s.mute = true
	return nil
}

// raisedError removes from the ErrorResponse of a raise (raise.go) the
// fields that describe the DO block rather than the refused statement.
func (s *Session) raisedError(msg []byte) []byte {
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return msg
	}
	er.Where, er.File, er.Line, er.Routine = "", "", 0, ""
	out, err := er.Encode(nil)
	if err != nil {
		return msg
	}
	return out
}
