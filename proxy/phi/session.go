package phi

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/internal/auditlog"
	"github.com/novamind/phiproxy/policy"
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
	// skipping: a raise (raise.go) failed this batch; the rest of it, up
	// to Sync, is dropped as the server would skip it.
	skipping bool
	// stale: DDL went through since the catalog was read, or a statement
	// was refused for a catalog problem; it is read again at the next
	// moment nothing is pending (refreshCatalog).
	stale bool
	// viewsChanging: a statement that changes a view over policy tables
	// went out since the catalog was read (viewddl.go).
	viewsChanging bool
	// guarded: the catalog guard went out in this batch (guard.go), after
	// the last Parse and Bind: each may name relations the server looks
	// up only then, created since an earlier guard of the batch ran (an
	// earlier statement may have waited for as long as it liked).
	// synced: catalog_sync went out in this batch.
	guarded, synced bool
	// newTxn: the batch starts a transaction (nothing pending, none open
	// when it began), which makes the server take in other sessions'
	// catalog changes first (epoch.go).
	newTxn bool
	// sqlPrepared: a text forwarded may have prepared a statement with
	// SQL PREPARE, which a Bind may name (handleBind).
	sqlPrepared bool
	// sqlStale: second names of the policy tables changed since a
	// statement may have been prepared with SQL PREPARE (sqlprepare.go).
	sqlStale bool
	// readFirst: the catalog was read in front of this statement
	// (readsCatalogFirst).
	readFirst bool
	// readAt is when the catalog was last read (reload.go).
	readAt time.Time
	// guardFor is the catalog whose guard is prepared on the server, as far
	// as the proxy knows; nil for none.
	guardFor *dbState
	// dropsGuard: a statement planned since the guard last went out may
	// deallocate it (dropsStatements); the guard sent next, prepared
	// again if need be, may run before that statement does, so the one
	// after it is prepared again too.
	dropsGuard bool
	guardBuf   []byte // scratch for the guard's messages
	// syncDone is closed when the guard's Sync after the last guarded
	// simple Query is answered.
	syncDone   chan struct{}
	w          *writer
	statements map[string]*statement // prepared statements by name
	swept      int                   // len(statements) that triggers the next sweep
	portals    map[string]*portal    // portals of rewritten statements by name
	cursors    map[string]*cursor    // SQL cursors declared over policy tables (cursor.go)
	cursorSeq  uint64                // declarations counted, for evictCursors
	buf        []byte                // scratch for encoded messages
	toks       []rewrite.Token       // scratch for checkSent
	simple     rewrite.SimpleScratch // scratch for the plans of simple Query texts (handleQuery)
	cur        curStatement          // the statement at hand, for refusal records (audit.go)
	// copying is the COPY FROM STDIN on a policy table the client sends
	// data for (copyin.go); copyDiscard: data that follows is dropped
	// (after a refused statement, or once the client ended the COPY).
	// Both last until the client's next message but COPY data.
	copying     *copyIn
	copyDiscard bool

	// lastCursorSQL and lastCursorStmts are the last text parsed for its
	// cursor statements and what it holds (a FETCH repeats its text).
	// clientToServer.
	lastCursorSQL   string
	lastCursorStmts []cursorStmt

	// Set by NewSession, then read-only. access: what the session's roles
	// get of each column with an access rule (access.go), nil when the
	// policy has none; who: whom its audit records are about (audit.go),
	// nil without an audit log.
	access map[*policy.Column]colAccess
	who    *auditlog.Session
	// settingsMoved: a message sent since the session was last idle may
	// change DateStyle or TimeZone (a SET, a COMMIT, set_config...), so
	// the settings last reported may not be those the server will use
	// (see movesSettings).
	settingsMoved bool
	// literalReadOn: a Parse's literals are being read, and literalRead
	// is the settings they were read under, if any depended on them
	// (literal_settings.go).
	literalReadOn bool
	literalRead   *sessionSettings

	// serverToClient.
	r *reader
	// nonStandardStrings: the server reported standard_conforming_strings
	// off, so backslashes escape in '...' literals and the SQL analysis,
	// which lexes them as PostgreSQL does with it on, cannot be trusted.
	// nonUTF8: the server reported a client_encoding other than UTF8, in
	// which the proxy can neither lex nor canonicalize characters beyond
	// ASCII. Written by serverToClient (or NewSession), read by both.
	nonStandardStrings, nonUTF8 atomic.Bool
	// embedsASCII: the client_encoding the server reported is one whose
	// multibyte characters may hold bytes that are ASCII (a backslash),
	// as PostgreSQL's client-only encodings may (copyout.go).
	embedsASCII atomic.Bool
	// encoding is the client_encoding the server reported, a
	// rewrite.Encoding, or -1 for one the lexer does not know.
	encoding atomic.Int32
	// settings are DateStyle and TimeZone as the server last reported
	// them. Written by serverToClient (or newSession), read by both.
	settings atomic.Pointer[sessionSettings]

	// Written by serverToClient (the guard's answers) and NewSession, read
	// by clientToServer. drifted: a guard found the catalog changed; it is
	// read again before the next statement. guardLost: the server lost the
	// guard's statement; it is prepared again. verifiedAt: when the
	// catalog was last proven current (unix nanoseconds).
	drifted, guardLost atomic.Bool
	verifiedAt         atomic.Int64
}

var (
	_ proxy.SessionInterceptor = (*session)(nil)
	_ proxy.CopyInterceptor    = (*session)(nil)
)

func newSession(eng *Engine, c *proxy.Conn) *session {
	s := &session{
		eng:        eng,
		c:          c,
		statements: map[string]*statement{},
		portals:    map[string]*portal{},
		cursors:    map[string]*cursor{},
		swept:      minSweep,
	}
	s.w, s.r = newWriter(eng.cols, &s.nonUTF8), newReader(&s.nonUTF8, &s.settings)
	s.w.codec.settings = s.writerSettings
	st := &sessionSettings{}
	if c != nil {
		for _, name := range []string{"DateStyle", "TimeZone", "client_encoding", "standard_conforming_strings", "server_version"} {
			st = st.withSetting(name, c.ServerParameter(name))
		}
	}
	s.settings.Store(st)
	return s
}

// writerSettings gives the values of client messages the settings the
// server will read them under, as far as the proxy can know them.
// clientToServer.
func (s *session) writerSettings() (*sessionSettings, error) {
	if s.settingsMoved {
		return nil, errSettingsMoved
	}
	st := s.settings.Load()
	if s.literalReadOn {
		s.literalRead = st
	}
	return st, nil
}

// noteSettings sets settingsMoved when the message about to go may change
// the settings (Frontend clears it once nothing is in flight).
// clientToServer.
func (s *session) noteSettings(moves bool) {
	s.settingsMoved = s.settingsMoved || moves
}

// Frontend implements proxy.SessionInterceptor.
func (s *session) Frontend(typ byte, msg []byte) error {
	s.copying, s.copyDiscard = nil, false
	if !s.openBatch {
		s.sweep()
		if err := s.refreshCatalog(); err != nil {
			return err
		}
		idle, status := s.c.Idle()
		s.newTxn = idle && status == 'I'
	}
	if s.skipping {
		// The server fails the raise and skips the rest of the batch; the
		// proxy drops it itself, so no value of it goes upstream at all.
		return nil
	}
	if s.settingsMoved {
		// Everything sent before has been answered, ParameterStatus
		// included: the settings last reported are those in effect.
		// (Not inside an open extended batch: the server reports them
		// with the Sync's ReadyForQuery.)
		if idle, _ := s.c.Idle(); idle && !s.openBatch {
			s.settingsMoved = false
		}
	}
	var err error
	switch typ {
	case 'Q':
		s.batch++ // a Query ends an extended batch as Sync does
		err = s.handleQuery(msg)
		s.guarded, s.synced = false, false
		return err
	case 'P':
		err = s.handleParse(msg)
		s.guarded = false
	case 'B':
		err = s.handleBind(msg)
		s.guarded = false
	case 'D':
		err = s.handleDescribe(msg)
	case 'E':
		err = s.handleExecute(msg)
		// The statement it runs may change DateStyle or TimeZone by a
		// function of its own: a portal bound before it and executed
		// after relies on the settings again, and gets a guard of its
		// own (settings_check.go).
		s.guarded = false
	case 'C':
		err = s.handleClose(msg)
	case 'F':
		// A function call may change any setting.
		s.noteSettings(true)
		return s.handleFunctionCall(msg)
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
// so the cost stays proportional to the client's own use. SQL cursors
// without HOLD end with the transaction too.
func (s *session) sweep() {
	if len(s.portals) == 0 && len(s.cursors) == 0 && len(s.statements) <= s.swept {
		return
	}
	if idle, status := s.c.Idle(); !idle || status != 'I' {
		return
	}
	clear(s.portals)
	s.sweepCursors()
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
	s.skipping = false
	s.guarded, s.synced = false, false
}

// ParameterStatus implements proxy.SessionInterceptor.
func (s *session) ParameterStatus(name, value string) {
	switch name {
	case "standard_conforming_strings":
		s.nonStandardStrings.Store(value != "on")
		s.settings.Store(s.settings.Load().withSetting(name, value))
	case "client_encoding":
		s.nonUTF8.Store(value != "UTF8")
		s.embedsASCII.Store(encodingEmbedsASCII(value))
		enc, ok := rewrite.EncodingByName(value)
		if !ok {
			s.encoding.Store(-1)
		} else {
			s.encoding.Store(int32(enc))
		}
		s.settings.Store(s.settings.Load().withSetting(name, value))
	case "DateStyle", "TimeZone":
		s.settings.Store(s.settings.Load().withSetting(name, value))
	}
}

// plan analyzes a Query's or Parse's text and notes DDL, after which the
// catalog is read again (refreshCatalog).
func (s *session) plan(sql string, simple bool) (*rewrite.Plan, error) {
	if dropsStatements(sql) {
		s.guardFor = nil // prepare the guard again before it is next used
		s.dropsGuard = true
	}
	named, err := s.db.cat.aliasNamed(sql)
	if named {
		s.stale = true // after DDL on an alias, or a refusal: read the catalog again
	}
	if s.db.cat.unsafePath() && hasWordFold(sql, "search_path") {
		s.stale = true // it may now put pg_catalog first: read the catalog under it
	}
	var p *rewrite.Plan
	if err == nil {
		o := rewrite.LexOptions{StandardStringsOff: s.nonStandardStrings.Load()}
		p, err = s.db.planScratch(&s.simple, sql, simple, o)
	}
	var ce *CatalogError
	if errors.As(err, &ce) {
		s.stale = true // read the catalog again: the table may be fixed by now
	}
	if err != nil || !p.Passthrough || len(p.Statements) > 0 {
		// The text names a policy table (only those are parsed): it must
		// read for certain as it was read. If the settings explain why it
		// did not parse, say so.
		if serr := s.checkSettings(sql, simple); serr != nil {
			return nil, serr
		}
	}
	if err != nil {
		if !s.nonUTF8.Load() && !utf8.ValidString(sql) {
			// The server rejects such a text before parsing it.
			return nil, errInvalidUTF8Text
		}
		return nil, err
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
// pg_query parses as PostgreSQL does with standard_conforming_strings on
// and client_encoding UTF8; the simple protocol's lexer (rewrite.Lex)
// reads under the session's standard_conforming_strings. A text without
// backslashes reads the same whatever standard_conforming_strings says,
// and a text in ASCII the same in every client encoding; others depend on
// the settings the server will parse them with, which are those the server
// last reported only when nothing is in flight: PostgreSQL reports changes
// at ReadyForQuery, and any statement (a SET, set_config, a function, a
// ROLLBACK) may change them.
func (s *session) checkSettings(sql string, simple bool) error {
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
	// The guard's Sync (guard.go), sent after the client's guarded
	// Query, is answered after the client has its ReadyForQuery: a
	// script's next statement may come before it. It changes no setting.
	if idle, _, _ := s.canQuery(); !idle {
		return errSettingsInFlight
	}
	switch {
	case backslash && s.nonStandardStrings.Load() && !simple:
		return errNonStandardStrings
	case nonASCII && s.nonUTF8.Load():
		return errNonUTF8Text
	}
	return nil
}

// checkSent refuses a text on policy tables that would go upstream with a
// backslash in a standard '...' literal: the server reads such a literal
// differently when standard_conforming_strings is off, and the proxy cannot
// always know it is on (ALTER SYSTEM and a configuration reload reach a
// session at its next statement and are reported only after it). Without
// such literals the text reads the same under either setting, so what the
// proxy analyzed is what the server runs. PHI values are not kept: their
// literals were replaced by ciphertext.
func (s *session) checkSent(text string) error {
	if strings.IndexByte(text, '\\') < 0 {
		return nil
	}
	toks, err := rewrite.Lex(s.toks[:0], text, rewrite.LexOptions{})
	s.toks = toks[:0]
	if err != nil {
		return errBackslashLiteral
	}
	for _, t := range toks {
		if t.Standard() && strings.IndexByte(text[t.Start:t.End], '\\') >= 0 {
			return errBackslashLiteral
		}
	}
	return nil
}

// largeObjectFunctions are the functions a FunctionCall may run while a
// policy is active, by OID (pg_proc.dat): libpq's large-object interface
// uses the fast path, and they read or write large objects, never rows.
var largeObjectFunctions = map[uint32]bool{
	715: true, 952: true, 953: true, 954: true, 955: true,
	956: true, 957: true, 958: true, 964: true, 1004: true, 3170: true, 3171: true, 3172: true,
}

// errFunctionCall refuses the fast-path FunctionCall of anything but the
// large-object functions: a function runs SQL the proxy never sees.
var errFunctionCall error = &refusal{pgerrcode.FeatureNotSupported, "unsupported",
	"the fast-path FunctionCall message may call only the large-object functions while a PHI policy is active: call the function in a statement"}

// handleFunctionCall forwards a FunctionCall of a large-object function and
// refuses the others (raised by the server, which answers a FunctionCall
// with an ErrorResponse and ReadyForQuery as it answers the raise).
func (s *session) handleFunctionCall(msg []byte) error {
	if len(msg) >= 9 && largeObjectFunctions[binary.BigEndian.Uint32(msg[5:9])] {
		return s.c.Pass('F', msg)
	}
	return s.raiseQuery(errFunctionCall)
}
