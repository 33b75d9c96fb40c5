package phi

import (
	"errors"
	"fmt"
	"slices"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The writer's SQL texts: a plan's SQL with every literal slot filled.

// renderQuery appends to dst the SQL text of a plan with every literal slot
// filled: ciphertext for stored values, index text for comparisons, and
// for a literal the plan forwards (ActionNone, rewrite.SimpleScratch) the
// literal as written. An invalid value fails it.
func (w *writer) renderQuery(dst []byte, plan *rewrite.Plan) ([]byte, error) {
	out, _, err := w.render(dst, plan, "", false, false)
	return out, err
}

// rendered is what renderMarked tells of the text it wrote.
type rendered struct {
	// marks are the markers of invalid values and their errors, nil when
	// every value is valid.
	marks *markSet
	// pieces are the parts of the text copied from the plan's SQL, in
	// order (nil without the plan's runs).
	pieces []sentPiece
}

// renderMarked is renderQuery with markers in place of invalid values
// (marker.go). client is the client's text, whose positions the errors
// name. An invalid value that cannot be marked fails it.
func (w *writer) renderMarked(dst []byte, plan *rewrite.Plan, client string) ([]byte, rendered, error) {
	mark := true
	for i := range plan.Statements {
		// A marker in a function or view it creates would stay there,
		// to fail when it is used, with an error the proxy no longer
		// knows: such a statement is refused as before.
		mark = mark && plan.Statements[i].Kind != rewrite.KindDDL
	}
	return w.render(dst, plan, client, mark, true)
}

// invalidLiteral is a literal whose value failed, and how it is marked.
type invalidLiteral struct {
	i    int
	kind markKind
	err  error
}

// render is renderQuery, and renderMarked when mark; pieces: it tells the
// pieces of the text copied from the plan.
func (w *writer) render(dst []byte, plan *rewrite.Plan, client string, mark, pieces bool) ([]byte, rendered, error) {
	w.arena, w.spans, w.pieces = w.arena[:0], w.spans[:0], w.pieces[:0]
	var bad []invalidLiteral
	for i := range plan.Literals {
		l := &plan.Literals[i]
		start := len(w.arena)
		var err error
		if w.arena, err = w.literal(w.arena, l); err != nil {
			w.arena = w.arena[:start]
			k := markNone
			if mark {
				k = literalMark(l, err)
			}
			if k == markNone {
				return dst, rendered{}, err
			}
			bad = append(bad, invalidLiteral{i, k, err})
		}
		w.spans = append(w.spans, span{i, start, len(w.arena)})
	}
	var out rendered
	if bad == nil {
		base, prev := len(dst), 0
		for i, sp := range w.spans {
			l := &plan.Literals[i]
			w.pieces = append(w.pieces, sentPiece{sent: len(dst) - base, plan: prev, n: l.Start - prev})
			dst = append(dst, plan.SQL[prev:l.Start]...)
			if l.Action == rewrite.ActionNone {
				w.pieces = append(w.pieces, sentPiece{sent: len(dst) - base, plan: l.Loc, n: sp.end - sp.start, client: true})
			}
			dst = append(dst, w.arena[sp.start:sp.end]...)
			prev = l.End
		}
		w.pieces = append(w.pieces, sentPiece{sent: len(dst) - base, plan: prev, n: len(plan.SQL) - prev})
		dst = append(dst, plan.SQL[prev:]...)
	} else {
		dst, out = w.renderWithMarkers(dst, plan, client, bad)
	}
	if pieces && len(plan.Runs) > 0 {
		out.pieces = slices.Clone(w.pieces)
	}
	return dst, out, nil
}

// renderWithMarkers is render's path for a text with invalid values: each
// gets its marker, written with the others' slots in text order.
func (w *writer) renderWithMarkers(dst []byte, plan *rewrite.Plan, client string, bad []invalidLiteral) ([]byte, rendered) {
	ms := &markSet{nonce: newNonce()}
	invalid := make(map[int]invalidLiteral, len(bad))
	for _, b := range bad {
		invalid[b.i] = b
	}
	splits := valuesSplits(plan, invalid)
	var edits []splice
	for i, sp := range w.spans {
		l := &plan.Literals[i]
		b, ok := invalid[i]
		if !ok {
			e := splice{start: l.Start, end: l.End, text: w.arena[sp.start:sp.end], loc: -1}
			if l.Action == rewrite.ActionNone {
				e.loc = l.Loc // the client's literal, as written
			}
			edits = append(edits, e)
			continue
		}
		kind := b.kind
		if kind == markField && (l.Target == 0 || l.Row > 0 && !splitAt(splits, l)) {
			// No column name of its own to write the field into (a later
			// row of INSERT … VALUES shares the column list with the
			// first, and the statement could not be split): the cast
			// marker.
			kind = markCast
		}
		if kind == markNull {
			edits = append(edits, splice{start: l.Start, end: l.End, text: []byte("NULL"), loc: -1})
			continue
		}
		info := proxy.Classify(b.err)
		var te *TypeError
		if kind != markPlan && !(errors.As(b.err, &te) && !l.Assign) {
			info.Position = charPosition(client, l.Loc)
		}
		name := ms.name(len(ms.markers))
		ms.markers = append(ms.markers, marker{info: info})
		edits = append(edits, splice{start: l.Start, end: l.End, text: appendMarker(nil, kind, name, l.Column), loc: -1})
		if kind == markField {
			edits = append(edits, splice{start: l.Target, end: l.Target, text: []byte("." + name), target: true, loc: -1})
		}
	}
	slices.SortStableFunc(edits, func(a, b splice) int { return a.start - b.start })
	r := &spliced{sql: plan.SQL, edits: edits, base: len(dst), pieces: w.pieces, nonce: ms.nonce}
	prev := 0
	for _, sp := range splits {
		dst = r.appendRange(dst, prev, sp.v.Start, true)
		dst = r.appendSplit(dst, sp)
		prev = sp.v.End
	}
	dst = r.appendRange(dst, prev, len(plan.SQL), true)
	w.pieces = r.pieces
	return dst, rendered{marks: ms}
}

// literal appends to dst the SQL literal that replaces the slot of l: for
// a literal forwarded unchanged, the literal as written.
func (w *writer) literal(dst []byte, l *rewrite.Literal) ([]byte, error) {
	if l.Action == rewrite.ActionNone {
		return append(dst, l.Value...), nil
	}
	oid, err := literalType(l)
	if err == nil && oid != 0 {
		if conv := conversionOf(l.Column.Type, oid, l.Assign); conv <= convRefusedProxy {
			err = typeMismatch(conv, l.Column, oid, l.Assign)
		}
	}
	if err == nil {
		w.lit = append(w.lit[:0], l.Value...)
		w.out, err = w.value(w.out[:0], l.Action, l.Column, l.Index, oid, l.Assign, formatText, w.lit)
	}
	if err != nil {
		return dst, locate(err, "a literal for %s", l.Column.QualifiedName())
	}
	raw := l.Action == rewrite.ActionEncrypt && l.Column.Storage == policy.StorageBytea
	if dst, err = appendLiteral(dst, raw, w.out); err != nil {
		return dst, fmt.Errorf("literal for %s: %w", l.Column.QualifiedName(), err)
	}
	return dst, nil
}
