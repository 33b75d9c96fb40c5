package proxy

import (
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
