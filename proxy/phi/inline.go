package phi

import (
	"slices"
	"strconv"
	"strings"

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
//	SELECT "phiproxy"."catalog_check"('<epoch>', '{<tables>}', '{<oids>}')
//
// which fails (SQLSTATE PXCAT) unless the policy tables are still the
// relations the session read and no second name changed but by the
// session's own DDL (policy.EpochDDL). The failure ends the Query there;
// the client gets ErrCatalogChanged. Its answers reach no one
// (proxy.OwnStatements): statement n of the text sent is the proxy's when
// n is odd.

// checkQuery is the check statement for cat, "" when the database has no
// epoch (without it nothing can be checked, and passed-through texts are
// refused: checkEpoch).
func checkQuery(pol *policy.Policy, cat *catalog) string {
	if cat == nil || !cat.epochOK {
		return ""
	}
	var names, oids []string
	for _, t := range pol.Tables() {
		names = append(names, `"\"`+t.Schema+`\".\"`+t.Name+`\""`) // policy identifiers hold no quotes or backslashes
		oid := "NULL"
		if ct := cat.tables[t.QualifiedName()]; ct != nil {
			oid = strconv.FormatUint(uint64(ct.oid), 10)
		}
		oids = append(oids, oid)
	}
	return "SELECT " + policy.CheckFunction + "(" + quoteLiteral(cat.epoch) + "::pg_catalog.text, " +
		quoteLiteral("{"+strings.Join(names, ",")+"}") + "::pg_catalog.text[], " +
		quoteLiteral("{"+strings.Join(oids, ",")+"}") + "::pg_catalog.oid[])"
}

// errSplit refuses a text of several statements whose boundaries the
// proxy could not find for certain.
var errSplit error = &refusal{pgerrcode.FeatureNotSupported, "catalog",
	"phiproxy could not tell where the statements of this text start, which it must to check the catalog in front of each: send them one per query"}

// withChecks returns text with the catalog check in front of each of its
// statements after the first, the offsets in text where the checks went,
// and how many; text unchanged when it holds one statement or the
// database has no epoch.
func (s *session) withChecks(text string) (string, []int, error) {
	check := s.db.checkSQL
	if check == "" || s.eng.noGuard || !strings.Contains(strings.TrimRight(text, " \t\r\n\f;"), ";") {
		return text, nil, nil
	}
	known := rewrite.LexOptions{StandardStringsOff: s.nonStandardStrings.Load()}
	toks, err := rewrite.Lex(s.toks[:0], text, known)
	s.toks = toks[:0]
	if err != nil {
		if !known.StandardStringsOff && rewrite.Parses(text) {
			return "", nil, errSplit // the lexer and the parser disagree
		}
		return text, nil, nil // the server refuses it before running any of it
	}
	seps := rewrite.Separators(nil, text, toks)
	if len(seps) == 0 {
		return text, nil, nil
	}
	if err := rewrite.CheckSeparators(text, seps); err != nil {
		s.c.Logger().Warn("statement boundaries disagree with the parser; text refused", "error", err.Error())
		return "", nil, errSplit
	}
	// Under the other standard_conforming_strings ('\'' ends a literal
	// or not), which the session may have without the proxy knowing yet
	// (checkSent), the boundaries must be the same, or the server must
	// refuse the text.
	if strings.IndexByte(text, '\\') >= 0 {
		toks, err := rewrite.Lex(s.toks[:0], text, rewrite.LexOptions{StandardStringsOff: !known.StandardStringsOff})
		s.toks = toks[:0]
		if err == nil && !slices.Equal(rewrite.Separators(nil, text, toks), seps) {
			return "", nil, errBackslashLiteral
		}
	}
	var b strings.Builder
	b.Grow(len(text) + len(seps)*(len(check)+1))
	at := make([]int, len(seps))
	from := 0
	for i, sep := range seps {
		at[i] = sep + 1
		b.WriteString(text[from:at[i]])
		b.WriteString(check)
		b.WriteByte(';')
		from = at[i]
	}
	b.WriteString(text[from:])
	return b.String(), at, nil
}

// firstStatement is the first statement of text, whose statements after it
// have checks at (withChecks): only it needs the guard in front of the
// text. A text that starts with BEGIN ISOLATION LEVEL … must get nothing
// in front, which would take the transaction's snapshot first.
func firstStatement(text string, at []int) string {
	if len(at) == 0 {
		return text
	}
	return text[:at[0]-1]
}

// Own implements proxy.OwnStatements: a simple Query's checks
// (result.checks of them) are the odd statements of its text.
func (r *result) Own(n int) bool { return n%2 == 1 && n < 2*r.checks }

// OwnErrorResponse implements proxy.OwnStatements: a check that failed is
// the catalog changed; another error of it (a cancel) is the client's.
func (r *result) OwnErrorResponse(dst, msg []byte) []byte {
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return append(dst, msg...)
	}
	var refused error
	switch er.Code {
	case policy.CheckFailed:
		r.s.drifted.Store(true)
		r.s.eng.drift.changed.Inc()
		r.s.c.Logger().Info("catalog changed under the session: text refused at a later statement, catalog to be read again")
		refused = ErrCatalogChanged
	case pgerrcode.UndefinedFunction:
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
