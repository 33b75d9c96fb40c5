package proxy

import (
	"fmt"
	"sync"
)

// expectKind is what a forwarded (or locally answered) frontend message
// expects back from the server.
type expectKind uint8

const (
	expectQuery             expectKind = iota + 1 // simple Query: results for each statement, then ReadyForQuery
	expectParse                                   // ParseComplete
	expectBind                                    // BindComplete
	expectDescribeStatement                       // ParameterDescription, then RowDescription or NoData
	expectDescribePortal                          // RowDescription or NoData
	expectExecute                                 // DataRow*, then CommandComplete, EmptyQueryResponse or PortalSuspended (or COPY)
	expectClose                                   // CloseComplete
	expectSync                                    // ReadyForQuery
	expectFunctionCall                            // FunctionCallResponse, then ReadyForQuery
)

var expectNames = [...]string{
	expectQuery: "Query", expectParse: "Parse", expectBind: "Bind",
	expectDescribeStatement: "Describe(statement)", expectDescribePortal: "Describe(portal)",
	expectExecute: "Execute", expectClose: "Close", expectSync: "Sync", expectFunctionCall: "FunctionCall",
}

func (k expectKind) String() string {
	if int(k) < len(expectNames) && expectNames[k] != "" {
		return expectNames[k]
	}
	return fmt.Sprintf("expectKind(%d)", k)
}

// endsCycle reports whether ReadyForQuery completes this expectation.
func (k expectKind) endsCycle() bool {
	return k == expectSync || k == expectQuery || k == expectFunctionCall
}

// ResultTransformer rewrites the rows of one statement's result on their way
// to the client (decryption, re-typing, dropping columns). Each method appends
// the rewritten message, header included, to dst. A nil ResultTransformer
// means raw forwarding. It is called from serverToClient only.
//
// TODO(issue 3): the rewriter's plans implement this.
type ResultTransformer interface {
	RowDescription(dst, msg []byte) ([]byte, error)
	DataRow(dst, msg []byte) ([]byte, error)
}

// expectation is one entry of the FIFO: what one frontend message awaits.
type expectation struct {
	kind expectKind
	// seq numbers entries in push order.
	seq uint64
	// local: the proxy answers this message itself; it was never forwarded.
	// response holds the encoded backend messages to send when the entry
	// reaches the head (for a Query, ReadyForQuery is appended then, with
	// the transaction status of that moment).
	local    bool
	response []byte
	// transform rewrites this statement's result rows; nil = raw.
	transform ResultTransformer
	// hidden: the proxy sent this message itself; its answers are
	// swallowed (an ErrorResponse excepted, which answers the client's
	// message it stands for).
	hidden bool
	// internal: a query of the proxy's own (a catalog reload); every
	// answer, errors included, is swallowed, and onReady runs with the
	// ReadyForQuery that ends it. serverToClient.
	internal bool
	onReady  func()
	// raise: one of the messages that make the server fail a statement the
	// proxy refused (raise.go).
	raise bool
	// stmt is the rewritten statement a Describe(statement) describes: its
	// ParameterDescription shows the client's parameter types.
	stmt *phiStatement
	// parsed is the statement a Parse creates, closed the one a Close
	// closes: serverToClient records the server's answer in their state.
	parsed, closed *phiStatement
	// gotParams: a Describe(statement) has seen its ParameterDescription.
	// Written by serverToClient.
	gotParams bool
	// statement counts the results of a simple Query already completed (for
	// a multi-statement text). Written by serverToClient.
	statement int
}

// maxPending bounds the FIFO: a client that pipelines more messages than
// this without reading its results is cut off.
const maxPending = 1 << 20

// expectations is the FIFO shared by the two directions of a session, with
// the protocol state they share. Every field is guarded by mu.
type expectations struct {
	mu sync.Mutex

	// ring holds n entries from head. clientToServer pushes at the tail;
	// serverToClient reads, updates and pops the head.
	ring []expectation
	head int
	n    int
	// nextSeq is the seq of the next push. clientToServer.
	nextSeq uint64

	// copyIn: the server is in COPY FROM STDIN (or COPY BOTH) mode, which
	// ignores Sync and Flush. Set by serverToClient on CopyInResponse;
	// cleared by clientToServer on CopyDone/CopyFail and by serverToClient
	// on ErrorResponse or ReadyForQuery.
	copyIn bool
	// failed: an ErrorResponse ended an extended-protocol batch; the server
	// skips every message up to the next Sync, so those entries get no
	// response. serverToClient.
	failed bool
	// emitting: serverToClient has popped an entry and not yet written the
	// server message that completed it; local answers wait for it, so they
	// stay in order. serverToClient sets and clears it; clientToServer reads.
	emitting bool
	// txStatus is the transaction status of the last ReadyForQuery ('I',
	// 'T' or 'E'). serverToClient writes it; local answers to a Query read it.
	txStatus byte
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

// push appends an entry. It allocates only when the ring grows.
func (q *expectations) push(e expectation) error {
	if q.n == len(q.ring) {
		if q.n >= maxPending {
			return protocolErrorf("more than %d messages pipelined without reading the results", maxPending)
		}
		size := max(16, 2*len(q.ring))
		ring := make([]expectation, size)
		for i := range q.n {
			ring[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = ring, 0
	}
	e.seq = q.nextSeq
	q.nextSeq++
	q.ring[(q.head+q.n)%len(q.ring)] = e
	q.n++
	return nil
}

// pop removes the head entry.
func (q *expectations) pop() {
	q.ring[q.head] = expectation{} // drop references (transform, response)
	q.head = (q.head + 1) % len(q.ring)
	q.n--
}

// at returns the i-th pending entry (0 = head).
func (q *expectations) at(i int) *expectation {
	return &q.ring[(q.head+i)%len(q.ring)]
}

// dropSyncsAfterHead removes the Sync entries behind the head: the server
// ignores Sync while in COPY FROM STDIN mode (protocol docs, "COPY
// Operations"), so those Syncs will never be answered.
func (q *expectations) dropSyncsAfterHead() {
	w := 1
	for r := 1; r < q.n; r++ {
		e := *q.at(r)
		if e.kind == expectSync && !e.local {
			continue
		}
		*q.at(w) = e
		w++
	}
	for i := w; i < q.n; i++ {
		*q.at(i) = expectation{}
	}
	q.n = w
}

// record notes in the statements the entry creates or closes how the server
// answered it: typ is the message that completes the entry ('Z' when the
// server skipped it after an error).
func (e *expectation) record(typ byte) {
	if e.parsed != nil {
		switch typ {
		case '1':
			e.parsed.state.Store(stmtCreated)
		case 'Z':
			e.parsed.state.Store(stmtSkipped)
		default:
			e.parsed.state.Store(stmtFailed)
		}
	}
	if e.closed != nil && typ == '3' {
		e.closed.state.Store(stmtClosed)
	}
}
