package phi

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// writer encrypts and indexes the values of client messages. It belongs
// to the session's clientToServer goroutine.
type writer struct {
	cols  keyedColumns
	codec *valueCodec
	// Scratch space, reused from message to message.
	plain   []byte   // canonical plaintext of the value at hand
	lit     []byte   // a literal's value, as bytes
	key     []byte   // its equality key, for a blind index
	out     []byte   // a transformed literal
	arena   []byte   // a Bind's transformed values, back to back
	spans   []span   // their places in arena
	params  [][]byte // a Bind's new values
	formats []int16  // and format codes
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
// literal as written.
func (w *writer) renderQuery(dst []byte, plan *rewrite.Plan) ([]byte, error) {
	prev := 0
	for i := range plan.Literals {
		l := &plan.Literals[i]
		dst = append(dst, plan.SQL[prev:l.Start]...)
		if l.Action == rewrite.ActionNone {
			dst = append(dst, l.Value...)
			prev = l.End
			continue
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
		prev = l.End
	}
	return append(dst, plan.SQL[prev:]...), nil
}

// rewriteBind rewrites b in place for plan: every parameter of the
// rewritten statement is taken from its client source, encrypted or
// indexed as the plan says, with one format code per parameter. declared
// are the parameter types the client gave in Parse (0 or missing: none).
// b's new values point into the writer's scratch space: encode b before
// the next call.
func (w *writer) rewriteBind(b *pgproto3.Bind, plan *rewrite.Plan, declared []uint32) error {
	if len(plan.Params) == 0 {
		return nil
	}
	// Parameters declared beyond the highest $n are bound too (upstream
	// they follow the plan's), unchanged: no PHI column uses them.
	want := max(plan.ClientParams, len(declared))
	if len(b.Parameters) != want {
		return &ParamCountError{Got: len(b.Parameters), Want: want}
	}
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
		if err == nil {
			if p.Array {
				w.arena, err = w.arrayValue(w.arena, p, oid, format, src)
			} else {
				w.arena, err = w.value(w.arena, p.Action, p.Column, p.Index, oid, p.Assign, format, src)
			}
		}
		if err != nil {
			return locate(err, "parameter $%d for %s", p.Source+1, p.Column.QualifiedName())
		}
		w.spans = append(w.spans, span{i, start, len(w.arena)})
		w.formats[i] = formatText
		if p.Action == rewrite.ActionEncrypt && p.Column.Storage == policy.StorageBytea && !p.Array {
			w.formats[i] = formatBinary
		}
	}
	// Point the values into the arena only now: appends above may move it.
	for _, sp := range w.spans {
		w.params[sp.i] = w.arena[sp.start:sp.end:sp.end]
	}
	b.Parameters, b.ParameterFormatCodes = w.params, w.formats
	return nil
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
