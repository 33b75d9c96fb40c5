package phi

import (
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The catalog guard: no statement that relies on the session's catalog
// (its plan was made with it, or its rows are decrypted with it) runs
// unless the server's catalog is still the one the session read. Another
// connection may have created, dropped or renamed a policy table, or
// added, dropped, renamed or retyped a column, at any moment since.
//
// So in front of such a statement, in the same pipeline and the same
// implicit transaction, the proxy runs a prepared statement of its own,
// phiproxy_guard, made for the catalog the session holds (guardQuery):
//
//	SELECT 1 OPERATOR(pg_catalog./) ('"public"."patients"'::regclass::oid = 16386 AND
//	          to_regclass('"public"."missing"') IS NULL)::int4,
//	       (NULL::"public"."patients").*
//
// (and for each decrypting view over them, a check of its definition:
// guardViews, in views_guard.go).
// PostgreSQL itself does the checking, at the cost of a statement that
// reads no table. The regclass constants make any DDL on a policy table
// invalidate the guard's cached plan; the server then analyzes it again,
// and (a) a table dropped, or created again under another OID, or a
// missing one created, makes the division fail (22012); (b) a column
// added, dropped, renamed or retyped changes the row type the guard
// returns, which a prepared statement must not: "cached plan must not
// change result type" (0A000). Either way the server skips everything up
// to Sync, so the client's statement never runs; the client gets a 55000
// error saying so, and the session reads the catalog again (and prepares
// a new guard) before its next statement. It costs no round trip: one
// Bind, Execute and Close more per statement. Names are resolved by the
// syscache, not the transaction's snapshot, so REPEATABLE READ
// transactions are covered too. The guard needs no privilege on the
// tables.
//
// Where it goes:
//
//   - extended protocol: before the Describe or Execute of a statement
//     that touches a policy table, after the Parse and Bind that precede
//     it, and again before the next one after a later Parse or Bind of
//     the batch (the server looks up the names of a statement only then,
//     and an earlier statement may have kept it waiting for as long as it
//     liked), or after a later Execute (a function it ran may have
//     changed DateStyle or TimeZone: the settings check, which a portal
//     bound earlier and executed after needs). The Parse and Bind took the statement's locks, held to the
//     end of the transaction, so no DDL on its tables commits between the
//     guard and the statement (ALTER TABLE waits for the lock).
//   - simple Query: Bind and Execute of the guard, then the client's
//     Query, then a Sync of the proxy's own (refused instead inside the
//     client's open extended batch: query_in_batch.go). The Query runs in the guard's
//     implicit transaction, or not at all. There the guard runs before the
//     statement takes its locks: DDL that commits in the microseconds
//     between the two is not seen (see README).
//
// Prepared statements planned with an older catalog are refused at Bind
// when the tables they touch changed (handleBind): the server would run
// the plan the proxy made for the old columns.

// guardName names the guard's prepared statement and portal. Clients
// never see them; a client's own DEALLOCATE ALL or DISCARD ALL drops the
// statement, which the proxy then prepares again.
const guardName = "phiproxy_guard"

// guardQuery is the guard's text for the catalog cat: it fails unless
// every policy table cat holds still has its OID and columns, and every
// one it lacks is still missing.
func guardQuery(pol *policy.Policy, cat *catalog) string {
	var conds, rows []string
	for _, t := range pol.Tables() {
		name := quoteLiteral(`"` + t.Schema + `"."` + t.Name + `"`) // policy identifiers hold no quotes
		ct := cat.tables[t.QualifiedName()]
		if ct == nil {
			conds = append(conds, "pg_catalog.to_regclass("+name+") IS NULL")
			continue
		}
		conds = append(conds, fmt.Sprintf("%s::pg_catalog.regclass::pg_catalog.oid OPERATOR(pg_catalog.=) %d", name, ct.oid))
		rows = append(rows, fmt.Sprintf(`, (NULL::"%s"."%s").*`, t.Schema, t.Name))
	}
	vconds, vrows := guardViews(cat)
	conds, rows = append(conds, vconds...), append(rows, vrows...)
	if cat.epochOK {
		// Second names anywhere in the database unchanged (epoch.go), or
		// changed by the session's own DDL alone, which catalog_check
		// accepts (and otherwise fails). The planner folds the comparison
		// of constants, so the check runs only once the epoch moved on.
		e := quoteLiteral(cat.epoch)
		own := checkCall(pol, cat, false)
		if rc := remoteCheck(pol, cat); rc != "" {
			own += " AND " + rc // (remote_check.go)
		}
		conds = append(conds, "("+policy.EpochFunction+" OPERATOR(pg_catalog.=) "+e+" OR "+own+")")
	}
	if len(conds) == 0 {
		conds = append(conds, "true")
	}
	// Every operator is named with its schema: the guard runs with the
	// client's search_path, which may put a schema with a / of its own
	// before pg_catalog (epoch.go's pathAheadSQL).
	return "SELECT 1 OPERATOR(pg_catalog./) (" + strings.Join(conds, " AND ") + ")::pg_catalog.int4 AS phiproxy_guard, " + guardSettings + strings.Join(rows, "")
}

// defaultRecheck is how long a catalog stays trusted without a check of
// the session's own before a statement (reload.go). Every guard that
// passes renews it.
const defaultRecheck = time.Second

// ErrCatalogChanged is the client's error when the guard found that the
// policy tables changed since the session read the catalog: nothing of
// the batch ran, and the next statement is planned with the new catalog.
var ErrCatalogChanged error = &refusal{pgerrcode.ObjectNotInPrerequisiteState, "catalog",
	"the PHI tables or their second names changed since this session read their definitions (DDL by another connection, or run by a function); nothing was run: send the statement again"}

// errGuardLost: the server no longer had the guard statement (the client
// ran DEALLOCATE ALL or DISCARD ALL); it is prepared again for the next
// batch.
var errGuardLost error = &refusal{pgerrcode.ObjectNotInPrerequisiteState, "catalog",
	"the session's catalog check was deallocated (DEALLOCATE ALL or DISCARD ALL); nothing was run: send the statement again"}

// ErrStalePlan refuses to bind a prepared statement planned with a catalog
// that no longer describes its tables.
var ErrStalePlan error = &refusal{pgerrcode.FeatureNotSupported, "catalog",
	"the PHI tables this prepared statement uses changed since it was prepared; prepare it again"}

// guard sends the guard in front of a statement that relies on the
// catalog, unless one went out after the batch's last Parse and Bind.
// clientToServer.
func (s *session) guard() error {
	if s.guarded || s.eng.noGuard {
		return nil
	}
	s.guarded = true
	if s.guardLost.Swap(false) {
		s.guardFor = nil
	}
	a := &guardAnswer{s: s}
	if s.guardFor != s.db {
		// The guard of another catalog, or none, is prepared: replace it.
		s.guardFor = s.db
		msgs := []struct {
			kind proxy.Kind
			msg  pgproto3.FrontendMessage
		}{
			{proxy.KindClose, &pgproto3.Close{ObjectType: 'S', Name: guardName}},
			{proxy.KindParse, &pgproto3.Parse{Name: guardName, Query: s.db.guardSQL}},
		}
		if s.db.cat.epochOK {
			msgs = append(msgs, []struct {
				kind proxy.Kind
				msg  pgproto3.FrontendMessage
			}{
				{proxy.KindClose, &pgproto3.Close{ObjectType: 'S', Name: syncName}},
				{proxy.KindParse, &pgproto3.Parse{Name: syncName, Query: syncSQL}},
			}...)
		}
		for _, m := range msgs {
			if err := s.sendHidden(m.kind, m.msg, &guardAnswer{s: s, parse: m.kind == proxy.KindParse}); err != nil {
				return err
			}
		}
	}
	if s.db.cat.epochOK && !s.newTxn && !s.synced {
		// Inside a transaction block the server takes in other sessions'
		// catalog changes only when asked (policy.EpochDDL's
		// catalog_sync): before the guard is checked against them. Once
		// per batch: a later statement of it that names a relation not
		// yet locked makes the server take them in by locking it, before
		// the guard that follows its Parse and Bind.
		s.synced = true
		for _, m := range []struct {
			kind proxy.Kind
			msg  pgproto3.FrontendMessage
		}{
			{proxy.KindBind, &pgproto3.Bind{DestinationPortal: syncName, PreparedStatement: syncName}},
			{proxy.KindExecute, &pgproto3.Execute{Portal: syncName}},
			{proxy.KindClose, &pgproto3.Close{ObjectType: 'P', Name: syncName}},
		} {
			if err := s.sendHidden(m.kind, m.msg, a); err != nil {
				return err
			}
		}
	}
	bind := &pgproto3.Bind{DestinationPortal: guardName, PreparedStatement: guardName, Parameters: s.guardSettingsParams()}
	if err := s.sendHidden(proxy.KindBind, bind, a); err != nil {
		return err
	}
	if err := s.sendHidden(proxy.KindExecute, &pgproto3.Execute{Portal: guardName}, &guardAnswer{s: s, execute: true}); err != nil {
		return err
	}
	s.eng.drift.guards.Inc()
	if s.dropsGuard {
		// A statement of this batch, run after the guard, may deallocate
		// it (a text "SELECT …; DEALLOCATE ALL"): the next guard is
		// prepared again rather than refused as lost.
		s.dropsGuard = false
		s.guardFor = nil
	}
	return s.sendHidden(proxy.KindClose, &pgproto3.Close{ObjectType: 'P', Name: guardName}, a)
}

// sendHidden sends a message of the proxy's own, whose answers only the
// responder sees (an error goes to the client too). It encodes into its
// own scratch buffer: s.buf may hold the client's rewritten message, not
// yet sent.
func (s *session) sendHidden(kind proxy.Kind, m pgproto3.FrontendMessage, r proxy.Responder) error {
	out, err := m.Encode(s.guardBuf[:0])
	if err != nil {
		return err
	}
	s.guardBuf = out
	return s.c.Send(proxy.Expectation{Kind: kind, Hidden: true, Responder: r}, out)
}

// guardSync ends the proxy's pipeline after a simple Query it guarded.
// Its ReadyForQuery follows the Query's, which the client may answer
// before the proxy has read it: syncDone lets the next statement wait for
// it rather than find the session busy (canQuery). (The Query's own
// Responder is not wrapped: the relay looks for optional interfaces on it.)
//
// Never inside the client's own extended batch (a Query sent after Parse,
// Bind or Execute and before their Sync): when an earlier message of it
// failed the server skips the Query, and a Sync of the proxy's would
// answer it. Such a Query is refused rather than guarded
// (query_in_batch.go); the check here is a second line.
func (s *session) guardSync() error {
	if s.openBatch {
		return nil
	}
	done := make(chan struct{})
	s.syncDone = done
	return s.sendHidden(proxy.KindSync, &pgproto3.Sync{}, syncAnswer{done: done})
}

// syncAnswer closes done once the guard's Sync is answered (or skipped).
type syncAnswer struct {
	proxy.PassResponder
	done chan struct{}
}

// Answered implements proxy.Responder.
func (a syncAnswer) Answered(byte) { close(a.done) }

// syncWait bounds the wait for the guard's Sync: its ReadyForQuery is
// normally already on its way when the client's next message arrives.
const syncWait = time.Second

// guardAnswer learns how the server answered the guard's messages and
// turns its errors into the client's. serverToClient.
type guardAnswer struct {
	proxy.PassResponder
	s       *session
	parse   bool // the answer to the guard's Parse
	execute bool // the answer to its Execute
}

// Answered implements proxy.Responder.
func (a *guardAnswer) Answered(typ byte) {
	switch {
	case a.parse && typ != '1':
		a.s.guardLost.Store(true) // not prepared: prepare it again next time
	case a.execute && typ == 'C':
		a.s.verified()
	}
}

// ErrorResponse implements proxy.Responder: the guard's division by zero,
// a change of its result type, or its Parse failing (a table gone) mean
// the catalog changed; an unknown statement means the client deallocated
// it. Other errors (an aborted transaction, a cancel) are the server's
// answer to the client's statement as well, and pass unchanged.
func (a *guardAnswer) ErrorResponse(dst, msg []byte) []byte {
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return append(dst, msg...)
	}
	var refused error
	switch {
	case isSettingsChanged(&er):
		a.s.c.Logger().Info(checkedList + " changed under the session by a statement of the batch: batch refused")
		refused = errSettingsChanged
	case er.Code == pgerrcode.DivisionByZero, er.Code == pgerrcode.FeatureNotSupported, er.Code == policy.CheckFailed,
		// A relation or row type it names is gone (DROP, or a rename:
		// the server analyzes it again and cannot find the name).
		er.Code == pgerrcode.UndefinedTable, er.Code == pgerrcode.UndefinedObject,
		a.parse && er.Code != pgerrcode.InFailedSQLTransaction && er.Code != pgerrcode.QueryCanceled:
		a.s.guardLost.Store(true) // prepared for the old catalog: prepare it again
		a.s.drifted.Store(true)
		a.s.eng.drift.changed.Inc()
		a.s.c.Logger().Info("catalog changed under the session: batch refused, catalog to be read again", "sqlstate", er.Code)
		refused = ErrCatalogChanged
	case er.Code == pgerrcode.InvalidSQLStatementName:
		a.s.guardLost.Store(true)
		refused = errGuardLost
	default:
		if a.parse {
			a.s.guardLost.Store(true)
		}
		return append(dst, msg...)
	}
	info := proxy.Classify(refused)
	out, err := (&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: info.Code, Message: info.Message}).Encode(dst)
	if err != nil {
		return append(dst, msg...)
	}
	return out
}

// verified records that the session's catalog was just proven current.
// Either direction.
func (s *session) verified() { s.verifiedAt.Store(time.Now().UnixNano()) }

// driftMetrics count the guard's work.
type driftMetrics struct {
	guards, changed, reloads prometheus.Counter
}

func newDriftMetrics(reg prometheus.Registerer, e *Engine) (*driftMetrics, error) {
	m := &driftMetrics{
		guards: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phiproxy_catalog_guards_total",
			Help: "Catalog guards sent in front of statements that rely on the catalog (one per batch, and one more after each later Parse or Bind of it).",
		}),
		changed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phiproxy_catalog_changes_total",
			Help: "Batches refused because the policy tables changed since the session read the catalog.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phiproxy_catalog_reads_total",
			Help: "Catalog reads and checks of the sessions' own after the first (after DDL, a refused batch, or a catalog trusted for longer than the recheck interval).",
		}),
	}
	problems := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "phiproxy_catalog_problems",
		Help: "Policy tables that governed databases cannot serve (missing, not ready, or with a second name), as the sessions last read their catalogs; /readyz fails while it is not 0.",
	}, func() float64 { return float64(e.problemCount()) })
	for _, c := range []prometheus.Collector{m.guards, m.changed, m.reloads, problems} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// dropsStatements reports whether sql may deallocate the session's
// prepared statements (DEALLOCATE, DISCARD ALL), the guard's among them:
// the word anywhere in the text, in any case, at word boundaries. A false
// alarm costs one Parse of the guard. PgBouncer's default reset query is
// DISCARD ALL, so this is not rare.
func dropsStatements(sql string) bool {
	for i := 0; i < len(sql); i++ {
		if sql[i]|0x20 != 'd' || i > 0 && identByte(sql[i-1]) {
			continue
		}
		for _, w := range [...]string{"deallocate", "discard"} {
			end := i + len(w)
			if end <= len(sql) && strings.EqualFold(sql[i:end], w) && (end == len(sql) || !identByte(sql[end])) {
				return true
			}
		}
	}
	return false
}

// reliesOnCatalog reports whether a plan was made with the catalog or has
// rows the catalog decrypts: it touches a policy table in a statement other
// than DDL or transaction control. DDL needs no guard (it is how tables
// change; the session reads the catalog again after it), and a guarded
// simple Query leaves the session busy for a moment with the guard's Sync,
// which would delay that read.
func reliesOnCatalog(p *rewrite.Plan) bool {
	if p.Passthrough {
		return false
	}
	for _, st := range p.Statements {
		if len(st.Tables) > 0 && st.Kind != rewrite.KindDDL && st.Kind != rewrite.KindTransaction {
			return true
		}
	}
	return len(p.Statements) == 0
}
