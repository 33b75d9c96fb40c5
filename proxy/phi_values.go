package proxy

import (
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// phiWriter encrypts and indexes the values of client messages. It belongs
// to the session's clientToServer goroutine.
type phiWriter struct {
	cols  phiColumns
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

func newPHIWriter(cols phiColumns) *phiWriter {
	return &phiWriter{cols: cols, codec: newValueCodec()}
}

// value appends to dst the upstream form of one client value of a PHI
// column given in the client's format.
func (w *phiWriter) value(dst []byte, a rewrite.Action, col *policy.Column, format int16, src []byte) ([]byte, error) {
	pc := w.cols[col]
	if pc == nil {
		return dst, fmt.Errorf("column %s: no keys", col.QualifiedName())
	}
	var err error
	if w.plain, err = w.codec.canonical(w.plain[:0], col.Type, format, src); err != nil {
		return dst, err
	}
	return pc.transform(dst, a, w.plain)
}

// renderQuery appends to dst the SQL text of a plan with every literal slot
// filled: ciphertext for stored values, index text for comparisons.
func (w *phiWriter) renderQuery(dst []byte, plan *rewrite.Plan) ([]byte, error) {
	prev := 0
	for i := range plan.Literals {
		l := &plan.Literals[i]
		dst = append(dst, plan.SQL[prev:l.Start]...)
		var err error
		if w.out, err = w.value(w.out[:0], l.Action, l.Column, formatText, []byte(l.Value)); err != nil {
			return dst, fmt.Errorf("literal for %s: %w", l.Column.QualifiedName(), err)
		}
		raw := l.Action == rewrite.ActionEncrypt && l.Column.Storage == policy.StorageBytea
		if dst, err = appendLiteral(dst, raw, w.out); err != nil {
			return dst, fmt.Errorf("literal for %s: %w", l.Column.QualifiedName(), err)
		}
		prev = l.End
	}
	return append(dst, plan.SQL[prev:]...), nil
}

// formatOf returns the format code of parameter i under the Bind rules: no
// codes means text, one code applies to all, else one per parameter.
func formatOf(codes []int16, i int) int16 {
	switch len(codes) {
	case 0:
		return formatText
	case 1:
		return codes[0]
	}
	if i < len(codes) {
		return codes[i]
	}
	return formatText
}

// ParamCountError reports a Bind whose parameter count does not match the
// statement the client prepared.
type ParamCountError struct{ Got, Want int }

func (e *ParamCountError) Error() string {
	return fmt.Sprintf("bind message supplies %d parameters, but prepared statement requires %d", e.Got, e.Want)
}

// rewriteBind rewrites b in place for plan: every parameter of the
// rewritten statement is taken from its client source, encrypted or
// indexed as the plan says, with one format code per parameter. declared
// are the parameter types the client gave in Parse (0 or missing: none).
// b's new values point into the writer's scratch space: encode b before
// the next call.
func (w *phiWriter) rewriteBind(b *pgproto3.Bind, plan *rewrite.Plan, declared []uint32) error {
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
			if w.text, err = w.codec.toText(w.text[:0], declared[p.Source], src); err == nil {
				w.arena, err = w.value(w.arena, p.Action, p.Column, formatText, w.text)
			}
		default:
			w.arena, err = w.value(w.arena, p.Action, p.Column, format, src)
		}
		if err != nil {
			return fmt.Errorf("parameter $%d for %s: %w", p.Source+1, p.Column.QualifiedName(), err)
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
func (w *phiWriter) arrayValue(dst []byte, p *rewrite.Param, format int16, src []byte) ([]byte, error) {
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
		if w.out, err = w.value(w.out[:0], p.Action, p.Column, formatText, w.text); err != nil {
			return nil, err
		}
		out = append(out, '"')
		out = append(out, w.out...)
		out = append(out, '"')
	}
	return append(out, '}'), nil
}

// DecryptError reports a stored PHI value that did not decrypt (tampered,
// an unknown key, or plaintext where ciphertext belongs). It names the
// column, never the value.
type DecryptError struct {
	Column string // schema.table.column
	Err    error
}

func (e *DecryptError) Error() string { return "decryption failed for column " + e.Column }
func (e *DecryptError) Unwrap() error { return e.Err }

// resultCol is one column of a result the proxy transforms.
type resultCol struct {
	pc     *phiColumn // nil: forwarded as is
	drop   bool       // a blind-index column: hidden from the client
	format int16      // the format the server sends and the client reads
}

// resultTransform is how the rows of one result are decrypted. Immutable
// once built; nil when the result has no PHI or blind-index column.
type resultTransform struct {
	cols  []resultCol
	drops int // how many columns are hidden
}

// newResultTransform returns the transform for the result the server
// describes in rd, or nil when no column is PHI. formats, when not nil, are
// the Bind's result format codes (a statement's RowDescription says text
// for every column, the portal's knows better).
func newResultTransform(cat *catalog, cols phiColumns, rd *pgproto3.RowDescription, formats []int16) *resultTransform {
	var t *resultTransform
	for i, f := range rd.Fields {
		a, ok := cat.lookup(f.TableOID, int16(f.TableAttributeNumber))
		if !ok {
			continue
		}
		if t == nil {
			t = &resultTransform{cols: make([]resultCol, len(rd.Fields))}
			for j := range rd.Fields {
				t.cols[j].format = rd.Fields[j].Format
				if formats != nil {
					t.cols[j].format = formatOf(formats, j)
				}
			}
		}
		if a.index {
			t.cols[i].drop = true
			t.drops++
		} else {
			t.cols[i].pc = cols[a.column]
		}
	}
	return t
}

// rowDescription rewrites rd for the client: PHI columns show their logical
// type and blind-index columns are gone.
func (t *resultTransform) rowDescription(rd *pgproto3.RowDescription) {
	fields := rd.Fields[:0]
	for i, f := range rd.Fields {
		if i < len(t.cols) {
			c := &t.cols[i]
			if c.drop {
				continue
			}
			if c.pc != nil {
				f.DataTypeOID = typeOID(c.pc.col.Type, false)
				f.DataTypeSize = typeSize(c.pc.col.Type)
				f.TypeModifier = -1
			}
		}
		fields = append(fields, f)
	}
	rd.Fields = fields
}

// resultFormats maps the client's per-column result format codes onto the
// server's columns, hidden ones included (as text). Zero or one code
// applies to every column and needs no mapping.
func (t *resultTransform) resultFormats(client []int16) []int16 {
	if t == nil || t.drops == 0 || len(client) <= 1 {
		return client
	}
	out := make([]int16, len(t.cols))
	j := 0
	for i := range t.cols {
		if t.cols[i].drop {
			continue
		}
		if j < len(client) {
			out[i] = client[j]
		}
		j++
	}
	return out
}

// typeSize is pg_type.typlen of a logical type, as RowDescription reports.
func typeSize(t policy.LogicalType) int16 {
	switch t {
	case policy.TypeBool:
		return 1
	case policy.TypeInt4, policy.TypeDate:
		return 4
	case policy.TypeInt8, policy.TypeTimestamptz:
		return 8
	case policy.TypeUUID:
		return 16
	}
	return -1
}

// phiReader decrypts result values. It belongs to the session's
// serverToClient goroutine.
type phiReader struct {
	codec    *valueCodec
	envelope []byte // scratch: the envelope of a bytea value sent as text
	plain    []byte // scratch: decrypted canonical plaintext
	buf      []byte // scratch: the transformed values, back to back
	spans    []span // their places in buf
}

func newPHIReader() *phiReader { return &phiReader{codec: newValueCodec()} }

// dataRow decrypts the PHI values of row in place: the row's value slices
// point into the reader's scratch buffer until the next call.
func (r *phiReader) dataRow(t *resultTransform, row *pgproto3.DataRow) error {
	if len(row.Values) != len(t.cols) {
		return fmt.Errorf("data row has %d columns, row description %d", len(row.Values), len(t.cols))
	}
	r.buf, r.spans = r.buf[:0], r.spans[:0]
	for i, v := range row.Values {
		c := &t.cols[i]
		if c.pc == nil || v == nil {
			continue
		}
		env := v
		if c.pc.col.Storage == policy.StorageBytea && c.format == formatText {
			var err error
			if r.envelope, err = decodeByteaText(r.envelope[:0], v); err != nil {
				return &DecryptError{Column: c.pc.col.QualifiedName(), Err: err}
			}
			env = r.envelope
		}
		var err error
		if r.plain, err = c.pc.cipher.Open(r.plain[:0], env); err != nil {
			return &DecryptError{Column: c.pc.col.QualifiedName(), Err: err}
		}
		start := len(r.buf)
		if r.buf, err = r.codec.present(r.buf, c.pc.col.Type, c.format, r.plain); err != nil {
			return &DecryptError{Column: c.pc.col.QualifiedName(), Err: err}
		}
		r.spans = append(r.spans, span{i, start, len(r.buf)})
		c.pc.counters.decrypted.Inc()
	}
	// Point the values at the buffer only now: appends above may move it.
	for _, s := range r.spans {
		row.Values[s.i] = r.buf[s.start:s.end:s.end]
	}
	if t.drops > 0 {
		values := row.Values[:0]
		for i, v := range row.Values {
			if !t.cols[i].drop {
				values = append(values, v)
			}
		}
		row.Values = values
	}
	return nil
}
