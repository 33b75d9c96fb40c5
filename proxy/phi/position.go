package phi

import (
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The server reports where in a statement an error lies (ErrorResponse
// Position: a 1-based character position, from which psql draws its
// "LINE 1: ... ^"). For a statement the proxy rewrote, that is a position
// in the text the proxy sent, not in the client's. The plan says which
// parts of its SQL are copies of the client's text (rewrite.Plan.Runs),
// and the renderer which parts of the sent text are copies of the plan's
// SQL: through both, a position in a copied part is the same character
// in the client's text. A position in what the proxy wrote (ciphertext, a
// blind-index column, a marker) has no counterpart: the proxy sends no
// position rather than a wrong one.

// sentPosition maps positions in a rewritten text back to the client's:
// both texts, kept by reference (no copy) until the answer has come, and
// compared only when an error carries a position. Made by clientToServer,
// used by serverToClient; immutable.
type sentPosition struct {
	client, sent string
	// marks are the markers of invalid values in sent (marker.go), nil
	// for none: their errors are the client's own.
	marks *markSet
	// runs and pieces, when set, map sent to client exactly: pieces are
	// the parts of sent copied from the plan's SQL, and runs the parts of
	// that SQL copied from client (rewrite.Plan.Runs).
	runs   []rewrite.Run
	pieces []sentPiece
}

// sentPiece is a part of a sent text copied from the plan's SQL: n bytes
// at byte offset sent of the text, at plan of the SQL; or when client, a
// copy of the client's text at plan (a literal a plan made from its
// shape forwards as written: rewrite.SimpleScratch).
type sentPiece struct {
	sent, plan, n int
	client        bool
}

// sentPositionOf is the sentPosition of a text rendered from plan.
func sentPositionOf(client, sent string, plan *rewrite.Plan, r rendered) sentPosition {
	m := sentPosition{client: client, sent: sent, marks: r.marks}
	if len(plan.Runs) > 0 && r.pieces != nil {
		m.runs, m.pieces = plan.Runs, r.pieces
	}
	return m
}

// mapped returns the client's position for pos through pieces and runs,
// 0 when pos is in what the proxy wrote.
func (m sentPosition) mapped(pos int32) int32 {
	chars := int(pos) - 1
	ob := 0 // byte offset of the character in sent
	for ; chars > 0 && ob < len(m.sent); chars-- {
		_, size := utf8.DecodeRuneInString(m.sent[ob:])
		ob += size
	}
	if chars > 0 || ob < 0 {
		return 0
	}
	if ob == len(m.sent) {
		return charPosition(m.client, len(m.client)) // the end of the input
	}
	for _, pc := range m.pieces {
		if ob < pc.sent || ob >= pc.sent+pc.n {
			continue
		}
		off := pc.plan + ob - pc.sent
		if pc.client {
			return charPosition(m.client, off)
		}
		for _, r := range m.runs {
			if off >= r.SQL && off < r.SQL+r.Len {
				return charPosition(m.client, r.Text+off-r.SQL)
			}
		}
		return 0
	}
	return 0
}

// position returns the client's position for pos, a position in the sent
// text; 0 when pos lies in what the proxy rewrote. Without the plan's
// runs, it is exact only before the first and after the last place the
// proxy rewrote.
func (m sentPosition) position(pos int32) int32 {
	if m.runs != nil {
		return m.mapped(pos)
	}
	client, sent := m.client, m.sent
	n := min(len(client), len(sent))
	p := 0 // bytes shared at the start, whole characters only
	for p < n && client[p] == sent[p] {
		p++
	}
	for p > 0 && p < len(client) && !utf8.RuneStart(client[p]) {
		p--
	}
	s := 0 // bytes shared at the end, not overlapping p
	for s < n-p && client[len(client)-1-s] == sent[len(sent)-1-s] {
		s++
	}
	for s > 0 && !utf8.RuneStart(client[len(client)-s]) {
		s--
	}
	i := int(pos) - 1 // 0-based character index in the sent text
	if i < 0 {
		return 0
	}
	if i < utf8.RuneCountInString(client[:p]) {
		return pos
	}
	sentChars := utf8.RuneCountInString(sent)
	if suffixChars := utf8.RuneCountInString(client[len(client)-s:]); i >= sentChars-suffixChars && i <= sentChars {
		return int32(utf8.RuneCountInString(client) - (sentChars - i) + 1)
	}
	return 0
}

// errorResponse rewrites the Position of a server error msg answering the
// rewritten text; other errors, and all errors when m is the zero value
// (nothing was rewritten), pass unchanged.
func (m sentPosition) errorResponse(dst, msg []byte) []byte {
	if m.sent == "" {
		return append(dst, msg...)
	}
	if out, ok := m.marks.errorResponse(dst, msg); ok {
		return out
	}
	var er pgproto3.ErrorResponse
	if err := er.Decode(msg[5:]); err != nil || er.Position == 0 {
		return append(dst, msg...)
	}
	er.Position = m.position(er.Position)
	out, err := er.Encode(dst)
	if err != nil {
		return append(dst, msg...)
	}
	return out
}

// ErrorResponse implements proxy.Responder: a simple Query's error is told
// in the client's text.
func (r *result) ErrorResponse(dst, msg []byte) []byte {
	if r.stmt != nil {
		// A portal's: a marker the planner evaluates may fail at Execute.
		if out, ok := r.stmt.marks.errorResponse(dst, msg); ok {
			return out
		}
	}
	return r.pos.errorResponse(dst, msg)
}

// ErrorResponse implements proxy.Responder: a Parse's error is told in
// the client's text.
func (a parseAnswer) ErrorResponse(dst, msg []byte) []byte { return a.pos.errorResponse(dst, msg) }

// positioned has resp, a simple Query's result, tell its errors in the
// client's text through m, and hide the answers of the checks the proxy
// put in the text (inline.go). clientToServer, before the Query goes.
func positioned(resp proxy.Responder, m sentPosition, own []int) proxy.Responder {
	r, ok := resp.(*result)
	if a, isAudited := resp.(*audited); isAudited {
		r, ok = a.result, true
	}
	if ok {
		r.pos, r.own = m, own
	}
	return resp
}
