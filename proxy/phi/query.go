package phi

import (
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The simple protocol's Query (handlers.go has the extended protocol's).

// handleQuery handles a simple Query.
func (s *session) handleQuery(msg []byte) error {
	start := time.Now()
	sql := string(msg[5 : len(msg)-1])
	s.cur = curStatement{text: sql}
	s.noteSettings(movesSettings(sql))
	s.notePrepare(sql)
	if err := s.viewsUnsettled(sql, nil); err != nil {
		return s.raiseQuery(err)
	}
	readFirst := s.db.cat.epochGuards() && readsCatalogFirst(sql)
	if readFirst {
		// No guard can stand in front of COPY FROM STDIN (guardSync) or
		// CREATE INDEX CONCURRENTLY: the catalog is read again instead,
		// second names included.
		if err := s.checkFirst(); err != nil {
			return err
		}
	}
	plan, err := s.planFresh(sql, true)
	if err == nil {
		err = s.checkSQLPrepared(sql)
	}
	if err == nil {
		err = s.checkPlan(plan)
	}
	if err == nil && plan.Passthrough && len(plan.Statements) > 0 {
		err = s.checkSent(sql)
	}
	var cursors []cursorStmt
	if err == nil {
		cursors = s.cursorStmts(sql, plan, true)
		err = s.checkCursors(cursors)
	}
	if err == nil {
		err = s.checkEpoch(plan, sql)
	}
	if err == nil && readFirst && plan.Passthrough && !s.readFirst {
		err = errReadFirstBusy
	}
	in := inlined{text: sql, first: sql}
	if err == nil && plan.Passthrough && (readFirst || s.needsGuard(plan, sql)) {
		in, err = s.withChecks(sql)
	}
	if err == nil && plan.Passthrough {
		// Rows are still decrypted by where PostgreSQL says their columns
		// come from: FETCH from a cursor over a policy table names none.
		s.eng.metrics.passthrough.Inc()
		s.applyCursors(cursors, s.db)
		guard := !readFirst && !in.bareFirst && s.needsGuard(plan, in.first) && !s.guarded
		if err := s.queryInBatch(guard, false); err != nil {
			return s.raiseQuery(err)
		}
		if guard {
			if err := s.guard(); err != nil {
				return err
			}
		}
		resp := s.queryResult(plan)
		if len(in.at) > 0 {
			resp = positioned(resp, sentPosition{}.inserted(sql, sql, in.text, in.at, in.checkLen), in.own)
			if msg, err = (&pgproto3.Query{String: in.text}).Encode(s.buf[:0]); err != nil {
				return err
			}
			s.buf = msg
		}
		if err := s.c.Send(proxy.Expectation{Kind: proxy.KindQuery, Responder: resp}, msg); err != nil || !guard {
			return err
		}
		return s.guardSync()
	}
	var text []byte
	var rd rendered
	var render *rewrite.Plan
	if err == nil {
		// A plan made from its shape's renders with the text's literals.
		if render = s.simple.Render(plan, sql); plan.Copy != nil {
			text, err = s.w.renderQuery(s.buf[:0], render)
		} else {
			text, rd, err = s.w.renderMarked(s.buf[:0], render, sql)
		}
	}
	var sent string
	if err == nil {
		sent = string(text)
		err = s.checkSent(sent)
	}
	in = inlined{text: sent, first: sent}
	if err == nil && plan.Copy == nil {
		// Its DDL and passed-through statements too may be followed by
		// statements that name a second name created meanwhile.
		in, err = s.withChecks(sent)
	}
	if err != nil {
		return s.raiseQuery(err)
	}
	out, err := (&pgproto3.Query{String: in.text}).Encode(text[len(text):])
	if err != nil {
		return err
	}
	s.buf = text
	var cr *copyResult
	if plan.Copy != nil {
		s.noteCopyBehind(plan.Copy)
		if cr, err = s.newCopyResult(plan, true); err != nil {
			return s.raiseQuery(err)
		}
	}
	wantGuard := (cr == nil || cr.in == nil) && !in.bareFirst && (reliesOnCatalog(plan) || s.db.cat.epochGuards() && guardsText(in.first))
	if err := s.queryInBatch(wantGuard, cr != nil && cr.cp.Table == nil); err != nil {
		return s.raiseQuery(err)
	}
	s.countMarks(rd.marks)
	s.eng.metrics.rewritten.Inc()
	s.eng.metrics.added.Observe(time.Since(start).Seconds())
	guarded, opened := s.guarded, false
	// COPY FROM STDIN goes unguarded: the guard's Sync would follow it,
	// which the server ignores in COPY mode, or answers when the COPY
	// failed before reading it, and the proxy cannot tell which. Its plan
	// was made with a catalog proven current (planFresh), and an older
	// catalog can only make it fail (its columns are named). A text's
	// first statement is guarded when it relies on the catalog or may
	// name a second name (DDL on a policy table followed by statements
	// passed through); the checks cover the statements after it.
	if wantGuard {
		if err := s.guard(); err != nil {
			return err
		}
	}
	var resp proxy.Responder
	if cr != nil {
		resp = cr
		if cr.cp.Table == nil {
			if err := s.describeQuery(cr, text); err != nil {
				return err
			}
			opened = true
		}
	} else {
		resp = s.queryResult(plan)
	}
	s.applyCursors(cursors, s.db)
	s.ranDDL(plan)
	if cr == nil {
		pos := sentPositionOf(sql, sent, render, rd)
		if render != plan {
			// The runs of a plan made from its shape are the scratch's,
			// reused by the session's next text.
			pos.runs = slices.Clone(pos.runs)
		}
		resp = positioned(resp, pos.inserted(sql, sent, in.text, in.at, in.checkLen), in.own)
	}
	if err := s.c.Send(proxy.Expectation{Kind: proxy.KindQuery, Responder: resp}, out); err != nil {
		return err
	}
	if cr != nil && cr.in != nil {
		s.copying = cr.in
	}
	if !opened && (guarded || !s.guarded) {
		return nil
	}
	return s.guardSync() // ends the pipeline the guard (or the COPY's description) opened
}
