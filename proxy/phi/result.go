package phi

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

// result is the proxy.Responder of one result: a simple Query's (one
// RowDescription per statement), a portal's (its Describe and Execute), or
// a statement's Describe. Its methods run on serverToClient only.
type result struct {
	proxy.PassResponder
	s    *session
	db   *dbState
	stmt *statement // nil for a simple Query
	// statement: this describes stmt (Describe of a statement): its
	// RowDescription is kept for the portals bound to it, and a rewritten
	// statement's ParameterDescription shows the client's parameters.
	statement bool
	// formats are the server-side result format codes of the portal.
	formats []int16
	// bound: the server confirmed the portal's Bind (BindComplete), so a
	// description of the portal is one of stmt. serverToClient.
	bound bool
	// cursor, when not nil, is the SQL cursor this describes (a FETCH
	// from it, a Describe of its portal): it keeps the description.
	cursor *cursor
	// unsure: when the statement ran, DateStyle or TimeZone may have
	// been changed by an earlier message of its pipeline (or by itself),
	// so dates and timestamps cannot be presented in text format for
	// certain. Set by clientToServer before the Execute (or Query) goes.
	unsure atomic.Bool

	// serverToClient.
	t     *resultTransform
	ready bool

	// own are the statements of a simple Query's text that are the
	// proxy's catalog checks (inline.go), in order. Set by clientToServer
	// before the Query goes.
	own []int

	// pos maps the positions of errors in a rewritten simple Query back
	// to the client's text (position.go); zero when it was not
	// rewritten. Set by clientToServer before the Query goes.
	pos sentPosition
}

var _ proxy.Responder = (*result)(nil)

// newResult is the responder of a simple Query's results.
func (s *session) newResult(db *dbState, stmt *statement) *result {
	r := &result{s: s, db: db, stmt: stmt}
	r.unsure.Store(s.settingsMoved)
	return r
}

// RowDescription implements proxy.Responder.
func (r *result) RowDescription(dst, msg []byte) ([]byte, proxy.RowTransformer, error) {
	if r.stmt == nil && !r.db.cat.describesPHI(msg) {
		// A simple Query's result without PHI or blind-index columns (the
		// common case): nothing to decode, the rows go through raw.
		r.t, r.ready = nil, true
		return append(dst, msg...), nil, nil
	}
	var rd pgproto3.RowDescription
	if err := rd.Decode(msg[5:]); err != nil {
		return nil, nil, errors.New("invalid RowDescription from the server")
	}
	keepStmt := r.statement || (r.bound && r.stmt != nil && r.stmt.rd.Load() == nil)
	if keepStmt || r.cursor != nil {
		// Kept for later portals of the statement (their result formats
		// and rows), from its own description or from a portal the
		// server confirmed bound to it: a Bind that failed leaves the
		// portal the server had, which may be another statement's. And
		// for later FETCHes of the cursor (their result formats).
		keep := rd
		keep.Fields = append([]pgproto3.FieldDescription(nil), rd.Fields...)
		for i := range keep.Fields {
			keep.Fields[i].Name = append([]byte(nil), keep.Fields[i].Name...)
			keep.Fields[i].Format = formatText
		}
		if keepStmt {
			r.stmt.rd.Store(&keep)
		}
		if r.cursor != nil {
			r.cursor.rd.Store(&keep)
		}
	}
	var err error
	if r.t, err = r.s.resultTransform(r.db.cat, &rd, nil, !r.statement); err != nil {
		return nil, nil, err
	}
	r.ready = true
	if r.t == nil {
		return append(dst, msg...), nil, nil
	}
	r.t.rowDescription(&rd)
	out, err := rd.Encode(dst)
	return out, r, err
}

// bindAnswer records in a portal's result whether the server bound it.
type bindAnswer struct {
	proxy.PassResponder
	r *result
	// marks are the markers of invalid parameters (marker.go), nil for
	// none: their errors are the client's own.
	marks *markSet
}

// ErrorResponse implements proxy.Responder: the error of a marked
// parameter is the proxy's.
func (a bindAnswer) ErrorResponse(dst, msg []byte) []byte {
	if out, ok := a.marks.errorResponse(dst, msg); ok {
		return out
	}
	if a.r.stmt != nil {
		if out, ok := a.r.stmt.marks.errorResponse(dst, msg); ok {
			return out // planned at Bind
		}
	}
	return append(dst, msg...)
}

// Answered implements proxy.Responder.
func (a bindAnswer) Answered(typ byte) { a.r.bound = typ == '2' }

// Rows implements proxy.Responder: the rows of a portal whose statement
// the client described, which with the Bind's formats says it all.
func (r *result) Rows() (proxy.RowTransformer, error) {
	if !r.ready {
		var rd *pgproto3.RowDescription
		if r.stmt != nil {
			rd = r.stmt.rd.Load()
		}
		if rd == nil {
			return nil, errors.New("rows of a rewritten statement arrived undescribed")
		}
		t, err := r.s.resultTransform(r.db.cat, rd, r.formats, true)
		if err != nil {
			return nil, err
		}
		r.t, r.ready = t, true
	}
	if r.t == nil {
		return nil, nil
	}
	return r, nil
}

// DataRow implements proxy.RowTransformer.
func (r *result) DataRow(dst, msg []byte) ([]byte, error) {
	var row pgproto3.DataRow
	if err := row.Decode(msg[5:]); err != nil {
		return nil, errors.New("invalid DataRow from the server")
	}
	r.s.r.unsure = r.unsure.Load()
	if err := r.s.r.dataRow(r.t, &row); err != nil {
		var de *unreadableError
		if errors.As(err, &de) {
			r.s.eng.metrics.decryptFailure.WithLabelValues(de.Class()).Inc()
			r.s.c.Logger().Warn("decryption failed", "column", de.Column, "key_id", de.KeyID, "reason", de.Class())
		}
		return nil, err
	}
	return row.Encode(dst)
}

// ParameterDescription implements proxy.Responder: a rewritten statement's
// parameters as the client sees them, one type per client parameter: for
// PHI ones the type the client declared (pgjdbc checks that a statement's
// types stay those it declared: issue 10), else the type of its cast, else
// the column's logical type (an array of it for = ANY).
func (r *result) ParameterDescription(dst, msg []byte) ([]byte, error) {
	if r.stmt == nil || r.stmt.plan.Passthrough {
		return append(dst, msg...), nil
	}
	var pd pgproto3.ParameterDescription
	if err := pd.Decode(msg[5:]); err != nil {
		return nil, errors.New("invalid ParameterDescription from the server")
	}
	plan := r.stmt.plan
	if len(plan.Params) == 0 || len(pd.ParameterOIDs) < len(plan.Params) {
		return append(dst, msg...), nil
	}
	// The parameters declared beyond the highest $n come last on both sides.
	extra := pd.ParameterOIDs[len(plan.Params):]
	oids := make([]uint32, plan.ClientParams, plan.ClientParams+len(extra))
	seen := make([]bool, plan.ClientParams)
	for i, prm := range plan.Params {
		if prm.Source >= plan.ClientParams || seen[prm.Source] {
			continue
		}
		seen[prm.Source] = true
		if prm.Action == rewrite.ActionNone {
			oids[prm.Source] = pd.ParameterOIDs[i]
			continue
		}
		// As PostgreSQL resolves it: the type the client declared, else
		// the type of the parameter's cast, else the column's.
		var declared uint32
		if prm.Source < len(r.stmt.paramOIDs) {
			declared = r.stmt.paramOIDs[prm.Source]
		}
		switch oid, err := valueType(declared, prm.Type); {
		case declared != 0 && declared != pgtype.UnknownOID:
			oids[prm.Source] = declared
		case err == nil && oid != 0:
			oids[prm.Source] = oid
		default:
			oids[prm.Source] = typeOID(prm.Column.Type, prm.Array)
		}
	}
	pd.ParameterOIDs = append(oids, extra...)
	return pd.Encode(dst)
}

// resultCol is one column of a result the proxy transforms.
type resultCol struct {
	pc     *keyedColumn // nil: forwarded as is
	drop   bool         // a blind-index column: hidden from the client
	format int16        // the format the server sends and the client reads
	mask   *columnMask  // the session sees the masked value (access.go)
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
func newResultTransform(cat *catalog, cols keyedColumns, rd *pgproto3.RowDescription, formats []int16) *resultTransform {
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

// reader decrypts result values. It belongs to the session's
// serverToClient goroutine.
type reader struct {
	codec    *valueCodec
	settings *atomic.Pointer[sessionSettings] // the session's
	// unsure: the result at hand may run under settings other than those
	// reported (result.unsure); set per row.
	unsure   bool
	envelope []byte // scratch: the envelope of a bytea value sent as text
	plain    []byte // scratch: decrypted canonical plaintext
	// stored reads the plaintext values of tables in migration (open);
	// made on first use.
	stored *Canonicalizer
	buf    []byte // scratch: the transformed values, back to back
	spans  []span // their places in buf
}

func newReader(nonUTF8 *atomic.Bool, settings *atomic.Pointer[sessionSettings]) *reader {
	r := &reader{codec: newValueCodec(nonUTF8), settings: settings}
	r.codec.settings = r.currentSettings
	r.codec.unsure = func() bool { return r.unsure }
	return r
}

// currentSettings gives presented values the settings the server used for
// the result at hand, as far as the proxy can know them.
func (r *reader) currentSettings() (*sessionSettings, error) {
	if r.unsure {
		return nil, errSettingsMoved
	}
	if r.settings == nil {
		return nil, errDateStyleUnknown
	}
	return r.settings.Load(), nil
}

// open returns the canonical plaintext of the stored value v of result
// column c (in r.plain): its envelope decrypted, or, in a table in
// migration (policy migrating: true), a value that is no envelope read
// as the plaintext `phiproxy migrate encrypt` will encrypt
// (Canonicalizer.Stored) and counted. Anything else that does not
// decrypt is an *unreadableError: tampered, an unknown key, or plaintext
// outside a migration or not valid for the logical type.
func (r *reader) open(c *resultCol, v []byte) ([]byte, error) {
	env := v
	if c.pc.col.Storage == policy.StorageBytea && c.format == formatText {
		var err error
		if r.envelope, err = decodeByteaText(r.envelope[:0], v); err != nil {
			return nil, &unreadableError{Column: c.pc.col.QualifiedName(), Err: err}
		}
		env = r.envelope
	}
	plain, err := c.pc.cipher.Open(r.plain[:0], env)
	if err == nil {
		r.plain = plain
		c.pc.counters.decrypted.Inc()
		return plain, nil
	}
	if c.pc.col.Table.Migrating && !crypto.IsCiphertext(env) {
		if r.stored == nil {
			r.stored = NewCanonicalizer()
		}
		if plain, perr := r.stored.Stored(r.plain[:0], c.pc.col, env); perr == nil {
			r.plain = plain
			c.pc.counters.plaintext.Inc()
			return plain, nil
		}
	}
	de := &unreadableError{Column: c.pc.col.QualifiedName(), Err: err}
	de.KeyID, _ = crypto.EnvelopeKeyID(env)
	return nil, de
}

// dataRow decrypts the PHI values of row in place: the row's value slices
// point into the reader's scratch buffer until the next call.
func (r *reader) dataRow(t *resultTransform, row *pgproto3.DataRow) error {
	if len(row.Values) != len(t.cols) {
		return fmt.Errorf("data row has %d columns, row description %d", len(row.Values), len(t.cols))
	}
	r.buf, r.spans = r.buf[:0], r.spans[:0]
	for i, v := range row.Values {
		c := &t.cols[i]
		if c.pc == nil || v == nil {
			continue
		}
		if c.mask != nil {
			if err := r.masked(c, i, v, row); err != nil {
				return err
			}
			continue
		}
		plain, err := r.open(c, v)
		if err != nil {
			return err
		}
		start := len(r.buf)
		if r.buf, err = r.codec.present(r.buf, c.pc.col.Type, c.format, plain); err != nil {
			var ve *ValueError
			if errors.Is(err, errNonUTF8) || errors.Is(err, errEncodingMoved) || (errors.As(err, &ve) && ve != errCanonical) {
				return locate(err, "column %s", c.pc.col.QualifiedName())
			}
			return &unreadableError{Column: c.pc.col.QualifiedName(), Err: err}
		}
		r.spans = append(r.spans, span{i, start, len(r.buf)})
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
