package differential

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// How values get into statements: as literals or parameters (text or
// binary, declared or not), alone or in arrays, drawn from the pools of
// values_test.go.

// note records what using v for column c means: its tag, and its text
// for the leak check when c is PHI.
func (b *builder) note(c *column, v value) {
	if v.tag != "" {
		b.tag(v.tag)
	}
	if c.phi() && !v.null && distinctive(v.text) {
		b.st.phi = append(b.st.phi, v.text)
	}
}

// val returns the SQL for value v of column c: a literal in the simple
// protocol, a parameter in the extended protocol.
func (b *builder) val(c *column, v value) string {
	b.note(c, v)
	if !b.st.extended || !c.phi() {
		if v.null {
			return "NULL"
		}
		if c.phi() || !isNumeric(c.typ) {
			return quote(v.text)
		}
		return v.text
	}
	p := param{oid: 0}
	if !v.null {
		p.val = []byte(v.text)
	}
	switch {
	case b.binaryParams && !v.null:
		if bin, ok := encodeBinary(b.g.m, c.oid, v.text); ok {
			p = param{val: bin, oid: c.oid, binary: true}
			b.tag("param.binary." + c.typ)
		} else {
			p.oid = c.oid
		}
	case b.r.IntN(2) == 0:
		p.oid = c.oid
		b.tag("param.declared")
		if c.typ == "text" && b.r.IntN(3) == 0 {
			// pgjdbc's setString declares varchar (issue 10 item 1).
			p.oid = pgtype.VarcharOID
			b.tag("param.declared_varchar")
		}
	default:
		b.tag("param.untyped")
	}
	b.st.params = append(b.st.params, p)
	return "$" + strconv.Itoa(len(b.st.params))
}

// array returns an array of values of column c, for = ANY and <> ALL: an
// ARRAY[...] constructor or a '{...}' literal in the simple protocol (the
// constructor only for text columns: its untyped elements resolve to
// text), one array parameter in text format in the extended protocol.
func (b *builder) array(c *column, vs []value) string {
	for _, v := range vs {
		b.note(c, v)
		if v.tag != "" && !v.bad {
			// An odd value may be read by another parser inside an array.
			b.tag("array.val." + c.pool)
		}
	}
	elems := make([]string, len(vs))
	if !b.st.extended && (c.typ == "text" || c.typ == "varchar") && b.r.IntN(2) == 0 {
		for i, v := range vs {
			elems[i] = "NULL"
			if !v.null {
				elems[i] = quote(v.text)
			}
		}
		b.tag("lit.array_constructor")
		return "ARRAY[" + strings.Join(elems, ", ") + "]"
	}
	for i, v := range vs {
		elems[i] = "NULL"
		if !v.null {
			elems[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v.text) + `"`
		}
	}
	lit := "{" + strings.Join(elems, ",") + "}"
	if !b.st.extended {
		b.tag("lit.array_text")
		return quote(lit)
	}
	p := param{val: []byte(lit)}
	if b.r.IntN(2) == 0 {
		p.oid = arrayOIDs[c.oid]
		b.tag("param.declared")
	} else {
		b.tag("param.untyped")
	}
	b.st.params = append(b.st.params, p)
	return "$" + strconv.Itoa(len(b.st.params))
}

// arrayOIDs maps a type OID to its array type's OID.
var arrayOIDs = map[uint32]uint32{
	pgtype.TextOID: pgtype.TextArrayOID, pgtype.VarcharOID: pgtype.VarcharArrayOID,
	pgtype.Int4OID: pgtype.Int4ArrayOID, pgtype.Int8OID: pgtype.Int8ArrayOID,
	pgtype.NumericOID: pgtype.NumericArrayOID, pgtype.BoolOID: pgtype.BoolArrayOID,
	pgtype.DateOID: pgtype.DateArrayOID, pgtype.TimestamptzOID: pgtype.TimestamptzArrayOID,
	pgtype.UUIDOID: pgtype.UUIDArrayOID, pgtype.JSONBOID: pgtype.JSONBArrayOID,
	pgtype.ByteaOID: pgtype.ByteaArrayOID,
}

// encodeBinary returns the binary form of text for type oid, as a client
// library would send it, or false when the text does not parse (the
// parameter then goes in text format).
func encodeBinary(m *pgtype.Map, oid uint32, text string) ([]byte, bool) {
	switch oid {
	case pgtype.TextOID, pgtype.VarcharOID:
		return []byte(text), true
	case pgtype.JSONBOID:
		return append([]byte{1}, text...), true
	}
	t, ok := m.TypeForOID(oid)
	if !ok {
		return nil, false
	}
	v, err := t.Codec.DecodeValue(m, oid, pgtype.TextFormatCode, []byte(text))
	if err != nil || v == nil {
		return nil, false
	}
	out, err := m.Encode(oid, pgtype.BinaryFormatCode, v, nil)
	if err != nil || out == nil {
		return nil, false
	}
	return out, true
}

// quote is a standard-conforming SQL string literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func isNumeric(typ string) bool {
	switch typ {
	case "bigint", "integer", "int4", "int8", "numeric":
		return true
	}
	return false
}

// pick returns a value of c's pool: now and then NULL, rarely (when
// allowBad) a value PostgreSQL rejects, sometimes an odd one, mostly an
// ordinary one. Odd and bad values are kept rare so that a difference can
// be told apart from the others of its statement.
func (b *builder) pick(c *column, allowBad bool) value {
	if !c.phi() {
		return ok(strconv.FormatInt(b.someID(c), 10))
	}
	p := splitPool(c.pool)
	switch n := b.r.IntN(100); {
	case n < 10:
		return null
	case allowBad && n < 15 && len(p.bad) > 0:
		return p.bad[b.r.IntN(len(p.bad))]
	case n < 35 && len(p.odd) > 0:
		return p.odd[b.r.IntN(len(p.odd))]
	}
	return p.ordinary[b.r.IntN(len(p.ordinary))]
}

// pool is one pool split by kind of value.
type pool struct{ ordinary, odd, bad []value }

// splitPool splits the named pool.
func splitPool(name string) pool {
	var p pool
	for _, v := range pools[name] {
		switch {
		case v.bad:
			p.bad = append(p.bad, v)
		case v.tag != "":
			p.odd = append(p.odd, v)
		default:
			p.ordinary = append(p.ordinary, v)
		}
	}
	return p
}

// write returns the SQL of value v written into column c (INSERT, UPDATE
// SET, ON CONFLICT), tagged "write.<type>" when v is ordinary (an odd or
// bad value has its own tag).
func (b *builder) write(c *column, v value) string {
	if c.phi() && !v.null && v.tag == "" {
		b.tag("write." + c.typ)
	}
	return b.val(c, v)
}

// uniqueValue returns a value of c's type that no other statement sends,
// so that the leak check can name the production that leaked it.
func (b *builder) uniqueValue(c *column) value {
	b.tag("val.unique")
	r := b.r
	day := time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, r.IntN(100000))
	var s string
	switch c.typ {
	case "date":
		s = day.Format(time.DateOnly)
	case "timestamptz":
		s = day.Add(time.Duration(r.IntN(86400)) * time.Second).Format("2006-01-02 15:04:05+00")
	case "int4":
		s = strconv.Itoa(10_000_000 + r.IntN(2_000_000_000))
	case "int8":
		s = strconv.FormatInt(1_000_000_000_000+r.Int64N(1<<50), 10)
	case "numeric":
		s = fmt.Sprintf("%d.%06d", 10_000_000+r.IntN(90_000_000), r.IntN(1_000_000))
	case "bool":
		s = "true"
	case "uuid":
		s = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", r.Uint32(), r.IntN(1<<16), r.IntN(1<<12), r.IntN(1<<12), r.Int64N(1<<48))
	case "jsonb":
		s = fmt.Sprintf(`{"unique": %d, "r": "%08x"}`, b.st.seq, r.Uint32())
	case "bytea":
		s = fmt.Sprintf(`\x%016x`, r.Uint64())
	default:
		s = fmt.Sprintf("unique-%d-%08x", b.st.seq, r.Uint32())
	}
	return ok(s)
}
