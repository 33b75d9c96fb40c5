package phi

import (
	"strings"
	"sync/atomic"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// SQL cursors (issue 10 item 2). A DECLARE is planned as the SELECT it
// declares (rewrite/cursor.go): its predicates are rewritten, its values
// encrypted or indexed, and what a SELECT may not do it may not do. The
// cursor then lives on the server as a portal the proxy never bound: psycopg
// 3 describes it (Describe of the portal named like the cursor), FETCHes
// from it (its rows' RowDescription gives their columns' origin, which is
// how every result is decrypted), and a client may even Execute it.
//
// So a Describe or an Execute of a portal the proxy did not bind is answered
// like a SELECT's: its RowDescription shows logical types without the
// blind-index columns, and its rows are decrypted (an Execute gets a hidden
// Describe first, as an undescribed portal of a rewritten statement does).
// That needs no record of the cursor: PostgreSQL's description says where
// each column comes from, whoever opened the cursor (a DECLARE, a PL/pgSQL
// function returning a refcursor).
//
// What the proxy does remember, per session and by name, is each cursor it
// saw declared over policy tables (cursor below): the catalog its DECLARE
// was planned and guarded with, and whether its query may change settings.
// A cursor's rows keep the table OIDs and attribute numbers of that moment
// for its whole life (a WITH HOLD cursor past COMMIT, when another
// connection may change the tables), so a FETCH, MOVE, Describe or Execute
// of a cursor whose tables the session's catalog now describes otherwise is
// refused (errStaleCursor) rather than decrypted by the wrong columns. A
// FETCH runs the cursor's query: if it may change DateStyle or TimeZone
// (set_config), the FETCH's dates are presented as after such a change.
//
// The records are forgotten when PostgreSQL drops the cursor: CLOSE, CLOSE
// ALL, DISCARD ALL, a protocol Close of the portal, another DECLARE of the
// name, and at transaction end for cursors without HOLD (sweep). A
// record may outlive its cursor (a WITH HOLD cursor of a transaction that
// rolled back, a cursor closed inside a function): it only makes the proxy
// more careful with a later cursor of that name. There are at most
// maxCursors; past that the oldest go, and their cursors are then handled
// as unknown ones (decrypted with the session's current catalog).

// cursor is a SQL cursor declared over policy tables. clientToServer.
type cursor struct {
	db     *dbState        // the catalog its DECLARE was planned with
	tables []*policy.Table // the policy tables it reads
	hold   bool            // WITH HOLD: it survives COMMIT
	moves  bool            // its query may change settings as FETCH runs it
	seq    uint64          // order of declaration, for eviction
	// rd is the server's description of its rows, once one went by (a
	// Describe of its portal or of a FETCH statement). Written by
	// serverToClient, read by clientToServer.
	rd atomic.Pointer[pgproto3.RowDescription]
}

// maxCursors bounds the cursors a session remembers.
const maxCursors = 256

// errStaleCursor refuses to read a cursor whose tables changed since it was
// declared: its rows name the old columns.
var errStaleCursor error = &refusal{pgerrcode.FeatureNotSupported, "catalog",
	"the PHI tables this cursor reads changed since it was declared; close it and declare it again"}

// cursorStmt is one statement's use of a cursor, with the policy tables a
// DECLARE reads (none: the cursor holds no PHI).
type cursorStmt struct {
	rewrite.CursorUse
	tables []*policy.Table
	moves  bool // a DECLARE whose query may change settings
}

// cursorStmts returns what the statements of sql do with cursors. A parsed
// plan says it; a text the byte scan passed through is parsed for it only
// when it may concern a cursor or portal the session knows.
func (s *session) cursorStmts(sql string, plan *rewrite.Plan, simple bool) []cursorStmt {
	if len(plan.Statements) > 0 {
		var out []cursorStmt
		for _, st := range plan.Statements {
			if st.Cursor != nil {
				out = append(out, cursorStmt{CursorUse: *st.Cursor, tables: st.Tables,
					moves: st.Cursor.Op == rewrite.CursorDeclare && len(st.Tables) > 0 && queryMovesSettings(sql)})
			}
		}
		return out
	}
	if simple && len(s.cursors) == 0 && len(s.portals) == 0 {
		return nil
	}
	if !cursorWords(sql, !simple) {
		return nil
	}
	if sql == s.lastCursorSQL {
		return s.lastCursorStmts
	}
	uses, err := rewrite.Cursors(sql)
	if err != nil {
		return nil // the server rejects it
	}
	out := make([]cursorStmt, len(uses))
	for i, u := range uses {
		out[i] = cursorStmt{CursorUse: u}
	}
	s.lastCursorSQL, s.lastCursorStmts = sql, out
	return out
}

// checkCursors refuses statements that read a cursor declared over tables
// the session's catalog now describes otherwise, and notes the settings a
// FETCH may change.
func (s *session) checkCursors(cs []cursorStmt) error {
	for i, c := range cs {
		if c.Op != rewrite.CursorFetch && c.Op != rewrite.CursorMove || declaredBefore(cs[:i], c.Name) {
			continue
		}
		if err := s.checkCursor(c.Name, true); err != nil {
			return err
		}
	}
	return nil
}

// declaredBefore reports whether cs declares or closes the cursor name
// (statements of the same text, before the one that reads it).
func declaredBefore(cs []cursorStmt, name string) bool {
	for _, c := range cs {
		if c.Name == name || c.Op == rewrite.CursorCloseAll {
			if c.Op != rewrite.CursorFetch && c.Op != rewrite.CursorMove {
				return true
			}
		}
	}
	return false
}

// checkCursor is checkCursors for the cursor name; run: the statement
// runs the cursor's query (FETCH, MOVE, Execute).
func (s *session) checkCursor(name string, run bool) error {
	k := s.cursors[name]
	if k == nil {
		return nil
	}
	if k.db != s.db && !k.db.cat.sameTables(s.db.cat, k.tables) {
		return errStaleCursor
	}
	if run {
		s.noteSettings(k.moves)
	}
	return nil
}

// applyCursors records what statements sent to the server do with cursors,
// db being the catalog they were planned with. The name of a declared or
// closed cursor is no longer a protocol portal's either.
func (s *session) applyCursors(cs []cursorStmt, db *dbState) {
	for _, c := range cs {
		switch c.Op {
		case rewrite.CursorDeclare:
			delete(s.portals, c.Name)
			if len(c.tables) == 0 {
				delete(s.cursors, c.Name)
				continue
			}
			s.cursorSeq++
			s.cursors[c.Name] = &cursor{db: db, tables: c.tables, hold: c.Hold, moves: c.moves, seq: s.cursorSeq}
			s.evictCursors()
		case rewrite.CursorClose:
			delete(s.portals, c.Name)
			delete(s.cursors, c.Name)
		case rewrite.CursorCloseAll:
			clear(s.portals)
			clear(s.cursors)
		}
	}
}

// evictCursors forgets the oldest cursors past maxCursors.
func (s *session) evictCursors() {
	for len(s.cursors) > maxCursors {
		var oldest string
		var seq uint64
		for name, k := range s.cursors {
			if oldest == "" || k.seq < seq {
				oldest, seq = name, k.seq
			}
		}
		delete(s.cursors, oldest)
	}
}

// sweepCursors forgets, once no transaction is open, the cursors that
// ended with it (those without HOLD). clientToServer, from sweep.
func (s *session) sweepCursors() {
	for name, k := range s.cursors {
		if !k.hold {
			delete(s.cursors, name)
		}
	}
}

// cursorResponder is the Responder of a Describe or Execute of a portal
// the proxy did not bind: a cursor declared in SQL, or one a function
// opened. Its description and rows are rewritten as a SELECT's.
func (s *session) cursorResponder(name string) (proxy.Responder, *result) {
	r := s.newResult(s.db, nil)
	r.cursor = s.cursors[name]
	if s.who == nil {
		return r, r
	}
	return &audited{result: r}, r
}

// describeCursor handles Describe of a portal the proxy did not bind.
func (s *session) describeCursor(name string, msg []byte) error {
	if err := s.checkCursor(name, false); err != nil {
		return s.raiseExtended(err)
	}
	resp, _ := s.cursorResponder(name)
	return s.c.Send(proxy.Expectation{Kind: proxy.KindDescribePortal, Responder: resp}, msg)
}

// executeCursor handles Execute of a portal the proxy did not bind: a
// hidden Describe of it first tells where its columns come from.
func (s *session) executeCursor(name string, msg []byte) error {
	if s.cursors[name] == nil {
		// It may run a query the proxy never saw: it may change anything.
		s.noteSettings(true)
	}
	if err := s.checkCursor(name, true); err != nil {
		return s.raiseExtended(err)
	}
	if s.cursors[name] != nil {
		// Its rows are decrypted and shown under the session's settings,
		// which a statement before it in the pipeline may have changed
		// by a function: the guard's settings check.
		if err := s.guard(); err != nil {
			return err
		}
	}
	resp, r := s.cursorResponder(name)
	r.unsure.Store(s.settingsMoved)
	out, err := (&pgproto3.Describe{ObjectType: 'P', Name: name}).Encode(s.buf[:0])
	if err != nil {
		return err
	}
	s.buf = out
	if err := s.c.Send(proxy.Expectation{Kind: proxy.KindDescribePortal, Hidden: true, Responder: resp}, out); err != nil {
		return err
	}
	return s.c.Send(proxy.Expectation{Kind: proxy.KindExecute, Responder: resp}, msg)
}

// queryMovesSettings reports whether a DECLARE's text calls a function that
// changes settings (set_config, pg_reload_conf): FETCH runs its query.
func queryMovesSettings(sql string) bool {
	return hasWordFold(sql, "set_config") || hasWordFold(sql, "pg_reload_conf")
}

// cursorWords reports whether sql may hold a statement on a cursor: it has
// one of the words that start one (as its first word, when first). It
// reads words, not SQL: a word in a literal costs a parse, nothing more.
func cursorWords(sql string, first bool) bool {
	if first {
		return isCursorWord(leadingWord(sql))
	}
	for i := 0; i < len(sql); {
		if !identBytes[sql[i]] {
			i++
			continue
		}
		j := i + 1
		for j < len(sql) && identBytes[sql[j]] {
			j++
		}
		if cursorInitial[sql[i]] && isCursorWord(sql[i:j]) {
			return true
		}
		i = j
	}
	return false
}

// identBytes is identByte as a table; cursorInitial marks the letters
// that start a cursor word.
var identBytes, cursorInitial = func() (id, initial [256]bool) {
	for c := range 256 {
		id[c] = identByte(byte(c))
	}
	for _, c := range "fmcdFMCD" {
		initial[c] = true
	}
	return id, initial
}()

// isCursorWord reports whether w starts a statement on cursors.
func isCursorWord(w string) bool {
	switch len(w) {
	case 4:
		return strings.EqualFold(w, "move")
	case 5:
		return strings.EqualFold(w, "fetch") || strings.EqualFold(w, "close")
	case 7:
		return strings.EqualFold(w, "discard") || strings.EqualFold(w, "declare")
	}
	return false
}

// hasWordFold reports whether the lower-case word occurs in s, in any
// case, with no identifier character on either side.
func hasWordFold(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		if s[i]|0x20 != word[0] || i > 0 && identByte(s[i-1]) {
			continue
		}
		end := i + len(word)
		if hasPrefixFold(s[i:], word) && (end == len(s) || !identByte(s[end])) {
			return true
		}
	}
	return false
}

// mapResultFormats maps the per-column result formats of a Bind of a
// statement the proxy forwards unchanged, which count the columns the
// client was shown, onto the server's columns when the statement's
// description has hidden blind-index columns: a FETCH from a cursor over a
// policy table, which pgx binds with a format per column. It returns the
// message to send and the server-side formats.
func (s *session) mapResultFormats(msg []byte, st *statement, formats []int16) ([]byte, []int16, error) {
	if len(formats) <= 1 {
		return msg, formats, nil
	}
	// A FETCH's rows have its cursor's shape, as last described (pgx's
	// describe-once mode binds a new unnamed statement each time).
	rd, db := st.rd.Load(), st.db
	if k := s.fetchCursor(st); k != nil && k.rd.Load() != nil {
		rd, db = k.rd.Load(), k.db
	}
	if rd == nil {
		return msg, formats, nil
	}
	t := newResultTransform(db.cat, s.eng.cols, rd, nil)
	if t == nil || t.drops == 0 || len(formats) != len(rd.Fields)-t.drops {
		return msg, formats, nil
	}
	var b pgproto3.Bind
	if err := b.Decode(msg[5:]); err != nil {
		return nil, nil, protocolError("invalid Bind message")
	}
	b.ResultFormatCodes = t.resultFormats(formats)
	out, err := b.Encode(s.buf[:0])
	if err != nil {
		return nil, nil, err
	}
	s.buf = out
	return out, b.ResultFormatCodes, nil
}

// fetchCursor is the known cursor a FETCH statement reads, nil for none.
func (s *session) fetchCursor(st *statement) *cursor {
	if !st.fetch {
		return nil
	}
	for _, c := range st.cursor {
		if c.Op == rewrite.CursorFetch {
			return s.cursors[c.Name]
		}
	}
	return nil
}
