package phi

import (
	"errors"
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// The writer's Binds: parameters encrypted, indexed or marked as the plan says.

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
