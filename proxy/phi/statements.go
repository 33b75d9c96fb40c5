package phi

import (
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// statement is a prepared statement as the proxy planned it.
//
// Which statement the server holds under a name is only known from its
// answers: a Parse may fail (a duplicate name, an error earlier in the
// pipeline), a Close may be skipped, DEALLOCATE may drop it. Binding the
// wrong plan could send plaintext to a PHI statement, so each statement
// records what the server did with it (state) and the one it was meant to
// replace (prev), and lookup resolves a name from them.
type statement struct {
	plan *rewrite.Plan
	db   *dbState
	// prev is the statement of the same name the server keeps if this
	// Parse is skipped, or fails (a named one: a failed unnamed Parse
	// leaves no unnamed statement). clientToServer; cut once the Parse is
	// answered, so chains only span unanswered Parses.
	prev *statement
	// batch is the clientToServer batch (count of Syncs) of the Parse.
	batch uint64
	// state is stmtPending until the server answers the Parse (or its
	// Close). Written by serverToClient, read by clientToServer.
	state atomic.Int32
	// paramOIDs are the parameter types the client declared in Parse.
	paramOIDs []uint32
	// text is the SQL of a passthrough plan: planned with a catalog that
	// did not know a view it names, it is analyzed again when bound with
	// a newer one (stalePassthrough).
	text string
	// movesSettings: executing it may change DateStyle or TimeZone.
	movesSettings bool
	// literals are the settings its date/time literals were read under,
	// nil when none depended on them (literal_settings.go). Immutable.
	literals *literalSettings
	// cursor is what it does with SQL cursors (cursor.go); fetch: it is a
	// FETCH, whose rows take the shape of whatever cursor holds the name
	// when it runs, not of the statement's description.
	cursor []cursorStmt
	fetch  bool
	// rd is the server's RowDescription of the statement, once a Describe
	// answered it. Written by serverToClient, read by clientToServer.
	rd atomic.Pointer[pgproto3.RowDescription]
	// marks are the markers of invalid values in its text (marker.go),
	// nil for none: a marker the planner evaluates fails at Bind or
	// Execute. Immutable.
	marks *markSet
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
func (s *session) lookup(name string) *statement {
	return resolve(s.statements[name], name != "")
}

// resolve follows st's chain to the statement the server holds. It runs
// on clientToServer, which alone touches prev.
func resolve(st *statement, named bool) *statement {
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
func (s *session) ambiguous(st *statement, named bool) bool {
	if st.state.Load() != stmtPending || st.batch == s.batch {
		return false
	}
	alt := resolve(st.prev, named)
	return alt != nil && alt.plan != st.plan && !(alt.plan.Passthrough && st.plan.Passthrough)
}

// parseAnswer records in a statement how the server answered its Parse.
type parseAnswer struct {
	proxy.PassResponder
	st  *statement
	pos sentPosition // for a rewritten statement (position.go), else zero
}

// Answered implements proxy.Responder.
func (a parseAnswer) Answered(typ byte) {
	switch typ {
	case '1':
		a.st.state.Store(stmtCreated)
	case 0:
		a.st.state.Store(stmtSkipped)
	default:
		a.st.state.Store(stmtFailed)
	}
}

// closeAnswer records that the server closed a statement.
type closeAnswer struct {
	proxy.PassResponder
	st *statement
}

// Answered implements proxy.Responder.
func (a closeAnswer) Answered(typ byte) {
	if typ == '3' {
		a.st.state.Store(stmtClosed)
	}
}

// portal is a portal bound to a rewritten statement. clientToServer.
type portal struct {
	stmt      *statement
	result    *result
	described bool     // the client sent Describe for it
	audit     *audited // result with audit records, when the audit log is on (audit.go)
}
