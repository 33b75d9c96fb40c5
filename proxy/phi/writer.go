package phi

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// writer encrypts and indexes the values of client messages. It belongs
// to the session's clientToServer goroutine.
type writer struct {
	cols  keyedColumns
	codec *valueCodec
	// Scratch space, reused from message to message.
	plain   []byte      // canonical plaintext of the value at hand
	lit     []byte      // a literal's value, as bytes
	key     []byte      // its equality key, for a blind index
	out     []byte      // a transformed literal
	arena   []byte      // a Bind's transformed values, back to back
	spans   []span      // their places in arena
	pieces  []sentPiece // the parts of a rendered text copied from the plan
	params  [][]byte    // a Bind's new values
	formats []int16     // and format codes
}

func newWriter(cols keyedColumns, nonUTF8 *atomic.Bool) *writer {
	return &writer{cols: cols, codec: newValueCodec(nonUTF8)}
}

// value appends to dst the upstream form of one client value of a PHI
// column: src, of type oid (0: the column's logical type) in the given
// format, stored (assign) or compared; encrypted, or indexed for ix (one of
// col's blind indexes; nil: the exact one).
func (w *writer) value(dst []byte, a rewrite.Action, col *policy.Column, ix *policy.BlindIndex, oid uint32, assign bool, format int16, src []byte) ([]byte, error) {
	pc := w.cols[col]
	if pc == nil {
		return dst, fmt.Errorf("column %s: no keys", col.QualifiedName())
	}
	var err error
	var match bool
	if w.plain, match, err = w.codec.convert(w.plain[:0], col, oid, assign, format, src); err != nil {
		return dst, err
	}
	index := a == rewrite.ActionIndex || a == rewrite.ActionIndexNormalized
	if !match {
		if !index {
			return dst, fmt.Errorf("column %s: a stored value converted to no value", col.QualifiedName())
		}
		// A comparison no stored value satisfies (as on the server).
		return append(dst, noMatchIndex...), nil
	}
	if index {
		w.key = equalityKey(w.key[:0], col.Type, w.plain)
		return pc.transform(dst, a, ix, w.key)
	}
	return pc.transform(dst, a, ix, w.plain)
}

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

// splice replaces sql[start:end] with text; target: it writes a marker's
// field after a column name; loc: text is a copy of the client's text
// from byte loc (a literal forwarded as written), -1 for none.
type splice struct {
	start, end int
	text       []byte
	target     bool
	loc        int
}

// spliced is a plan's SQL with its splices, sorted by start, being
// written from base in a buffer; pieces records what is copied.
type spliced struct {
	sql    string
	edits  []splice
	base   int
	pieces []sentPiece
	nonce  string // in the name of the WITH query of a split INSERT
}

// appendRange appends sql[from:to] with the splices that start in it,
// without the fields after column names unless targets.
func (r *spliced) appendRange(dst []byte, from, to int, targets bool) []byte {
	i, _ := slices.BinarySearchFunc(r.edits, from, func(e splice, from int) int { return e.start - from })
	prev := from
	for ; i < len(r.edits) && r.edits[i].start < to; i++ {
		e := r.edits[i]
		if e.target && !targets {
			continue
		}
		dst = r.copyPlan(dst, prev, e.start)
		if e.loc >= 0 && len(e.text) > 0 {
			r.pieces = append(r.pieces, sentPiece{sent: len(dst) - r.base, plan: e.loc, n: len(e.text), client: true})
		}
		dst = append(dst, e.text...)
		prev = e.end
	}
	return r.copyPlan(dst, prev, to)
}

// copyPlan appends sql[from:to], noting the piece.
func (r *spliced) copyPlan(dst []byte, from, to int) []byte {
	if to > from {
		r.pieces = append(r.pieces, sentPiece{sent: len(dst) - r.base, plan: from, n: to - from})
	}
	return append(dst, r.sql[from:to]...)
}

// valuesSplit is an INSERT … VALUES whose first invalid value stored by a
// field marker is in row k > 0. The column list, and with it the marker,
// applies to every row, so the statement is sent in two: its rows before
// k in an INSERT in a WITH clause, analyzed first, then an INSERT of row
// k with the marker (appendSplit).
type valuesSplit struct {
	v *rewrite.InsertValues
	k int
}

// valuesSplits returns the INSERT statements of plan to split, in text
// order.
func valuesSplits(plan *rewrite.Plan, invalid map[int]invalidLiteral) []valuesSplit {
	var out []valuesSplit
	for i := range plan.Statements {
		v := plan.Statements[i].Values
		if v == nil {
			continue
		}
		k := -1
		for j, b := range invalid {
			l := &plan.Literals[j]
			if b.kind == markField && l.Target > 0 && inRows(v, l) && (k < 0 || l.Row < k) {
				k = l.Row
			}
		}
		if k > 0 && k < len(v.Rows) {
			out = append(out, valuesSplit{v, k})
		}
	}
	return out
}

// inRows reports whether l is in the rows of v.
func inRows(v *rewrite.InsertValues, l *rewrite.Literal) bool {
	return l.Start >= v.Rows[0][0] && l.End <= v.Rows[len(v.Rows)-1][1]
}

// splitAt reports whether l is in the split row of a split statement.
func splitAt(splits []valuesSplit, l *rewrite.Literal) bool {
	for _, sp := range splits {
		if inRows(sp.v, l) && l.Row == sp.k {
			return true
		}
	}
	return false
}

// appendSplit writes the INSERT of sp as
//
//	[WITH …,] phiproxy_rows_<nonce> AS (INSERT INTO t (…) VALUES row0, …, row(k-1))
//	INSERT INTO t (…, col.marker, …) VALUES rowk, rowk
//
// which PostgreSQL analyzes in the same order up to the marker: the rows
// before k as rows of a VALUES list of several (a lone row 0 twice), then
// row k (twice, for the same reason). It fails there, so nothing of it
// runs, and what follows row k, never analyzed, is left out.
func (r *spliced) appendSplit(dst []byte, sp valuesSplit) []byte {
	v := sp.v
	if strings.TrimSpace(r.sql[v.Start:v.Insert]) == "" {
		dst = append(append(dst, r.sql[v.Start:v.Insert]...), "WITH "...)
	} else {
		dst = append(r.appendRange(dst, v.Start, v.Insert, true), ", "...)
	}
	dst = append(append(append(dst, "phiproxy_rows_"...), r.nonce...), " AS ("...)
	dst = append(r.appendRange(dst, v.Insert, v.Values, false), ' ')
	for i := 0; i < sp.k; i++ {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = r.appendRange(dst, v.Rows[i][0], v.Rows[i][1], false)
	}
	if sp.k == 1 {
		dst = append(dst, ", "...)
		dst = r.appendRange(dst, v.Rows[0][0], v.Rows[0][1], false)
	}
	dst = append(dst, ") "...)
	dst = append(r.appendRange(dst, v.Insert, v.Values, true), ' ')
	row := v.Rows[sp.k]
	dst = r.appendRange(dst, row[0], row[1], true)
	dst = append(dst, ", "...)
	return r.appendRange(dst, row[0], row[1], true)
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

// rewriteBind rewrites b in place for plan: every parameter of the
// rewritten statement is taken from its client source, encrypted or
// indexed as the plan says, with one format code per parameter. declared
// are the parameter types the client gave in Parse (0 or missing: none).
// b's new values point into the writer's scratch space: encode b before
// the next call.
func (w *writer) rewriteBind(b *pgproto3.Bind, plan *rewrite.Plan, declared []uint32) error {
	_, err := w.bind(b, plan, declared, false)
	return err
}

// rewriteBindMarked is rewriteBind with a marker in place of each PHI
// parameter the server would fail to read (bindMarker), and their errors:
// nil when every value is valid.
func (w *writer) rewriteBindMarked(b *pgproto3.Bind, plan *rewrite.Plan, declared []uint32) (*markSet, error) {
	return w.bind(b, plan, declared, true)
}

// bindMarker is what an invalid PHI parameter is sent as: bytes that are
// not UTF-8, which the server fails to read as the parameter it is (text
// or bytea, in text format) at the point where it would have failed to
// read the plaintext: parameters are read in order at Bind, so an invalid
// plain parameter before it fails first, as it would. Under a
// client_encoding of UTF8 only: another would convert the bytes.
var bindMarker = []byte("\xff\xfe phiproxy invalid value")

func (w *writer) bind(b *pgproto3.Bind, plan *rewrite.Plan, declared []uint32, mark bool) (*markSet, error) {
	if len(plan.Params) == 0 {
		return nil, nil
	}
	// Parameters declared beyond the highest $n are bound too (upstream
	// they follow the plan's), unchanged: no PHI column uses them.
	want := max(plan.ClientParams, len(declared))
	if len(b.Parameters) != want {
		return nil, &ParamCountError{Got: len(b.Parameters), Want: want}
	}
	var ms *markSet
	var invalid []bool // by client parameter, once one is marked
	extra := want - plan.ClientParams
	n := len(plan.Params) + extra
	w.params, w.formats = slices.Grow(w.params[:0], n)[:n], slices.Grow(w.formats[:0], n)[:n]
	for i := range extra {
		src := plan.ClientParams + i
		w.params[len(plan.Params)+i] = b.Parameters[src]
		w.formats[len(plan.Params)+i] = formatOf(b.ParameterFormatCodes, src)
	}
	w.arena, w.spans = w.arena[:0], w.spans[:0]
	for i := range plan.Params {
		p := &plan.Params[i]
		src := b.Parameters[p.Source]
		format := formatOf(b.ParameterFormatCodes, p.Source)
		if p.Action == rewrite.ActionNone || src == nil {
			// NULL stays NULL: its ciphertext and its index are NULL too.
			w.params[i], w.formats[i] = src, format
			continue
		}
		if p.Source < len(invalid) && invalid[p.Source] {
			// Another use of a marked value: never read by the server,
			// which fails at the marker before it.
			w.params[i], w.formats[i] = nil, formatText
			continue
		}
		start := len(w.arena)
		var d uint32
		if p.Source < len(declared) {
			d = declared[p.Source]
		}
		// The type PostgreSQL gives the parameter: declared, cast, or the
		// column's (checkParam refused the others at Parse).
		oid, err := valueType(d, p.Type)
		if err == nil && oid != 0 && oid != d && isTextType(d) {
			// A declared text cast to another type: the cast reads the
			// characters, whatever the format they came in.
			format = formatText
		}
		before := w.arena // the values so far: a failed append may return nil
		if err == nil {
			if p.Array {
				w.arena, err = w.arrayValue(w.arena, p, oid, format, src)
			} else {
				w.arena, err = w.value(w.arena, p.Action, p.Column, p.Index, oid, p.Assign, format, src)
			}
		}
		if err != nil {
			err = locate(err, "parameter $%d for %s", p.Source+1, p.Column.QualifiedName())
			if !mark || i != p.Source || !bindMarkable(err, oid, d) {
				return nil, err
			}
			if ms == nil {
				ms = &markSet{}
				invalid = make([]bool, plan.ClientParams)
			}
			invalid[p.Source] = true
			ms.markers = append(ms.markers, marker{info: proxy.Classify(err), param: i + 1})
			w.arena = append(before[:start], bindMarker...)
		}
		w.spans = append(w.spans, span{i, start, len(w.arena)})
		w.formats[i] = formatText
		if p.Action == rewrite.ActionEncrypt && p.Column.Storage == policy.StorageBytea && !p.Array && !(p.Source < len(invalid) && invalid[p.Source]) {
			w.formats[i] = formatBinary
		}
	}
	// Point the values into the arena only now: appends above may move it.
	for _, sp := range w.spans {
		w.params[sp.i] = w.arena[sp.start:sp.end:sp.end]
	}
	b.Parameters, b.ParameterFormatCodes = w.params, w.formats
	return ms, nil
}

// bindMarkable reports whether err, a PHI parameter's, is one PostgreSQL
// gives when it reads the parameter at Bind: an error of the value's own
// input (not of a conversion after it, which comes when the statement is
// planned), for a parameter the server reads as the type the proxy read
// it as (declared so, or not declared).
func bindMarkable(err error, oid, declared uint32) bool {
	var ve *ValueError
	if !errors.As(err, &ve) || ve.Converted || !markable(ve.SQLState()) {
		return false
	}
	return declared == 0 || declared == oid || oid == 0
}

// span is a value's place in a scratch buffer.
type span struct{ i, start, end int }

// arrayValue appends to dst, as a text[] in text format, the blind index
// of each element of an array parameter of type oid (0: an array of the
// column's type), as for `col_bidx = ANY($n)`.
func (w *writer) arrayValue(dst []byte, p *rewrite.Param, oid uint32, format int16, src []byte) ([]byte, error) {
	elemOID := typeOID(p.Column.Type, false)
	if oid != 0 {
		elemOID = pgArrayElems[oid]
	}
	elems, err := arrayElems(format, src, elemOID, p.Column.Type)
	if err != nil {
		return nil, err
	}
	out := append(dst, '{')
	for i, e := range elems {
		if i > 0 {
			out = append(out, ',')
		}
		if e == nil {
			out = append(out, "NULL"...)
			continue
		}
		if w.out, err = w.value(w.out[:0], p.Action, p.Column, p.Index, elemOID, false, format, e); err != nil {
			return nil, err
		}
		out = append(out, '"')
		out = append(out, w.out...)
		out = append(out, '"')
	}
	return append(out, '}'), nil
}
