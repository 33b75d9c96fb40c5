package phi

import (
	"errors"
	"time"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The catalog a session holds is read again:
//
//   - after DDL went through this session (stale), so that a blind-index
//     column just added or a table just created is used at once;
//   - after a statement was refused for a catalog problem (stale), so
//     that a table fixed meanwhile is served on the next try;
//   - after the guard found that another connection changed the policy
//     tables (drifted, guard.go);
//   - when idle, before a statement that relies on the catalog, if the
//     catalog was last proven current longer ago than Engine.recheck: the
//     columns part of the catalog query (recheck; the aliases come from
//     the database's last full read unless it is older than aliasTTL).
//     That spares the client a refusal from the guard when the DDL
//     happened while the session was idle;
//   - the same check, when idle, before refusing a statement that could
//     not be planned (recheckNow): the refusal may rest on a catalog that
//     another connection just changed (a table created, a column added).
//   - at the start of a batch outside a transaction block, when the
//     catalog was read longer than aliasTTL ago (readAt): a busy session
//     proves its catalog current at every guard, but the guard checks the
//     policy tables and the views it knows, not the views and other second
//     names created since, which statements could name. This bounds how
//     long such a view stays unknown to a session (README).
//
// All of them run only when nothing is pending and the transaction has not
// failed: the proxy's query must neither interleave with the client's
// pipeline nor be refused. Inside a transaction block a catalog read after
// DDL is used but read again once the block ends, since the DDL may be
// rolled back. clientToServer.

// refreshCatalog reads the catalog again when the session's is stale or
// drifted.
func (s *session) refreshCatalog() error {
	due := !s.stale && !s.drifted.Load()
	if due && (s.eng.noRecheck || time.Since(s.readAt) < aliasTTL) {
		return nil
	}
	idle, status, ok := s.canQuery()
	if !idle || !ok || (due && status != 'I') {
		return nil
	}
	_, err := s.reload(status, !due)
	return err
}

// canQuery reports whether the session may run a query of its own now:
// nothing pending, and (ok) the transaction has not failed and no
// extended batch is open. Inside an unsynced batch the server may be
// skipping to Sync (and would ignore the query) or running an implicit
// transaction (which the query would commit).
func (s *session) canQuery() (idle bool, status byte, ok bool) {
	idle, status = s.idle()
	return idle, status, status != 'E' && !s.openBatch
}

// idle reports whether nothing awaits an answer (proxy.Conn.Idle), once
// the guard's Sync, if it is all that does, has been answered.
func (s *session) idle() (idle bool, status byte) {
	idle, status = s.c.Idle()
	if !idle && s.syncDone != nil && !s.openBatch && !closed(s.syncDone) && s.c.Pending() == 1 {
		// All that is pending is the guard's Sync, sent last: the client
		// has the answer to its guarded Query, and the Sync's follows.
		t := time.NewTimer(syncWait)
		select {
		case <-s.syncDone:
		case <-t.C:
		}
		t.Stop()
		idle, status = s.c.Idle()
	}
	if idle {
		s.syncDone = nil
	}
	return idle, status
}

// reload reads the catalog (full: aliases included, else only if the
// database's alias rows are old) and makes it the session's. It reports
// whether the catalog differs from the one the session had. A failed query
// (the server refused it) keeps the catalog the session had.
func (s *session) reload(status byte, full bool) (bool, error) {
	drifted := s.drifted.Swap(false)
	rows, err := s.eng.readCatalog(s.c, full)
	if errors.Is(err, proxy.ErrQueryFailed) {
		if drifted {
			s.drifted.Store(true)
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	db, err := s.eng.state(rows)
	if err != nil {
		return false, err
	}
	s.eng.drift.reloads.Inc()
	changed := db != s.db
	if changed && s.db != nil {
		s.noteSecondNames(s.db.cat, db.cat)
	}
	s.db = db
	s.readAt = time.Now()
	s.stale = status != 'I'
	s.viewsChanging = false // nothing was pending: the change has run
	s.verified()
	if status == 'I' {
		s.eng.loaded(s.c, db)
	}
	return changed, nil
}

// recheck proves, before a statement that relies on the catalog, that the
// session's catalog is current when it was last proven so longer ago than
// the engine's recheck interval, reading it again if it changed. It
// reports whether the session's catalog changed (plans made before must be
// made again).
func (s *session) recheck() (bool, error) {
	if time.Since(time.Unix(0, s.verifiedAt.Load())) < s.eng.recheck {
		return false, nil
	}
	return s.recheckNow()
}

// recheckNow is recheck whenever the session is idle, however recently
// the catalog was proven current: before refusing a statement for what
// the catalog says (a missing table, a column the analysis needs), which
// another connection may have fixed a moment ago.
func (s *session) recheckNow() (bool, error) {
	if s.eng.noRecheck {
		return false, nil
	}
	idle, status, ok := s.canQuery()
	if !idle || !ok {
		return false, nil // the guard still stands in front of the statement
	}
	return s.reload(status, false)
}

// planTables are the policy tables a plan's statements touch.
func planTables(p *rewrite.Plan) []*policy.Table {
	var ts []*policy.Table
	for _, st := range p.Statements {
		ts = append(ts, st.Tables...)
	}
	return ts
}

// stalePlan reports whether st was planned with a catalog that describes
// its tables otherwise than the session's does now: binding it would run
// what the proxy made for the old columns.
func (s *session) stalePlan(st *statement) bool {
	return reliesOnCatalog(st.plan) && st.db != s.db && !st.db.cat.sameTables(s.db.cat, planTables(st.plan))
}

// stalePassthrough reports whether st, passed through untouched when it
// was prepared, would not be with the session's catalog now: a view over
// a policy table created since (views.go), which its text names, makes it
// a statement that must be guarded and rewritten, and a second name
// created since (a table that another connection made a child of a policy
// table, ...), which its text names, one that must be refused. Binding it
// would send its values unencrypted. It is analyzed again only when the
// catalog changed since st was prepared.
func (s *session) stalePassthrough(st *statement) bool {
	if !st.plan.Passthrough || st.db == s.db || st.text == "" {
		return false
	}
	if _, err := s.db.cat.aliasNamed(st.text); err != nil {
		return true
	}
	plan, err := s.db.plan(st.text, false, rewrite.LexOptions{StandardStringsOff: s.nonStandardStrings.Load()})
	return err != nil || !plan.Passthrough
}

// planFresh plans a Query's or Parse's text with a catalog proven current
// when the session can prove it: a plan that relies on the catalog is
// made again if the recheck found the catalog changed, and so is a text
// refused, if the catalog changed since.
func (s *session) planFresh(sql string, simple bool) (*rewrite.Plan, error) {
	plan, err := s.plan(sql, simple)
	var changed bool
	switch {
	case err != nil:
		var cerr error
		if changed, cerr = s.recheckNow(); cerr != nil {
			return nil, cerr
		}
	case reliesOnCatalog(plan):
		if changed, err = s.recheck(); err != nil {
			return nil, err
		}
	}
	if changed {
		return s.plan(sql, simple)
	}
	return plan, err
}

// closed reports whether ch is closed (false for nil).
func closed(ch chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
