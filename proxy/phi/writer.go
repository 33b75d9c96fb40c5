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
	out     []byte   // a transformed literal
	text    []byte   // a value converted to text
	arena   []byte   // a Bind's transformed values, back to back
	spans   []span   // their places in arena
	params  [][]byte // a Bind's new values
	formats []int16  // and format codes
}

func newWriter(cols keyedColumns, nonUTF8 *atomic.Bool) *writer {
	return &writer{cols: cols, codec: newValueCodec(nonUTF8)}
}

// value appends to dst the upstream form of one client value of a PHI
// column given in the client's format: encrypted, or indexed for ix (one
// of col's blind indexes; nil: the exact one).
func (w *writer) value(dst []byte, a rewrite.Action, col *policy.Column, ix *policy.BlindIndex, format int16, src []byte) ([]byte, error) {
	pc := w.cols[col]
	if pc == nil {
		return dst, fmt.Errorf("column %s: no keys", col.QualifiedName())
	}
	var err error
	if w.plain, err = w.codec.canonical(w.plain[:0], col.Type, format, src); err != nil {
		return dst, err
	}
	return pc.transform(dst, a, ix, w.plain)
}

// renderQuery appends to dst the SQL text of a plan with every literal slot
// filled: ciphertext for stored values, index text for comparisons.
func (w *writer) renderQuery(dst []byte, plan *rewrite.Plan) ([]byte, error) {
	prev := 0
	for i := range plan.Literals {
		l := &plan.Literals[i]
		dst = append(dst, plan.SQL[prev:l.Start]...)
		var err error
		if w.out, err = w.value(w.out[:0], l.Action, l.Column, l.Index, formatText, []byte(l.Value)); err != nil {
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
		var err error
		switch {
		case p.Array:
			w.arena, err = w.arrayValue(w.arena, p, format, src)
		case format == formatBinary && p.Source < len(declared) && declared[p.Source] != 0 &&
			declared[p.Source] != typeOID(p.Column.Type, false):
			// The client declared its own type (JDBC's int4 for an int8
			// column, say) and sent that type's binary form: read it as
			// the declared type, then as text of the logical type.
			if w.text, err = w.codec.toText(w.text[:0], declared[p.Source], src); err != nil {
				err = &ValueError{Type: p.Column.Type}
			} else {
				w.arena, err = w.value(w.arena, p.Action, p.Column, p.Index, formatText, w.text)
			}
		default:
			w.arena, err = w.value(w.arena, p.Action, p.Column, p.Index, format, src)
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
// (or ciphertext) of each element of an array parameter, as for
// `col_bidx = ANY($n)`.
func (w *writer) arrayValue(dst []byte, p *rewrite.Param, format int16, src []byte) ([]byte, error) {
	lt, ok := logicalTypes[p.Column.Type]
	if !ok {
		return nil, &ValueError{Type: p.Column.Type}
	}
	t, ok := w.codec.m.TypeForOID(lt.arrayOID)
	if !ok {
		return nil, &ValueError{Type: p.Column.Type}
	}
	decoded, err := t.Codec.DecodeValue(w.codec.m, lt.arrayOID, format, src)
	if err != nil {
		return nil, &ValueError{Type: p.Column.Type}
	}
	elems, ok := decoded.([]any)
	if !ok {
		return nil, &ValueError{Type: p.Column.Type}
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
		// The element back in text format, then the usual path, so an
		// element indexes exactly like the same value bound alone.
		w.text, err = w.codec.m.Encode(lt.oid, formatText, e, w.text[:0])
		if err != nil {
			return nil, &ValueError{Type: p.Column.Type}
		}
		if w.out, err = w.value(w.out[:0], p.Action, p.Column, p.Index, formatText, w.text); err != nil {
			return nil, err
		}
		out = append(out, '"')
		out = append(out, w.out...)
		out = append(out, '"')
	}
	return append(out, '}'), nil
}
