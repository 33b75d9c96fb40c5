package phi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// Which error does a statement with an invalid PHI value fail with? The
// one PostgreSQL gives on the plaintext schema: the first it meets while
// analyzing the statement, which may be another value's (a plain column's
// literal in WHERE is analyzed before UPDATE's SET list). So the proxy
// does not fail such a statement itself. It sends it with a marker in
// place of each invalid value: an expression that fails where PostgreSQL
// would fail reading the value, and carries no PHI, only a random name.
// When the server's error names a marker, the proxy puts its own error for
// that value in its place (code, message, hint, and the value's position
// in the client's text); any other error is the server's own, and stands.
// The server, and its log, see only the marker.
//
// Where PostgreSQL fails on a value depends on how it is written
// (transformInsertStmt, transformUpdateStmt and their helpers in
// PostgreSQL 15):
//
//   - a cast ('x'::date, date 'x'): when the cast is analyzed, in text
//     order. Marker: 'name'::pg_catalog.int4, which fails there too.
//   - a plain string compared (col = 'x', IN ('x', …)): when the comparison
//     is analyzed, after its operands, which the proxy knows (a PHI column
//     and PHI values). The cast marker fails inside the same comparison.
//   - a plain string stored (INSERT VALUES, UPDATE SET, ON CONFLICT DO
//     UPDATE SET): when it is assigned to its column, after every
//     expression of its row or SET list was analyzed, in column order.
//     Marker: the value NULL stored into a field of the column
//     (col.name = NULL, or col.name in the INSERT column list), which
//     PostgreSQL refuses at that same step, as the column is not of a
//     composite type. An INSERT column list applies to every row, so this
//     is for the first row only; a value in a later row gets the cast
//     marker: exact for everything before its row, but in its row it fails
//     before the plain values to its left are assigned, and before the
//     casts to its right are analyzed.
//   - a value that reads well but does not convert to its column (an
//     integer too large for an int4 column): when the statement is
//     planned, after analysis. Marker: a cast the planner evaluates,
//     'name'::pg_catalog.text::pg_catalog.int4.
//
// Parameters are converted by the server at Bind, in order: an invalid
// PHI parameter is sent as a value that is not UTF-8 (see bindMarker).

// markerPrefix starts every marker's name.
const markerPrefix = "phiproxy_invalid_"

// marker is one invalid value sent as a marker: the client's error for
// it, and its name (a literal's) or parameter number (a Bind's).
type marker struct {
	info  proxy.ErrorInfo
	param int // 1-based parameter of the upstream Bind; 0 for a literal
}

// markSet is the markers of one message: immutable once sent.
type markSet struct {
	nonce   string // in each literal marker's name
	markers []marker
	// count is called (serverToClient) when a marker's error reaches the
	// client, to count and log the refusal.
	count func(proxy.ErrorInfo)
}

// newNonce returns a random name part for the markers of one message.
func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// name is the name of the i-th marker.
func (m *markSet) name(i int) string {
	return markerPrefix + m.nonce + "_" + strconv.Itoa(i)
}

// find returns the marker a server error names, if any.
func (m *markSet) find(er *pgproto3.ErrorResponse) (*marker, bool) {
	if m == nil {
		return nil, false
	}
	if m.nonce != "" {
		prefix := markerPrefix + m.nonce + "_"
		i := strings.Index(er.Message, prefix)
		if i < 0 {
			return nil, false
		}
		rest := er.Message[i+len(prefix):]
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		k, err := strconv.Atoi(rest[:n])
		if err != nil || k < 0 || k >= len(m.markers) {
			return nil, false
		}
		return &m.markers[k], true
	}
	// A Bind's: the server names the parameter it failed to read.
	if er.Code != pgerrcode.CharacterNotInRepertoire {
		return nil, false
	}
	for i := range m.markers {
		mk := &m.markers[i]
		if strings.HasSuffix(er.Where, "parameter $"+strconv.Itoa(mk.param)) {
			return mk, true
		}
	}
	return nil, false
}

// errorResponse puts the client's error in place of a server error that
// names one of the markers; it returns false for any other error.
func (m *markSet) errorResponse(dst, msg []byte) ([]byte, bool) {
	if m == nil {
		return dst, false
	}
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil {
		return dst, false
	}
	mk, ok := m.find(&er)
	if !ok {
		return dst, false
	}
	if m.count != nil {
		m.count(mk.info)
	}
	out, err := (&pgproto3.ErrorResponse{Severity: er.Severity, SeverityUnlocalized: er.SeverityUnlocalized,
		Code: mk.info.Code, Message: mk.info.Message, Hint: mk.info.Hint, Position: mk.info.Position}).Encode(dst)
	if err != nil {
		return dst, false
	}
	return out, true
}

// markerFor says how the invalid value of literal l, which failed with
// err, is marked, or returns false when err is not an error of the value
// that PostgreSQL would give (a refusal of the proxy's, an encoding error
// the server gives on reading the text): the statement is then refused
// as a whole, as before.
type markKind uint8

const (
	markNone  markKind = iota
	markNull           // an index added beside a stored value: NULL, never reached
	markCast           // 'name'::pg_catalog.int4
	markField          // col.name = NULL
	markPlan           // 'name'::pg_catalog.text::pg_catalog.int4::<storage>
)

// literalMark returns how the value of l, invalid with err, is marked.
func literalMark(l *rewrite.Literal, err error) markKind {
	var ve *ValueError
	var te *TypeError
	switch {
	case errors.As(err, &ve):
		if !markable(ve.SQLState()) {
			return markNone
		}
	case errors.As(err, &te):
		if !markable(te.SQLState()) {
			return markNone
		}
	default:
		return markNone
	}
	if l.Assign && l.Action != rewrite.ActionEncrypt {
		return markNull
	}
	bare := l.Type == "" || l.Type == rewrite.LiteralNumber || l.Type == rewrite.LiteralBool
	switch {
	case !l.Assign:
		return markCast
	case ve != nil && ve.Converted:
		return markPlan
	case te != nil && !bare:
		// A cast that reads but does not assign (42804): PostgreSQL
		// fails where it assigns it.
		return markField
	case !bare:
		return markCast
	}
	return markField
}

// markable reports whether an error of a value with this SQLSTATE is one
// PostgreSQL gives while analyzing or planning the statement: not a
// refusal of the proxy's (0A000), nor an encoding error, which the server
// gives while reading the text, before anything else.
func markable(code string) bool {
	return code != pgerrcode.FeatureNotSupported && code != pgerrcode.CharacterNotInRepertoire
}

// appendMarker appends the marker expression of kind k named name, for a
// value of column col.
func appendMarker(dst []byte, k markKind, name string, col *policy.Column) []byte {
	switch k {
	case markCast:
		return append(append(append(dst, '\''), name...), "'::pg_catalog.int4"...)
	case markPlan:
		dst = append(append(append(dst, '\''), name...), "'::pg_catalog.text::pg_catalog.int4::pg_catalog."...)
		if col.Storage == policy.StorageBytea {
			return append(dst, "text::pg_catalog.bytea"...)
		}
		return append(dst, "text"...)
	}
	return append(dst, "NULL"...)
}

// charPosition is the ErrorResponse position (1-based, in characters) of
// byte offset off of text.
func charPosition(text string, off int) int32 {
	if off < 0 || off > len(text) {
		return 0
	}
	return int32(utf8.RuneCountInString(text[:off]) + 1)
}

// countMarks has the markers of a message count and log their refusal
// when the server reports one (the proxy's refusal metric and log line,
// as for a refusal of its own). clientToServer, before the message goes.
func (s *session) countMarks(ms *markSet) {
	if ms == nil {
		return
	}
	statements, logger := s.eng.metrics.statements, s.c.Logger()
	ms.count = func(info proxy.ErrorInfo) {
		statements.WithLabelValues("rejected_" + info.Reason).Inc()
		logger.Info("statement refused", "sqlstate", info.Code, "reason", info.Reason)
	}
}
