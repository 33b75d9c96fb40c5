package proxy

import (
	"errors"
	"sync"
)

// expectation is one entry of the FIFO: what one message sent upstream
// awaits.
type expectation struct {
	Expectation
	// internal: a query of the proxy's own (Conn.Query): every answer,
	// errors included, goes to its Responder and none to the client.
	internal bool
	// copyEnds is expectations.copyEnds when the entry was pushed: Syncs
	// sent between a COPY and the client's end of its data share the
	// COPY's value.
	copyEnds uint32
}

// audience is who receives the server's answers to an expectation.
type audience uint8

const (
	toClient    audience = iota // a client's message: its answers are the client's
	toProxy                     // a hidden message: only an ErrorResponse reaches the client
	toProxyOnly                 // an internal query: nothing reaches the client
)

func (e *expectation) audience() audience {
	switch {
	case e.internal:
		return toProxyOnly
	case e.Hidden:
		return toProxy
	}
	return toClient
}

// answered tells the entry's Responder how the server answered it.
func (e *expectation) answered(typ byte) {
	if e.Responder != nil {
		e.Responder.Answered(typ)
	}
}

// maxPending bounds the FIFO. A client that pipelines more messages than
// this is not read from until the server's answers make room, as
// PostgreSQL itself stops reading from a client that does not read its
// answers (backpressure, not an error).
const maxPending = 1 << 12

// expectations is the FIFO shared by the two directions of a session, with
// the protocol state they share. Every field is guarded by mu.
type expectations struct {
	mu sync.Mutex

	// ring holds n entries from head. clientToServer pushes at the tail;
	// serverToClient reads, updates and pops the head.
	ring []expectation
	head int
	n    int
	// space is signalled when an entry is popped: clientToServer waits on
	// it while the FIFO is full.
	space sync.Cond

	// copyIn: the server is in COPY FROM STDIN (or COPY BOTH) mode, which
	// ignores Sync and Flush. Set by serverToClient on CopyInResponse;
	// cleared by clientToServer on CopyDone/CopyFail and by serverToClient
	// on ErrorResponse or ReadyForQuery.
	copyIn bool
	// failed: an ErrorResponse ended an extended-protocol batch; the server
	// skips every message up to the next Sync, so those entries get no
	// response. serverToClient.
	failed bool
	// txStatus is the transaction status of the last ReadyForQuery ('I',
	// 'T' or 'E'). serverToClient writes it.
	txStatus byte
	// copyEnds counts the client's CopyDone and CopyFail messages.
	// clientToServer.
	copyEnds uint32
}

// len reports the number of pending entries.
func (q *expectations) len() int { return q.n }

// peek returns the head entry, or nil when the FIFO is empty. The pointer is
// valid until the next push or pop.
func (q *expectations) peek() *expectation {
	if q.n == 0 {
		return nil
	}
	return &q.ring[q.head]
}

// push appends an entry; the caller made sure there is room. It allocates
// only when the ring grows.
func (q *expectations) push(e expectation) {
	if q.n == len(q.ring) {
		size := max(16, 2*len(q.ring))
		ring := make([]expectation, size)
		for i := range q.n {
			ring[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = ring, 0
	}
	q.ring[(q.head+q.n)%len(q.ring)] = e
	q.n++
}

// pop removes the head entry.
func (q *expectations) pop() {
	q.ring[q.head] = expectation{} // drop the Responder
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	q.space.Signal() // cheap without a waiter

	if q.n == 0 && len(q.ring) > 64 {
		q.ring, q.head = nil, 0 // a burst is over: do not pin its ring
	}
}

// at returns the i-th pending entry (0 = head).
func (q *expectations) at(i int) *expectation {
	return &q.ring[(q.head+i)%len(q.ring)]
}

// dropSyncsAfterHead removes the Sync entries behind the head that the
// client sent before it ended the COPY's data: the server ignores Sync
// while in COPY FROM STDIN mode (protocol docs, "COPY Operations"), so
// those Syncs will never be answered. Syncs sent after the client's
// CopyDone or CopyFail are read once the COPY is over, and answered.
func (q *expectations) dropSyncsAfterHead() {
	w := 1
	for r := 1; r < q.n; r++ {
		e := *q.at(r)
		if e.Kind == KindSync && e.copyEnds == q.at(0).copyEnds {
			continue
		}
		*q.at(w) = e
		w++
	}
	for i := w; i < q.n; i++ {
		*q.at(i) = expectation{}
	}
	q.n = w
	q.space.Broadcast()
}

// errSyncInCopy: a Sync while the server is in COPY FROM STDIN mode,
// which ignores it; it is neither pushed nor forwarded.
var errSyncInCopy = errors.New("sync during copy in")

// push pushes e, waiting while the FIFO is full. clientToServer.
func (s *Session) push(e expectation) error {
	q := &s.q
	q.mu.Lock()
	for q.n >= maxPending {
		// The server can only make room by answering what it has: send
		// it everything buffered before waiting.
		q.mu.Unlock()
		if err := s.flushServer(); err != nil {
			return err
		}
		q.mu.Lock()
		if q.n < maxPending {
			break
		}
		select {
		case <-s.stopped:
			q.mu.Unlock()
			return errors.New("session ended")
		default:
		}
		q.space.Wait()
	}
	if e.Kind == KindSync && q.copyIn {
		q.mu.Unlock()
		return errSyncInCopy
	}
	e.copyEnds = q.copyEnds
	q.push(e)
	q.mu.Unlock()
	return nil
}
