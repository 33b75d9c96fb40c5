package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/rewrite"
)

// phiSession is one session's PHI state. Fields are owned by one direction
// each, as commented; objects handed from clientToServer to serverToClient
// through the FIFO (phiStatement, phiResult) are immutable after the hand
// over, except where a field says otherwise.
type phiSession struct {
	eng *phiEngine
	db  *dbState // the catalog and plans in use; set by prepare

	// clientToServer.
	// batch counts the Syncs (and simple Queries) forwarded.
	batch uint64
	// openBatch: extended-protocol messages went out since the last Sync.
	openBatch bool
	// stale: DDL went through since the catalog was read; it is read again
	// at the next moment nothing is pending (refreshCatalog).
	stale      bool
	w          *phiWriter
	statements map[string]*phiStatement // prepared statements by name
	portals    map[string]*phiPortal    // portals of rewritten statements by name
	buf        []byte                   // scratch for encoded messages

	// serverToClient.
	r *phiReader
}

// phiStatement is a prepared statement as the proxy planned it.
//
// Which statement the server holds under a name is only known from its
// answers: a Parse may fail (a duplicate name, an error earlier in the
// pipeline), a Close may be skipped, DEALLOCATE may drop it. Binding the
// wrong plan could send plaintext to a PHI statement, so each statement
// records what the server did with it (state) and the one it was meant to
// replace (prev), and lookup resolves a name from them.
type phiStatement struct {
	plan *rewrite.Plan
	db   *dbState
	// prev is the statement of the same name the server keeps if this
	// Parse is skipped, or fails (a named one: a failed unnamed Parse
	// leaves no unnamed statement). clientToServer; cut once the Parse is
	// answered, so chains only span unanswered Parses.
	prev *phiStatement
	// batch is the clientToServer batch (count of Syncs) of the Parse.
	batch uint64
	// state is stmtPending until the server answers the Parse (or its
	// Close). Written by serverToClient, read by clientToServer.
	state atomic.Int32
	// paramOIDs are the parameter types the client declared in Parse.
	paramOIDs []uint32
	// rd is the server's RowDescription of the statement, once a Describe
	// answered it. Written by serverToClient, read by clientToServer.
	rd atomic.Pointer[pgproto3.RowDescription]
}

// Statement states, as the server's answers tell them.
const (
	stmtPending int32 = iota // Parse forwarded, not answered yet
	stmtCreated              // ParseComplete
	stmtFailed               // the server ran the Parse and it failed
	stmtSkipped              // the server skipped the Parse after an error
	stmtClosed               // CloseComplete
)

// lookup returns the statement the server holds under name, as far as its
// answers so far tell; nil when it holds none (or one made by SQL PREPARE,
// which the rewriter allows only for statements without PHI).
func (ps *phiSession) lookup(name string) *phiStatement {
	return resolve(ps.statements[name], name != "")
}

// resolve follows st's chain to the statement the server holds. It runs
// on clientToServer, which alone touches prev.
func resolve(st *phiStatement, named bool) *phiStatement {
	for ; st != nil; st = st.prev {
		switch st.state.Load() {
		case stmtCreated:
			st.prev = nil // what it replaced can no longer matter: free the chain
			return st
		case stmtPending:
			return st
		case stmtClosed:
			return nil
		case stmtFailed:
			if !named {
				return nil // PostgreSQL drops the unnamed statement first
			}
		}
	}
	return nil
}

// ambiguous reports whether binding st could bind a statement with another
// plan: st's Parse went in an earlier batch and is unanswered, so the
// server may have skipped or refused it and kept the one before it. (In
// st's own batch a failed Parse makes the server skip the Bind too.)
func (ps *phiSession) ambiguous(st *phiStatement, named bool) bool {
	if st.state.Load() != stmtPending || st.batch == ps.batch {
		return false
	}
	alt := resolve(st.prev, named)
	return alt != nil && alt.plan != st.plan && !(alt.plan.Passthrough && st.plan.Passthrough)
}

// ErrAmbiguousStatement refuses a Bind whose statement the proxy cannot
// tell: see phiSession.ambiguous.
var ErrAmbiguousStatement = errors.New("the prepared statement was redefined in an earlier, still unanswered batch; wait for its ParseComplete before binding it")

// phiPortal is a portal bound to a rewritten statement. clientToServer.
type phiPortal struct {
	stmt      *phiStatement
	result    *phiResult
	described bool // the client sent Describe for it
}

func newPHISession(eng *phiEngine) *phiSession {
	return &phiSession{
		eng:        eng,
		w:          newPHIWriter(eng.cols),
		r:          newPHIReader(),
		statements: map[string]*phiStatement{},
		portals:    map[string]*phiPortal{},
	}
}

// loadCatalog runs the catalog query on the upstream connection while the
// session owns it alone (before the relay starts), reading the answers
// itself: the client never sees them.
func (s *Session) loadCatalog() error {
	ps := s.phi
	q := &pgproto3.Query{String: ps.eng.catalogSQL}
	buf, err := q.Encode(nil)
	if err != nil {
		return err
	}
	if err := s.forward(buf); err != nil {
		return err
	}
	if err := s.serverW.Flush(); err != nil {
		return &UpstreamError{Connected: true, Err: err}
	}
	var (
		rows   [][][]byte
		failed error
	)
	for {
		typ, msg, err := s.serverR.next()
		if err != nil {
			return upstreamReadError(err)
		}
		switch typ {
		case 'T', 'C':
		case 'D':
			var row pgproto3.DataRow
			if err := row.Decode(msg[5:]); err != nil {
				return serverProtocolErrorf("catalog row: %v", err)
			}
			vals := make([][]byte, len(row.Values))
			for i, v := range row.Values {
				vals[i] = append([]byte(nil), v...)
			}
			rows = append(rows, vals)
		case 'E':
			failed = errors.New("the catalog query failed")
		case 'N', 'S', 'A':
			if err := s.send(msg); err != nil {
				return err
			}
		case 'Z':
			if failed != nil {
				return failed
			}
			ps.db, err = ps.eng.state(rows)
			return err
		default:
			return serverProtocolErrorf("unexpected message %q answering the catalog query", typ)
		}
	}
}

// catalogCollector gathers the rows of a catalog reload. Its methods run
// on serverToClient; done is closed with the ReadyForQuery that ends the
// reload, after which clientToServer reads rows and failed.
type catalogCollector struct {
	rows   [][][]byte
	failed bool
	done   chan struct{}
}

// RowDescription implements ResultTransformer; the answers of an internal
// query are dropped by send.
func (c *catalogCollector) RowDescription(dst, msg []byte) ([]byte, error) {
	return append(dst, msg...), nil
}

// DataRow implements ResultTransformer.
func (c *catalogCollector) DataRow(dst, msg []byte) ([]byte, error) {
	var row pgproto3.DataRow
	if err := row.Decode(msg[5:]); err != nil {
		return nil, serverProtocolErrorf("catalog row: %v", err)
	}
	vals := make([][]byte, len(row.Values))
	for i, v := range row.Values {
		vals[i] = append([]byte(nil), v...)
	}
	c.rows = append(c.rows, vals)
	return append(dst, msg...), nil
}

// refreshCatalog reads the catalog again after DDL went through this
// session, so that a blind-index column just added (or a table just
// created) is used at once. It runs only when nothing is pending and the
// transaction has not failed: the proxy's query must neither interleave
// with the client's pipeline nor be refused. Inside a transaction block
// the new catalog is used but read again once the block ends, since the
// DDL may be rolled back.
func (s *Session) refreshCatalog() error {
	ps := s.phi
	s.q.mu.Lock()
	idle := s.q.len() == 0 && !s.q.emitting && !s.q.failed
	status := s.q.txStatus
	s.q.mu.Unlock()
	// Inside an unsynced batch the server may be skipping to Sync (and would
	// ignore the query) or running an implicit transaction (which the query
	// would commit): wait for a cycle boundary.
	if !idle || status == 'E' || ps.openBatch {
		return nil
	}
	c := &catalogCollector{done: make(chan struct{})}
	out, err := (&pgproto3.Query{String: ps.eng.catalogSQL}).Encode(ps.buf[:0])
	if err != nil {
		return err
	}
	ps.buf = out
	e := expectation{kind: expectQuery, hidden: true, internal: true, transform: c, onReady: func() { close(c.done) }}
	if err := s.pushAndForward(e, out); err != nil {
		return err
	}
	if err := s.flushServer(); err != nil {
		return err
	}
	timer := time.NewTimer(catalogReloadTimeout)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-s.stopped:
		return errors.New("session ended during a catalog reload")
	case <-timer.C:
		return serverProtocolErrorf("no answer to the catalog query in %v", catalogReloadTimeout)
	}
	if c.failed {
		return nil
	}
	db, err := ps.eng.state(c.rows)
	if err != nil {
		return err
	}
	ps.db = db
	ps.stale = status != 'I'
	return nil
}

// catalogReloadTimeout bounds the wait for a catalog reload's answer.
const catalogReloadTimeout = 30 * time.Second

// noteBatch records, after a client message is handled, whether an
// extended-protocol batch is open (a Sync closes it).
func (ps *phiSession) noteBatch(typ byte) {
	switch typ {
	case 'P', 'B', 'D', 'E', 'C':
		ps.openBatch = true
	case 'S':
		ps.openBatch = false
	}
}

// noteDDL marks the catalog stale when plan holds DDL.
func (ps *phiSession) noteDDL(plan *rewrite.Plan) {
	for _, st := range plan.Statements {
		if st.Kind == rewrite.KindDDL {
			ps.stale = true
			return
		}
	}
}

// phiQuery handles a simple Query when a policy applies.
func (s *Session) phiQuery(msg []byte) error {
	ps := s.phi
	ps.batch++ // a Query ends an extended batch as Sync does
	if ps.stale {
		if err := s.refreshCatalog(); err != nil {
			return err
		}
	}
	start := time.Now()
	sql := string(msg[5 : len(msg)-1])
	plan, err := ps.db.plan(sql, true, s.nonStandardStrings.Load())
	if err == nil {
		ps.noteDDL(plan)
	}
	if err == nil && plan.Passthrough {
		// Rows are still decrypted by where PostgreSQL says their columns
		// come from: FETCH from a cursor over a policy table names none.
		ps.eng.metrics.passthrough.Inc()
		return s.pushAndForward(expectation{kind: expectQuery, transform: &phiResult{ps: ps, db: ps.db}}, msg)
	}
	var text []byte
	if err == nil {
		text, err = ps.w.renderQuery(ps.buf[:0], plan)
	}
	if err != nil {
		return s.raiseQuery(err)
	}
	out, err := (&pgproto3.Query{String: string(text)}).Encode(text[len(text):])
	if err != nil {
		return err
	}
	ps.buf = text
	ps.eng.metrics.rewritten.Inc()
	if err := s.pushExpectation(expectation{kind: expectQuery, transform: &phiResult{ps: ps, db: ps.db}}); err != nil {
		return err
	}
	ps.eng.metrics.added.Observe(time.Since(start).Seconds())
	return s.forward(out)
}

// phiParse handles Parse when a policy applies.
func (s *Session) phiParse(msg []byte) error {
	ps := s.phi
	start := time.Now()
	var p pgproto3.Parse
	if err := p.Decode(msg[5:]); err != nil {
		return protocolErrorf("invalid Parse message")
	}
	if ps.stale {
		if err := s.refreshCatalog(); err != nil {
			return err
		}
	}
	plan, err := ps.db.plan(p.Query, false, s.nonStandardStrings.Load())
	if err != nil {
		return s.raiseExtended(err)
	}
	ps.noteDDL(plan)
	var text []byte
	if !plan.Passthrough {
		if text, err = ps.w.renderQuery(ps.buf[:0], plan); err != nil {
			return s.raiseExtended(err)
		}
	}
	// Only now is the Parse sure to be forwarded: a refused one never
	// reaches the server, which keeps the statement it had.
	st := &phiStatement{plan: plan, db: ps.db, paramOIDs: p.ParameterOIDs, batch: ps.batch, prev: ps.lookup(p.Name)}
	ps.statements[p.Name] = st
	if plan.Passthrough {
		ps.eng.metrics.passthrough.Inc()
		return s.pushAndForward(expectation{kind: expectParse, parsed: st}, msg)
	}
	ps.buf = text
	p.Query = string(text)
	if len(plan.Params) > 0 {
		p.ParameterOIDs = upstreamParamOIDs(plan, st.paramOIDs)
	}
	out, err := p.Encode(ps.buf[len(ps.buf):])
	if err != nil {
		return err
	}
	ps.eng.metrics.rewritten.Inc()
	if err := s.pushExpectation(expectation{kind: expectParse, parsed: st}); err != nil {
		return err
	}
	ps.eng.metrics.added.Observe(time.Since(start).Seconds())
	return s.forward(out)
}

// upstreamParamOIDs are the parameter types the server sees: the storage
// type for encrypted values, text (or text[]) for blind indexes, and what
// the client declared for the rest.
//
// Parameters the client declared beyond the highest $n (PostgreSQL accepts
// them, and then expects their values in Bind) follow, as declared.
func upstreamParamOIDs(plan *rewrite.Plan, declared []uint32) []uint32 {
	oids := make([]uint32, len(plan.Params))
	for i, prm := range plan.Params {
		switch {
		case prm.Action == rewrite.ActionEncrypt && !prm.Array:
			oids[i] = storageOID(prm.Column.Storage)
		case prm.Action != rewrite.ActionNone:
			oids[i] = textOrArrayOID(prm.Array)
		case prm.Source < len(declared):
			oids[i] = declared[prm.Source]
		}
	}
	if plan.ClientParams < len(declared) {
		oids = append(oids, declared[plan.ClientParams:]...)
	}
	return oids
}

// phiBind handles Bind when a policy applies.
func (s *Session) phiBind(msg []byte) error {
	ps := s.phi
	portal, stmt, ok := bindNames(msg)
	if !ok {
		return protocolErrorf("invalid Bind message")
	}
	delete(ps.portals, portal)
	st := ps.lookup(stmt)
	if st == nil {
		return s.expectAndForward(expectBind, msg)
	}
	if ps.ambiguous(st, stmt != "") {
		return s.raiseExtended(ErrAmbiguousStatement)
	}
	if st.plan.Passthrough {
		// Forwarded as is; its rows may still hold PHI (FETCH from a
		// cursor), which the portal's RowDescription will tell.
		formats, err := bindResultFormats(msg)
		if err != nil {
			return err
		}
		ps.portals[portal] = &phiPortal{stmt: st, result: &phiResult{ps: ps, db: st.db, stmt: st, formats: formats}}
		return s.expectAndForward(expectBind, msg)
	}
	start := time.Now()
	var b pgproto3.Bind
	if err := b.Decode(msg[5:]); err != nil {
		return protocolErrorf("invalid Bind message")
	}
	if err := ps.w.rewriteBind(&b, st.plan, st.paramOIDs); err != nil {
		return s.raiseExtended(err)
	}
	if rd := st.rd.Load(); rd != nil && len(b.ResultFormatCodes) > 1 {
		// The client's codes count the columns it sees; the server's
		// result also has the hidden blind-index columns.
		if t := newResultTransform(st.db.cat, ps.eng.cols, rd, nil); t != nil {
			b.ResultFormatCodes = t.resultFormats(b.ResultFormatCodes)
		}
	}
	out, err := b.Encode(ps.buf[:0])
	if err != nil {
		return err
	}
	ps.buf = out
	ps.portals[portal] = &phiPortal{stmt: st, result: &phiResult{ps: ps, db: st.db, stmt: st, formats: b.ResultFormatCodes}}
	if err := s.pushExpectation(expectation{kind: expectBind}); err != nil {
		return err
	}
	ps.eng.metrics.added.Observe(time.Since(start).Seconds())
	return s.forward(out)
}

// phiDescribe handles Describe when a policy applies.
func (s *Session) phiDescribe(kind byte, msg []byte) error {
	ps := s.phi
	name := string(msg[6 : len(msg)-1])
	if kind == 'S' {
		st := ps.lookup(name)
		if st == nil {
			return s.expectAndForward(expectDescribeStatement, msg)
		}
		e := expectation{kind: expectDescribeStatement, transform: &phiResult{ps: ps, db: st.db, stmt: st, statement: true}}
		if !st.plan.Passthrough {
			e.stmt = st // its parameters are rewritten
		}
		return s.pushAndForward(e, msg)
	}
	p := ps.portals[name]
	if p == nil {
		return s.expectAndForward(expectDescribePortal, msg)
	}
	p.described = true
	return s.pushAndForward(expectation{kind: expectDescribePortal, transform: p.result}, msg)
}

// phiExecute handles Execute when a policy applies. The rows of a rewritten
// statement are decrypted by where their columns come from, which the
// statement's or the portal's RowDescription says; when the client asked
// for neither, the proxy asks for the portal's, unseen by the client.
func (s *Session) phiExecute(msg []byte) error {
	ps := s.phi
	name := string(msg[5 : 5+clen(msg[5:])])
	p := ps.portals[name]
	if p == nil {
		return s.expectAndForward(expectExecute, msg)
	}
	// Known from answers that arrived, or from the client's Describe of this
	// portal (a Describe skipped after an error skips this Execute too).
	if !p.described && p.stmt.rd.Load() == nil {
		d := &pgproto3.Describe{ObjectType: 'P', Name: name}
		out, err := d.Encode(ps.buf[:0])
		if err != nil {
			return err
		}
		ps.buf = out
		if err := s.pushAndForward(expectation{kind: expectDescribePortal, hidden: true, transform: p.result}, out); err != nil {
			return err
		}
		p.described = true
	}
	return s.pushAndForward(expectation{kind: expectExecute, transform: p.result}, msg)
}

// phiClose forwards Close. A statement is forgotten once the server
// confirms it closed it (the Close may be skipped after an error).
func (s *Session) phiClose(kind byte, msg []byte) error {
	name := string(msg[6 : len(msg)-1])
	if kind == 'P' {
		delete(s.phi.portals, name)
		return s.expectAndForward(expectClose, msg)
	}
	return s.pushAndForward(expectation{kind: expectClose, closed: s.phi.lookup(name)}, msg)
}

// raiseQuery makes the server fail a simple Query with err (see raise.go).
func (s *Session) raiseQuery(err error) error {
	code, message := rejection(err)
	s.phi.eng.metrics.statements.WithLabelValues(rejectOutcome(err)).Inc()
	s.log.Debug("statement rejected", "sqlstate", code)
	out, encErr := (&pgproto3.Query{String: raiseSQL(code, message)}).Encode(s.phi.buf[:0])
	if encErr != nil {
		return encErr
	}
	s.phi.buf = out
	return s.pushAndForward(expectation{kind: expectQuery, raise: true}, out)
}

// raiseExtended makes the server fail the current extended-protocol
// message with err: the server answers it with the error and then skips
// the client's messages up to Sync, as after its own errors.
func (s *Session) raiseExtended(err error) error {
	code, message := rejection(err)
	s.phi.eng.metrics.statements.WithLabelValues(rejectOutcome(err)).Inc()
	s.log.Debug("statement rejected", "sqlstate", code)
	delete(s.phi.portals, "") // the raise binds the unnamed portal
	out := s.phi.buf[:0]
	kinds := []expectKind{expectClose, expectParse, expectBind, expectExecute}
	for i, m := range raiseMessages(code, message) {
		var encErr error
		if out, encErr = m.Encode(out); encErr != nil {
			return encErr
		}
		if err := s.pushExpectation(expectation{kind: kinds[i], hidden: kinds[i] != expectExecute, raise: true}); err != nil {
			return err
		}
	}
	s.phi.buf = out
	return s.forward(out)
}

// rejection maps a refusal to the SQLSTATE and message the client sees.
// Messages name tables and columns, never values.
func rejection(err error) (code, message string) {
	var (
		re *rewrite.Error
		ve *ValueError
		ce *CatalogError
		pe *ParamCountError
	)
	switch {
	case errors.As(err, &re):
		return re.Code, "phiproxy: " + re.Message
	case errors.As(err, &ve), errors.Is(err, errValue):
		return pgerrcode.InvalidTextRepresentation, "phiproxy: " + err.Error()
	case errors.As(err, &ce):
		return pgerrcode.ObjectNotInPrerequisiteState, ce.Msg
	case errors.As(err, &pe):
		return pgerrcode.ProtocolViolation, "phiproxy: " + pe.Error()
	case errors.Is(err, ErrAmbiguousStatement):
		return pgerrcode.ObjectNotInPrerequisiteState, "phiproxy: " + err.Error()
	}
	return pgerrcode.InternalError, "phiproxy: the statement could not be prepared for encryption"
}

// textOrArrayOID is the type of a blind-index parameter: text, or text[]
// for `= ANY($n)`.
func textOrArrayOID(array bool) uint32 {
	if array {
		return pgtype.TextArrayOID
	}
	return pgtype.TextOID
}

// bindResultFormats reads the result format codes at the end of a Bind
// without decoding its parameters.
func bindResultFormats(msg []byte) ([]int16, error) {
	bad := protocolErrorf("invalid Bind message")
	b := msg[5:]
	for range 2 { // portal and statement names
		i := clen(b)
		if i >= len(b) {
			return nil, bad
		}
		b = b[i+1:]
	}
	u16 := func() (int, bool) {
		if len(b) < 2 {
			return 0, false
		}
		v := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		return v, true
	}
	n, ok := u16() // parameter format codes
	if !ok || len(b) < 2*n {
		return nil, bad
	}
	b = b[2*n:]
	if n, ok = u16(); !ok { // parameter values
		return nil, bad
	}
	for range n {
		if len(b) < 4 {
			return nil, bad
		}
		size := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if size > 0 {
			if int(size) > len(b) {
				return nil, bad
			}
			b = b[size:]
		}
	}
	if n, ok = u16(); !ok || len(b) != 2*n {
		return nil, bad
	}
	if n == 0 {
		return nil, nil
	}
	formats := make([]int16, n)
	for i := range formats {
		formats[i] = int16(binary.BigEndian.Uint16(b[2*i:]))
	}
	return formats, nil
}

// bindNames reads the portal and statement names at the start of a Bind.
func bindNames(msg []byte) (portal, stmt string, ok bool) {
	body := msg[5:]
	i := clen(body)
	if i >= len(body) {
		return "", "", false
	}
	j := clen(body[i+1:])
	if i+1+j >= len(body) {
		return "", "", false
	}
	return string(body[:i]), string(body[i+1 : i+1+j]), true
}

// clen is the length of the NUL-terminated string at the start of b (len(b)
// when there is no NUL).
func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// phiResult decrypts one result: a simple Query's (one RowDescription per
// statement), a portal's, or describes a statement. It implements
// ResultTransformer; its methods run on serverToClient only.
type phiResult struct {
	ps   *phiSession
	db   *dbState
	stmt *phiStatement // nil for a simple Query
	// statement: this describes stmt (Describe of a statement): its
	// RowDescription is kept for the portals bound to it.
	statement bool
	// formats are the server-side result format codes of the portal.
	formats []int16

	// serverToClient.
	t     *resultTransform
	ready bool
}

var _ ResultTransformer = (*phiResult)(nil)

// RowDescription implements ResultTransformer.
func (r *phiResult) RowDescription(dst, msg []byte) ([]byte, error) {
	if r.stmt == nil && !r.db.cat.describesPHI(msg) {
		// A simple Query's result without PHI or blind-index columns (the
		// common case): nothing to decode, the rows go through raw.
		r.t, r.ready = nil, true
		return append(dst, msg...), nil
	}
	var rd pgproto3.RowDescription
	if err := rd.Decode(msg[5:]); err != nil {
		return nil, serverProtocolErrorf("invalid RowDescription")
	}
	if r.stmt != nil && (r.statement || r.stmt.rd.Load() == nil) {
		// Kept for later portals of the statement (their result formats
		// and rows); a portal's description serves as well, formats reset.
		keep := rd
		keep.Fields = append([]pgproto3.FieldDescription(nil), rd.Fields...)
		for i := range keep.Fields {
			keep.Fields[i].Name = append([]byte(nil), keep.Fields[i].Name...)
			keep.Fields[i].Format = formatText
		}
		r.stmt.rd.Store(&keep)
	}
	r.t, r.ready = newResultTransform(r.db.cat, r.ps.eng.cols, &rd, nil), true
	if r.t == nil {
		return append(dst, msg...), nil
	}
	r.t.rowDescription(&rd)
	return rd.Encode(dst)
}

// DataRow implements ResultTransformer.
func (r *phiResult) DataRow(dst, msg []byte) ([]byte, error) {
	if !r.ready {
		// A portal of a statement the client described: its
		// RowDescription and the Bind's formats say it all.
		var rd *pgproto3.RowDescription
		if r.stmt != nil {
			rd = r.stmt.rd.Load()
		}
		if rd == nil {
			return nil, fmt.Errorf("rows of a rewritten statement arrived undescribed")
		}
		r.t, r.ready = newResultTransform(r.db.cat, r.ps.eng.cols, rd, r.formats), true
	}
	if r.t == nil {
		return append(dst, msg...), nil
	}
	var row pgproto3.DataRow
	if err := row.Decode(msg[5:]); err != nil {
		return nil, serverProtocolErrorf("invalid DataRow")
	}
	if err := r.ps.r.dataRow(r.t, &row); err != nil {
		return nil, err
	}
	return row.Encode(dst)
}

// describeParams rewrites a statement's ParameterDescription for the
// client: one type per client parameter, the logical type for PHI ones.
func (st *phiStatement) describeParams(dst, msg []byte) ([]byte, error) {
	var pd pgproto3.ParameterDescription
	if err := pd.Decode(msg[5:]); err != nil {
		return nil, serverProtocolErrorf("invalid ParameterDescription")
	}
	plan := st.plan
	if len(plan.Params) == 0 || len(pd.ParameterOIDs) < len(plan.Params) {
		return append(dst, msg...), nil
	}
	// The parameters declared beyond the highest $n come last on both sides.
	extra := pd.ParameterOIDs[len(plan.Params):]
	oids := make([]uint32, plan.ClientParams, plan.ClientParams+len(extra))
	seen := make([]bool, plan.ClientParams)
	for i, prm := range plan.Params {
		if prm.Source >= plan.ClientParams || seen[prm.Source] {
			continue
		}
		seen[prm.Source] = true
		if prm.Action == rewrite.ActionNone {
			oids[prm.Source] = pd.ParameterOIDs[i]
		} else {
			oids[prm.Source] = typeOID(prm.Column.Type, prm.Array)
		}
	}
	pd.ParameterOIDs = append(oids, extra...)
	return pd.Encode(dst)
}
