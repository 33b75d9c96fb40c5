package phi

import (
	"errors"
	"sync/atomic"
	"unicode/utf8"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// session is one session's PHI layer. Fields are owned by one direction
// each, as commented; objects handed from clientToServer to serverToClient
// through the relay's FIFO (statement, result) are immutable after the
// hand-over, except where a field says otherwise.
type session struct {
	eng *Engine
	c   *proxy.Conn

	// clientToServer.
	db *dbState // the catalog and plans in use
	// batch counts the Syncs (and simple Queries) forwarded.
	batch uint64
	// openBatch: extended-protocol messages went out since the last Sync.
	openBatch bool
	// stale: DDL went through since the catalog was read, or a statement
	// was refused for a catalog problem; it is read again at the next
	// moment nothing is pending (refreshCatalog).
	stale bool
	// guarded: the catalog guard went out in this batch (guard.go).
	guarded bool
	// guardFor is the catalog whose guard is prepared on the server, as far
	// as the proxy knows; nil for none.
	guardFor *dbState
	guardBuf []byte // scratch for the guard's messages
	// syncDone is closed when the guard's Sync after the last guarded
	// simple Query is answered.
	syncDone   chan struct{}
	w          *writer
	statements map[string]*statement // prepared statements by name
	swept      int                   // len(statements) that triggers the next sweep
	portals    map[string]*portal    // portals of rewritten statements by name
	buf        []byte                // scratch for encoded messages

	// serverToClient.
	r *reader
	// nonStandardStrings: the server reported standard_conforming_strings
	// off, so backslashes escape in '...' literals and the SQL analysis,
	// which lexes them as PostgreSQL does with it on, cannot be trusted.
	// nonUTF8: the server reported a client_encoding other than UTF8, in
	// which the proxy can neither lex nor canonicalize characters beyond
	// ASCII. Written by serverToClient (or NewSession), read by both.
	nonStandardStrings, nonUTF8 atomic.Bool

	// Written by serverToClient (the guard's answers) and NewSession, read
	// by clientToServer. drifted: a guard found the catalog changed; it is
	// read again before the next statement. guardLost: the server lost the
	// guard's statement; it is prepared again. verifiedAt: when the
	// catalog was last proven current (unix nanoseconds).
	drifted, guardLost atomic.Bool
	verifiedAt         atomic.Int64
}

var _ proxy.SessionInterceptor = (*session)(nil)

func newSession(eng *Engine, c *proxy.Conn) *session {
	s := &session{
		eng:        eng,
		c:          c,
		statements: map[string]*statement{},
		portals:    map[string]*portal{},
		swept:      minSweep,
	}
	s.w, s.r = newWriter(eng.cols, &s.nonUTF8), newReader(&s.nonUTF8)
	return s
}

// Frontend implements proxy.SessionInterceptor.
func (s *session) Frontend(typ byte, msg []byte) error {
	if !s.openBatch {
		s.sweep()
		if err := s.refreshCatalog(); err != nil {
			return err
		}
	}
	var err error
	switch typ {
	case 'Q':
		s.batch++ // a Query ends an extended batch as Sync does
		err = s.handleQuery(msg)
		s.guarded = false
		return err
	case 'P':
		err = s.handleParse(msg)
	case 'B':
		err = s.handleBind(msg)
	case 'D':
		err = s.handleDescribe(msg)
	case 'E':
		err = s.handleExecute(msg)
	case 'C':
		err = s.handleClose(msg)
	default:
		return s.c.Pass(typ, msg)
	}
	s.openBatch = true
	return err
}

// sweep forgets, at the start of a batch, what the server no longer holds:
// once nothing is in flight and no transaction is open, no portal of the
// protocol exists (PostgreSQL drops them at transaction end), and closed
// statements can be dropped from the map (lookup no longer needs them).
// Statements are swept when their number has doubled since the last sweep,
// so the cost stays proportional to the client's own use.
func (s *session) sweep() {
	if len(s.portals) == 0 && len(s.statements) <= s.swept {
		return
	}
	if idle, status := s.c.Idle(); !idle || status != 'I' {
		return
	}
	clear(s.portals)
	if len(s.statements) > s.swept {
		for name, st := range s.statements {
			if s.lookup(name) == nil && st.state.Load() != stmtPending {
				delete(s.statements, name)
			}
		}
		s.swept = max(2*len(s.statements), minSweep)
	}
}

// minSweep is the number of statement names kept before the first sweep.
const minSweep = 256

// Sync implements proxy.SessionInterceptor.
func (s *session) Sync() {
	s.batch++
	s.openBatch = false
	s.guarded = false
}

// ParameterStatus implements proxy.SessionInterceptor.
func (s *session) ParameterStatus(name, value string) {
	switch name {
	case "standard_conforming_strings":
		s.nonStandardStrings.Store(value != "on")
	case "client_encoding":
		s.nonUTF8.Store(value != "UTF8")
	}
}

// plan analyzes a Query's or Parse's text and notes DDL, after which the
// catalog is read again (refreshCatalog).
func (s *session) plan(sql string, simple bool) (*rewrite.Plan, error) {
	if s.guardFor != nil && dropsStatements(sql) {
		s.guardFor = nil // prepare the guard again before it is next used
	}
	named, err := s.db.cat.aliasNamed(sql)
	if named {
		s.stale = true // after DDL on an alias, or a refusal: read the catalog again
	}
	var p *rewrite.Plan
	if err == nil {
		p, err = s.db.plan(sql, simple)
	}
	var ce *CatalogError
	if errors.As(err, &ce) {
		s.stale = true // read the catalog again: the table may be fixed by now
	}
	if err != nil {
		// It named a policy table (only those are parsed): if the settings
		// explain why it did not parse, say so.
		if serr := s.checkSettings(sql); serr != nil {
			return nil, serr
		}
		return nil, err
	}
	if !p.Passthrough || len(p.Statements) > 0 {
		// The text names a policy table (it was parsed).
		if err := s.checkSettings(sql); err != nil {
			return nil, err
		}
	}
	for _, st := range p.Statements {
		if st.Kind == rewrite.KindDDL {
			s.stale = true
			break
		}
	}
	return p, nil
}

// checkSettings refuses a text on policy tables whose reading depends on a
// setting the proxy cannot know for certain now, or knows to be one it
// cannot lex under.
//
// The analysis lexes as PostgreSQL does with standard_conforming_strings
// on and client_encoding UTF8. A text without backslashes reads the same
// whatever standard_conforming_strings says, and a text in ASCII the same
// in every client encoding; others depend on the settings the server will
// parse them with, which are those the server last reported only when
// nothing is in flight: PostgreSQL reports changes at ReadyForQuery, and
// any statement (a SET, set_config, a function, a ROLLBACK) may change
// them.
func (s *session) checkSettings(sql string) error {
	backslash, nonASCII := false, false
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == '\\':
			backslash = true
		case c >= utf8.RuneSelf:
			nonASCII = true
		}
	}
	if !backslash && !nonASCII {
		return nil
	}
	if idle, _ := s.c.Idle(); !idle {
		return errSettingsInFlight
	}
	switch {
	case backslash && s.nonStandardStrings.Load():
		return errNonStandardStrings
	case nonASCII && s.nonUTF8.Load():
		return errNonUTF8Text
	}
	return nil
}
