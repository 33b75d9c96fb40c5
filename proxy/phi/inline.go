package phi

import (
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The catalog check inside a simple Query. The guard (guard.go) goes in
// front of a Query's text, but the server looks up the names of each
// statement of the text only once the statements before it ran, which may
// take as long as they like (a lock, pg_sleep): a view over a policy
// table created and committed meanwhile by another connection would be
// named by a later statement with the session's catalog none the wiser,
// and a value written through it stored in plaintext. So in a text of
// several statements the proxy puts a statement of its own in front of
// each after the first:
//
//	SELECT "phiproxy"."catalog_check"('<epoch>', '{<tables>}', '{<oids>}', '<second names>')
//
// which fails (SQLSTATE PXCAT) unless the policy tables are still the
// relations the session read and no second name changed but by the
// session's own DDL (policy.EpochDDL). The failure ends the Query there;
// the client gets ErrCatalogChanged. Its answers reach no one
// (proxy.OwnStatements: inlined.own are the statements of the text sent
// that are the proxy's). Statements that PostgreSQL runs without a
// snapshot and that reach no row (BEGIN, SET, SHOW, LOCK …) get none:
// a check would take the snapshot before SET TRANSACTION ISOLATION LEVEL.
// The boundaries are the lexer's, read in the session's client_encoding,
// compared with the parser's on every text of several statements.

// checkQuery is the check statement for cat, "" when the database has no
// epoch (without it nothing can be checked, and passed-through texts are
// refused: checkEpoch).
func checkQuery(pol *policy.Policy, cat *catalog) string {
	if cat == nil || !cat.epochOK {
		return ""
	}
	return "SELECT " + checkCall(pol, cat, true) + remoteCheckColumn(pol, cat)
}

// checkCall is the call of catalog_check for cat: with the policy tables'
// names when tables (else only their OIDs, whose second names it compares
// once the session's own DDL moved the epoch on).
func checkCall(pol *policy.Policy, cat *catalog, tables bool) string {
	var names, oids []string
	for _, t := range pol.Tables() {
		if tables {
			names = append(names, `"\"`+t.Schema+`\".\"`+t.Name+`\""`) // policy identifiers hold no quotes or backslashes
		}
		oid := "NULL"
		if ct := cat.tables[t.QualifiedName()]; ct != nil {
			oid = strconv.FormatUint(uint64(ct.oid), 10)
		}
		oids = append(oids, oid)
	}
	return policy.CheckFunction + "(" + quoteLiteral(cat.epoch) + "::pg_catalog.text, " +
		quoteLiteral("{"+strings.Join(names, ",")+"}") + "::pg_catalog.text[], " +
		quoteLiteral("{"+strings.Join(oids, ",")+"}") + "::pg_catalog.oid[], " +
		quoteLiteral(cat.secondNames) + "::pg_catalog.text)"
}

// errSplit refuses a text of several statements whose boundaries the
// proxy could not find for certain.
var errSplit error = &refusal{pgerrcode.FeatureNotSupported, "catalog",
	"phiproxy could not tell where the statements of this text start, which it must to check the catalog in front of each: send them one per query"}

// inlined is a simple Query's text with the catalog checks in it.
type inlined struct {
	// text is the text to send.
	text string
	// at are the offsets in the client's text where checks went.
	at []int
	// own are the statements of text (0-based, in order) that are
	// checks (proxy.OwnStatements).
	own []int
	// first is the client's text up to the end of its first statement,
	// the only one that needs the guard in front of the text; bareFirst,
	// that it needs none (rewrite.CheckSeparators): a text that starts
	// with BEGIN ISOLATION LEVEL … must get nothing in front, which
	// would take the transaction's snapshot first.
	first     string
	bareFirst bool
	// checkLen is the length of each check, its semicolon included.
	checkLen int
}

// withChecks returns text with the catalog check in front of each of its
// statements after the first that may read or write a relation's rows;
// text unchanged when it holds one statement or the database has no
// epoch. No check goes in front of transaction control, SET, SHOW, LOCK
// and SET CONSTRAINTS, which PostgreSQL runs without a snapshot (a check
// would take the transaction's snapshot before SET TRANSACTION ISOLATION
// LEVEL) and which reach no row: the next statement that may is checked.
func (s *session) withChecks(text string) (inlined, error) {
	in := inlined{text: text, first: text}
	// A governed database without the epoch (one created from template0
	// after the installation) and without policy tables yet, whose
	// texts are served: another connection may create a policy table and
	// a view over it while an earlier statement of the text waits, and a
	// later one name the view. No check can stand in front of it there:
	// the server takes in other sessions' catalog changes inside the
	// text's implicit transaction only when it takes a lock it did not
	// hold (catalog_sync does, in a database with the epoch), so a check
	// of the guard's kind (to_regclass) would see the table still missing.
	// Such texts are refused.
	noEpoch := s.db.checkSQL == "" && s.db.cat.epochGuards()
	if s.db.checkSQL == "" && !noEpoch || s.eng.noGuard || !strings.Contains(strings.TrimRight(text, " \t\r\n\f;"), ";") {
		return in, nil
	}
	enc, err := s.textEncoding(text)
	if err != nil {
		return in, err
	}
	known := rewrite.LexOptions{StandardStringsOff: s.nonStandardStrings.Load(), Encoding: enc}
	toks, err := rewrite.Lex(s.toks[:0], text, known)
	s.toks = toks[:0]
	if err != nil {
		if enc == rewrite.EncodingUTF8 && !known.StandardStringsOff && !rewrite.Parses(text) {
			return in, nil // the server refuses it before running any of it
		}
		return in, errSplit
	}
	// The parser is asked even when the lexer found no separator: its
	// BEGIN ATOMIC rule reads words, which a column begin with the label
	// atomic spells too.
	seps := rewrite.Separators(nil, text, toks)
	bare, err := rewrite.CheckSeparators(text, seps, enc)
	if err != nil {
		s.c.Logger().Warn("statement boundaries disagree with the parser; text refused", "error", err.Error())
		return in, errSplit
	}
	// Under the other standard_conforming_strings ('\'' ends a literal
	// or not), which the session may have without the proxy knowing yet
	// (checkSent), the boundaries must be the same, or the server must
	// refuse the text.
	if strings.IndexByte(text, '\\') >= 0 {
		other := known
		other.StandardStringsOff = !known.StandardStringsOff
		toks, err := rewrite.Lex(s.toks[:0], text, other)
		s.toks = toks[:0]
		if err == nil && !slices.Equal(rewrite.Separators(nil, text, toks), seps) {
			return in, errBackslashLiteral
		}
	}
	if len(seps) == 0 {
		return in, nil
	}
	in.first = text[:seps[0]]
	in.bareFirst = len(bare) > 0 && bare[0]
	check := s.inlineCheck()
	in.checkLen = len(check) + 1
	var b strings.Builder
	b.Grow(len(text) + len(seps)*(len(check)+1))
	from := 0
	for i, sep := range seps {
		if bare != nil && bare[i+1] {
			continue // (a text that does not parse has no bare statements: the server runs none of it)
		}
		if noEpoch {
			return in, errNoEpochText()
		}
		in.at = append(in.at, sep+1)
		in.own = append(in.own, i+1+len(in.own))
		b.WriteString(text[from : sep+1])
		b.WriteString(check)
		b.WriteByte(';')
		from = sep + 1
	}
	if len(in.at) == 0 {
		return in, nil
	}
	b.WriteString(text[from:])
	in.text = b.String()
	return in, nil
}

// textEncoding is the client encoding the server will read text in: a
// text in ASCII reads the same in each. Otherwise the encoding the server
// reported last, which is the one it will read text in only when nothing
// is in flight (a statement before it may change client_encoding).
func (s *session) textEncoding(text string) (rewrite.Encoding, error) {
	for i := 0; i < len(text); i++ {
		if text[i] >= utf8.RuneSelf {
			if idle, _ := s.idle(); !idle {
				return 0, errSettingsInFlight
			}
			enc := s.encoding.Load()
			if enc < 0 || !rewrite.Encoding(enc).Exact() {
				return 0, errSplit
			}
			return rewrite.Encoding(enc), nil
		}
	}
	return rewrite.EncodingUTF8, nil
}

// Own implements proxy.OwnStatements: a simple Query's checks are the
// statements result.own of its text.
func (r *result) Own(n int) bool {
	_, found := slices.BinarySearch(r.own, n)
	return found
}

// OwnErrorResponse implements proxy.OwnStatements: a check that failed is
// the catalog changed; another error of it (a cancel) is the client's.
func (r *result) OwnErrorResponse(dst, msg []byte) []byte {
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return append(dst, msg...)
	}
	var refused error
	switch {
	case isSettingsChanged(&er):
		r.s.c.Logger().Info(checkedList + " changed under the session by a statement of the text: text refused at a later statement")
		refused = errSettingsChanged
	case er.Code == policy.CheckFailed:
		r.s.drifted.Store(true)
		r.s.eng.drift.changed.Inc()
		r.s.c.Logger().Info("catalog changed under the session: text refused at a later statement, catalog to be read again")
		refused = ErrCatalogChanged
	case er.Code == pgerrcode.UndefinedFunction:
		refused = errNoEpoch()
	default:
		if er.Code == pgerrcode.QueryCanceled || er.Code == pgerrcode.InFailedSQLTransaction || strings.HasPrefix(er.Code, "08") || strings.HasPrefix(er.Code, "57") {
			return append(dst, msg...)
		}
		refused = ErrCatalogChanged
		r.s.drifted.Store(true)
	}
	info := proxy.Classify(refused)
	out, err := (&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: info.Code, Message: info.Message}).Encode(dst)
	if err != nil {
		return append(dst, msg...)
	}
	return out
}

// inserted moves m, the positions of a text, onto the text with checks
// inserted at the byte offsets at of sent, each check bytes long.
func (m sentPosition) inserted(client, sent, withChecks string, at []int, check int) sentPosition {
	if len(at) == 0 {
		return m
	}
	shift := func(off int) int { // where byte off of sent went
		n := 0
		for _, a := range at {
			if a <= off {
				n++
			}
		}
		return off + n*check
	}
	if m.sent == "" {
		// Passed through: the text sent is the client's.
		m = sentPosition{client: client, sent: sent, runs: []rewrite.Run{{Len: len(client)}},
			pieces: []sentPiece{{sent: 0, plan: 0, n: len(sent)}}}
	}
	m.sent = withChecks
	if m.runs == nil {
		return m // mapped by the texts' shared start and end (sentPosition.position)
	}
	var pieces []sentPiece
	for _, pc := range m.pieces {
		start, end := pc.sent, pc.sent+pc.n
		for _, a := range at {
			if a > start && a < end {
				pieces = append(pieces, sentPiece{sent: shift(start), plan: pc.plan + start - pc.sent, n: a - start, client: pc.client})
				start = a
			}
		}
		pieces = append(pieces, sentPiece{sent: shift(start), plan: pc.plan + start - pc.sent, n: end - start, client: pc.client})
	}
	m.pieces = pieces
	return m
}
