package phi

import (
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The handlers of the client messages that carry SQL or name statements
// and portals (Query's is in query.go). Each forwards the client's
// message, a rewritten one, or a raise (raise.go) in its place.
// clientToServer.

// handleParse handles Parse.
func (s *session) handleParse(msg []byte) error {
	start := time.Now()
	var p pgproto3.Parse
	if err := p.Decode(msg[5:]); err != nil {
		return protocolError("invalid Parse message")
	}
	if reservedName(p.Name) {
		return s.raiseExtended(errReservedName)
	}
	s.cur = curStatement{text: p.Query}
	s.notePrepare(p.Query)
	if err := s.viewsUnsettled(p.Query, nil); err != nil {
		return s.raiseExtended(err)
	}
	// CREATE INDEX CONCURRENTLY cannot be guarded (its Execute could not
	// follow the guard in the same transaction): the catalog is read
	// first. (COPY is guarded at Execute: no Sync of the proxy's own
	// follows it in this protocol.)
	readFirst := s.db.cat.epochGuards() && readsCatalogFirst(p.Query) && firstWord(p.Query) == "create"
	if readFirst {
		if err := s.checkFirst(); err != nil {
			return err
		}
	}
	plan, err := s.planFresh(p.Query, false)
	if err == nil {
		err = s.checkSQLPrepared(p.Query)
	}
	if err == nil {
		err = s.checkPlan(plan)
		if err == nil {
			err = checkParams(plan, p.ParameterOIDs)
		}
	}
	if err == nil && readFirst && plan.Passthrough && !s.readFirst {
		err = errReadFirstBusy
	}
	if err != nil {
		return s.raiseExtended(err)
	}
	var text []byte
	var rd rendered
	var literals *literalSettings
	if !plan.Passthrough {
		s.startLiteralRead()
		text, rd, err = s.w.renderMarked(s.buf[:0], plan, p.Query)
		literals = s.endLiteralRead()
		if err != nil {
			return s.raiseExtended(err)
		}
		s.countMarks(rd.marks)
		err = s.checkSent(string(text))
	} else if len(plan.Statements) > 0 {
		err = s.checkSent(p.Query)
	}
	if err == nil {
		err = s.checkEpoch(plan, p.Query)
	}
	if err != nil {
		return s.raiseExtended(err)
	}
	// Only now is the Parse sure to be forwarded: a refused one never
	// reaches the server, which keeps the statement it had.
	st := &statement{plan: plan, db: s.db, paramOIDs: p.ParameterOIDs, batch: s.batch, prev: s.lookup(p.Name),
		movesSettings: movesSettings(p.Query), cursor: s.cursorStmts(p.Query, plan, false), literals: literals}
	for _, c := range st.cursor {
		st.fetch = st.fetch || c.Op == rewrite.CursorFetch
	}
	if plan.Passthrough {
		st.text = p.Query
	}
	st.marks = rd.marks
	s.statements[p.Name] = st
	e := proxy.Expectation{Kind: proxy.KindParse, Responder: parseAnswer{st: st}}
	if plan.Passthrough {
		s.eng.metrics.passthrough.Inc()
		return s.c.Send(e, msg)
	}
	s.buf = text
	client := p.Query
	p.Query = string(text)
	e.Responder = parseAnswer{st: st, pos: sentPositionOf(client, p.Query, plan, rd)}
	if len(plan.Params) > 0 {
		p.ParameterOIDs = upstreamParamOIDs(plan, st.paramOIDs)
	}
	out, err := p.Encode(s.buf[len(s.buf):])
	if err != nil {
		return err
	}
	s.eng.metrics.rewritten.Inc()
	s.eng.metrics.added.Observe(time.Since(start).Seconds())
	return s.c.Send(e, out)
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

// textOrArrayOID is the type of a blind-index parameter: text, or text[]
// for `= ANY($n)`.
func textOrArrayOID(array bool) uint32 {
	if array {
		return pgtype.TextArrayOID
	}
	return pgtype.TextOID
}

// handleBind handles Bind.
func (s *session) handleBind(msg []byte) error {
	portalName, stmtName, ok := bindNames(msg)
	if !ok {
		return protocolError("invalid Bind message")
	}
	delete(s.portals, portalName)
	if reservedName(stmtName) || reservedName(portalName) {
		return s.raiseExtended(errReservedName)
	}
	st := s.lookup(stmtName)
	if s.viewsChanging {
		var plan *rewrite.Plan
		text := ""
		if st != nil {
			plan, text = st.plan, st.text
		}
		if err := s.viewsUnsettled(text, plan); err != nil {
			return s.raiseExtended(err)
		}
	}
	if st == nil {
		if s.sqlPrepared && bindHasValues(msg) {
			return s.raiseExtended(errSQLPrepared)
		}
		if s.sqlPrepared {
			// Perhaps one made with SQL PREPARE, which names nothing
			// the proxy can check here (sqlprepare.go).
			if _, err := s.recheck(); err != nil {
				return err
			}
			if s.sqlStale {
				return s.raiseExtended(errStaleSQLPrepared)
			}
			if s.db.cat.epochGuards() {
				if err := s.guard(); err != nil {
					return err
				}
			}
		}
		return s.c.Pass('B', msg)
	}
	if s.ambiguous(st, stmtName != "") {
		return s.raiseExtended(ErrAmbiguousStatement)
	}
	if reliesOnCatalog(st.plan) {
		if _, err := s.recheck(); err != nil {
			return err
		}
		if s.stalePlan(st) {
			return s.raiseExtended(ErrStalePlan)
		}
	}
	if err := s.checkBind(st); err != nil {
		return s.raiseExtended(err)
	}
	if err := s.checkLiteralSettings(st); err != nil {
		return s.raiseExtended(err)
	}
	if s.stalePassthrough(st) {
		return s.raiseExtended(ErrStalePlan)
	}
	if st.plan.Passthrough {
		// Forwarded as is; its rows may still hold PHI (FETCH from a
		// cursor), which the portal's RowDescription will tell.
		formats, err := bindResultFormats(msg)
		if err != nil {
			return err
		}
		if msg, formats, err = s.mapResultFormats(msg, st, formats); err != nil {
			return err
		}
		r := &result{s: s, db: st.db, stmt: st, formats: formats, cursor: s.fetchCursor(st)}
		s.portals[portalName] = s.newPortal(st, r)
		return s.c.Send(proxy.Expectation{Kind: proxy.KindBind, Responder: bindAnswer{r: r}}, msg)
	}
	start := time.Now()
	var b pgproto3.Bind
	if err := b.Decode(msg[5:]); err != nil {
		return protocolError("invalid Bind message")
	}
	var marks *markSet
	var err error
	if s.settingsMoved || s.nonUTF8.Load() {
		// The server might read a marker under another client_encoding.
		err = s.w.rewriteBind(&b, st.plan, st.paramOIDs)
	} else {
		marks, err = s.w.rewriteBindMarked(&b, st.plan, st.paramOIDs)
	}
	if err != nil {
		return s.raiseExtended(err)
	}
	s.countMarks(marks)
	if rd := st.rd.Load(); rd != nil && len(b.ResultFormatCodes) > 1 {
		// The client's codes count the columns it sees; the server's
		// result also has the hidden blind-index columns.
		if t := newResultTransform(st.db.cat, s.eng.cols, rd, nil); t != nil {
			b.ResultFormatCodes = t.resultFormats(b.ResultFormatCodes)
		}
	}
	out, err := b.Encode(s.buf[:0])
	if err != nil {
		return err
	}
	s.buf = out
	r := &result{s: s, db: st.db, stmt: st, formats: b.ResultFormatCodes}
	s.portals[portalName] = s.newPortal(st, r)
	s.eng.metrics.added.Observe(time.Since(start).Seconds())
	return s.c.Send(proxy.Expectation{Kind: proxy.KindBind, Responder: bindAnswer{r: r, marks: marks}}, out)
}

// handleDescribe handles Describe of a statement or a portal.
func (s *session) handleDescribe(msg []byte) error {
	name := string(msg[6 : len(msg)-1])
	if msg[5] == 'S' {
		st := s.lookup(name)
		if st == nil {
			return s.c.Pass('D', msg)
		}
		if s.stalePlan(st) {
			return s.raiseExtended(ErrStalePlan)
		}
		if s.needsGuard(st.plan, st.text) {
			if err := s.guard(); err != nil {
				return err
			}
		}
		r := &result{s: s, db: st.db, stmt: st, statement: true, cursor: s.fetchCursor(st)}
		return s.c.Send(proxy.Expectation{Kind: proxy.KindDescribeStatement, Responder: r}, msg)
	}
	p := s.portals[name]
	if p == nil {
		return s.describeCursor(name, msg)
	}
	p.described = true
	if s.needsGuard(p.stmt.plan, p.stmt.text) {
		if err := s.guard(); err != nil {
			return err
		}
	}
	return s.c.Send(proxy.Expectation{Kind: proxy.KindDescribePortal, Responder: p.responder()}, msg)
}

// handleExecute handles Execute. The rows of a rewritten statement are
// decrypted by where their columns come from, which the statement's or the
// portal's RowDescription says; when the client asked for neither, the
// proxy asks for the portal's, unseen by the client.
func (s *session) handleExecute(msg []byte) error {
	name, _, ok := proxy.CString(msg[5:])
	if !ok {
		return protocolError("invalid Execute message")
	}
	p := s.portals[string(name)]
	if p == nil {
		// A SQL cursor, or a portal of a statement the proxy does not know.
		return s.executeCursor(string(name), msg)
	}
	if err := s.checkCursors(p.stmt.cursor); err != nil {
		return s.raiseExtended(err)
	}
	s.applyCursors(p.stmt.cursor, p.stmt.db)
	s.ranDDL(p.stmt.plan)
	s.noteSettings(p.stmt.movesSettings)
	if s.settingsMoved {
		p.result.unsure.Store(true)
	}
	if p.stmt.plan.Copy != nil {
		return s.executeCopy(p, msg)
	}
	if s.needsGuard(p.stmt.plan, p.stmt.text) {
		if err := s.guard(); err != nil {
			return err
		}
	}
	// Known from answers that arrived, or from the client's Describe of this
	// portal (a Describe skipped after an error skips this Execute too).
	// A FETCH's rows have the shape of the cursor it reads now.
	if !p.described && (p.stmt.rd.Load() == nil || p.stmt.fetch) {
		out, err := (&pgproto3.Describe{ObjectType: 'P', Name: string(name)}).Encode(s.buf[:0])
		if err != nil {
			return err
		}
		s.buf = out
		if err := s.c.Send(proxy.Expectation{Kind: proxy.KindDescribePortal, Hidden: true, Responder: p.responder()}, out); err != nil {
			return err
		}
		p.described = true
	}
	return s.c.Send(proxy.Expectation{Kind: proxy.KindExecute, Responder: p.responder()}, msg)
}

// handleClose forwards Close. A statement is forgotten once the server
// confirms it closed it (the Close may be skipped after an error).
func (s *session) handleClose(msg []byte) error {
	name := string(msg[6 : len(msg)-1])
	if reservedName(name) {
		// The guard's statement closed, another of that name could be
		// prepared in its place.
		return s.raiseExtended(errReservedName)
	}
	if msg[5] == 'P' {
		delete(s.portals, name)
		delete(s.cursors, name) // a SQL cursor is a portal too
		return s.c.Pass('C', msg)
	}
	st := s.lookup(name)
	if st == nil {
		return s.c.Pass('C', msg)
	}
	return s.c.Send(proxy.Expectation{Kind: proxy.KindClose, Responder: closeAnswer{st: st}}, msg)
}

// notePrepare sets sqlPrepared when sql may prepare a statement with SQL
// PREPARE: the word anywhere in it (a DO block may run it), at word
// boundaries. A false alarm only refuses the Bind of a statement the
// proxy does not know, which the server would refuse too, unless SQL
// PREPARE made it.
func (s *session) notePrepare(sql string) {
	if !s.sqlPrepared && hasWordFold(sql, "prepare") {
		s.sqlPrepared = true
	}
}

// bindHasValues reports whether a Bind message carries parameter values
// (or cannot be read).
func bindHasValues(msg []byte) bool {
	var b pgproto3.Bind
	if err := b.Decode(msg[5:]); err != nil {
		return true
	}
	return len(b.Parameters) > 0
}
