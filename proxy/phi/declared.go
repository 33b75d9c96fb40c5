package phi

import (
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// This file is what PostgreSQL does with a PHI value whose type is not the
// column's logical type: a parameter type the client declared in Parse
// (pgjdbc declares varchar for setString, int8 for setLong, float8 for
// setDouble), a cast ($1::timestamp, '2024-01-02'::date), or a literal's
// own type (42 is an integer, 4.5 a numeric). Where PostgreSQL would accept
// the value for the column, in a comparison (col = $1, IN, = ANY) or as a
// stored value (INSERT, UPDATE SET), the proxy converts it exactly as the
// server's operators and assignment casts would; where the server would
// refuse the statement, the proxy answers with its error (42883 for a
// comparison, 42804 for a stored value); where the proxy cannot convert
// exactly, it refuses with 0A000.
//
// A comparison with a value that no stored value can equal (3000000000
// against an integer column, 4.5 against an integer, a timestamp with a
// time of day against a date) matches nothing, as on the server: the
// proxy sends noMatchIndex, which no blind index equals.

// noMatchIndex is the index text sent for a compared value that cannot
// equal any value of the column. Blind indexes are base64 text, which
// never contains '!'.
const noMatchIndex = "!"

// pgTypeNames are PostgreSQL's names (format_type_be) of the types whose
// acceptance for PHI columns is known (checked against PostgreSQL 15).
var pgTypeNames = map[uint32]string{
	pgtype.TextOID: "text", pgtype.VarcharOID: "character varying", pgtype.BPCharOID: "character",
	pgtype.NameOID: "name", pgtype.QCharOID: `"char"`, pgtype.Int2OID: "smallint", pgtype.Int4OID: "integer",
	pgtype.Int8OID: "bigint", pgtype.NumericOID: "numeric", pgtype.Float4OID: "real",
	pgtype.Float8OID: "double precision", pgtype.OIDOID: "oid", 790: "money", pgtype.BoolOID: "boolean",
	pgtype.DateOID: "date", pgtype.TimestampOID: "timestamp without time zone",
	pgtype.TimestamptzOID: "timestamp with time zone", pgtype.TimeOID: "time without time zone",
	1266: "time with time zone", pgtype.IntervalOID: "interval", pgtype.UUIDOID: "uuid",
	pgtype.JSONOID: "json", pgtype.JSONBOID: "jsonb", pgtype.ByteaOID: "bytea", pgtype.XMLOID: "xml",
	pgtype.BitOID: "bit", pgtype.InetOID: "inet",
}

// pgArrayElems maps the array types of pgTypeNames to their elements.
var pgArrayElems = map[uint32]uint32{
	pgtype.TextArrayOID: pgtype.TextOID, pgtype.VarcharArrayOID: pgtype.VarcharOID,
	pgtype.BPCharArrayOID: pgtype.BPCharOID, pgtype.NameArrayOID: pgtype.NameOID, 1002: pgtype.QCharOID,
	pgtype.Int2ArrayOID: pgtype.Int2OID, pgtype.Int4ArrayOID: pgtype.Int4OID, pgtype.Int8ArrayOID: pgtype.Int8OID,
	pgtype.NumericArrayOID: pgtype.NumericOID, pgtype.Float4ArrayOID: pgtype.Float4OID,
	pgtype.Float8ArrayOID: pgtype.Float8OID, 1028: pgtype.OIDOID, 791: 790, pgtype.BoolArrayOID: pgtype.BoolOID,
	pgtype.DateArrayOID: pgtype.DateOID, pgtype.TimestampArrayOID: pgtype.TimestampOID,
	pgtype.TimestamptzArrayOID: pgtype.TimestamptzOID, pgtype.TimeArrayOID: pgtype.TimeOID, 1270: 1266,
	pgtype.IntervalArrayOID: pgtype.IntervalOID, pgtype.UUIDArrayOID: pgtype.UUIDOID,
	pgtype.JSONArrayOID: pgtype.JSONOID, pgtype.JSONBArrayOID: pgtype.JSONBOID,
	pgtype.ByteaArrayOID: pgtype.ByteaOID, pgtype.XMLArrayOID: pgtype.XMLOID, pgtype.BitArrayOID: pgtype.BitOID,
	pgtype.InetArrayOID: pgtype.InetOID,
}

// castTypeOIDs are the OIDs of the type names rewrite reports for casts.
var castTypeOIDs = map[string]uint32{
	"text": pgtype.TextOID, "varchar": pgtype.VarcharOID, "bpchar": pgtype.BPCharOID, "name": pgtype.NameOID,
	"char": pgtype.QCharOID, "int2": pgtype.Int2OID, "int4": pgtype.Int4OID, "int8": pgtype.Int8OID,
	"numeric": pgtype.NumericOID, "float4": pgtype.Float4OID, "float8": pgtype.Float8OID, "oid": pgtype.OIDOID,
	"money": 790, "bool": pgtype.BoolOID, "date": pgtype.DateOID, "timestamp": pgtype.TimestampOID,
	"timestamptz": pgtype.TimestamptzOID, "time": pgtype.TimeOID, "timetz": 1266, "interval": pgtype.IntervalOID,
	"uuid": pgtype.UUIDOID, "json": pgtype.JSONOID, "jsonb": pgtype.JSONBOID, "bytea": pgtype.ByteaOID,
	"xml": pgtype.XMLOID, "bit": pgtype.BitOID, "inet": pgtype.InetOID, "unknown": pgtype.UnknownOID,
}

// castOID is the OID of a cast type name (arrays as "text[]"); 0 when the
// proxy does not know it.
func castOID(name string) uint32 {
	if len(name) > 2 && name[len(name)-2:] == "[]" {
		elem, ok := castTypeOIDs[name[:len(name)-2]]
		if !ok {
			return 0
		}
		for arr, e := range pgArrayElems {
			if e == elem {
				return arr
			}
		}
		return 0
	}
	return castTypeOIDs[name]
}

// conversion is how a value of one type becomes a value of a column's
// logical type in one context.
type conversion uint8

const (
	convRefusedPG    conversion = iota // PostgreSQL refuses the statement
	convRefusedProxy                   // PostgreSQL accepts it, the proxy cannot be exact
	convSame                           // read as the logical type
	convCast                           // read as its own type, then cast
)

func isTextType(oid uint32) bool {
	return oid == pgtype.TextOID || oid == pgtype.VarcharOID
}

// conversionOf says how a value of type src (never 0 or unknown) meets a
// column of type t: in a comparison, or stored (assign). It follows what
// PostgreSQL 15 accepts for `col = $1` and `INSERT ... VALUES ($1)`.
func conversionOf(t policy.LogicalType, src uint32, assign bool) conversion {
	if src == typeOID(t, false) {
		return convSame
	}
	switch t {
	case policy.TypeText, policy.TypeVarchar:
		switch src {
		case pgtype.TextOID, pgtype.VarcharOID:
			return convSame
		case pgtype.NameOID:
			return convCast
		case pgtype.BPCharOID:
			// varchar = bpchar compares as bpchar, blind to trailing
			// spaces: several stored values would match.
			if t == policy.TypeVarchar && !assign {
				return convRefusedProxy
			}
			return convCast
		case pgtype.QCharOID:
			return convRefusedProxy
		}
		if !assign {
			if _, known := pgTypeNames[src]; known {
				return convRefusedPG
			}
			return convRefusedProxy
		}
		// Stored: any type, by its output function (an assignment cast
		// to a string type).
		switch src {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.BoolOID,
			pgtype.UUIDOID, pgtype.JSONOID, pgtype.JSONBOID, pgtype.DateOID, pgtype.TimestampOID,
			pgtype.TimestamptzOID:
			return convCast
		}
		return convRefusedProxy
	case policy.TypeInt4, policy.TypeInt8:
		switch src {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float4OID, pgtype.Float8OID:
			return convCast
		case pgtype.OIDOID:
			return convRefusedProxy
		}
	case policy.TypeNumeric:
		switch src {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
			return convCast
		case pgtype.Float4OID, pgtype.Float8OID:
			// numeric = float8 compares as float8: many numerics would
			// match one float.
			if !assign {
				return convRefusedProxy
			}
			return convCast
		case 790: // money
			if assign {
				return convRefusedProxy
			}
		}
	case policy.TypeDate:
		switch src {
		case pgtype.TimestampOID, pgtype.TimestamptzOID:
			return convCast
		}
	case policy.TypeTimestamptz:
		switch src {
		case pgtype.TimestampOID, pgtype.DateOID:
			return convCast
		}
	case policy.TypeJSONB:
		if src == pgtype.JSONOID && assign {
			return convCast
		}
	}
	if _, known := pgTypeNames[src]; known {
		return convRefusedPG
	}
	return convRefusedProxy
}

// typeMismatch is PostgreSQL's error for a value of type src that it
// does not accept for a column of type t, or the proxy's refusal.
func typeMismatch(conv conversion, col *policy.Column, src uint32, assign bool) error {
	srcName, ok := pgTypeNames[src]
	if !ok {
		srcName = "type " + strconv.FormatUint(uint64(src), 10)
	}
	colName := pgTypeNames[typeOID(col.Type, false)]
	if conv == convRefusedProxy {
		return &TypeError{Code: pgerrcode.FeatureNotSupported,
			Msg: "a value of type " + srcName + " for PHI column " + col.QualifiedName() + " of type " + colName + " is refused: the proxy cannot convert it exactly as PostgreSQL would",
			Hnt: "Send the value as " + colName + " (or undeclared), or cast it in the application."}
	}
	if assign {
		return &TypeError{Code: pgerrcode.DatatypeMismatch,
			Msg: "column \"" + col.Name + "\" is of type " + colName + " but expression is of type " + srcName,
			Hnt: "You will need to rewrite or cast the expression."}
	}
	return &TypeError{Code: pgerrcode.UndefinedFunction,
		Msg: "operator does not exist: " + colName + " = " + srcName,
		Hnt: "No operator matches the given name and argument types. You might need to add explicit type casts."}
}

// valueType is the type of a PHI parameter as PostgreSQL resolves it: the
// type the client declared (0 and unknown: none), else its cast's, else
// the column's (0 here). For `= ANY($n)` it is an array type.
func valueType(declared uint32, cast string) (uint32, error) {
	if declared == pgtype.UnknownOID {
		declared = 0
	}
	if cast == "" {
		return declared, nil
	}
	c := castOID(cast)
	if cast == rewrite.TypeUnknown || c == 0 {
		return 0, &TypeError{Code: pgerrcode.FeatureNotSupported,
			Msg: "a cast on a PHI value to a type with a modifier, an array of several dimensions or a type the proxy does not know is refused",
			Hnt: "Cast to the column's type, or leave the value uncast."}
	}
	switch {
	case declared == 0, declared == c:
		return c, nil
	case (isTextType(declared)) && !isArrayOID(c):
		// pgjdbc's setString with ?::jsonb: the cast reads the text as
		// the cast type's input.
		return c, nil
	}
	return 0, &TypeError{Code: pgerrcode.FeatureNotSupported,
		Msg: "a PHI parameter declared as one type and cast to another is refused",
		Hnt: "Declare the parameter with the type of its cast, or leave it undeclared."}
}

func isArrayOID(oid uint32) bool {
	_, ok := pgArrayElems[oid]
	return ok
}

// checkParam checks, at Parse, that a PHI parameter's type is one
// PostgreSQL accepts for its column and the proxy converts exactly.
func checkParam(p *rewrite.Param, declared uint32) error {
	src, err := valueType(declared, p.Type)
	if err != nil || src == 0 {
		return err
	}
	if p.Array {
		elem, ok := pgArrayElems[src]
		if !ok {
			return &TypeError{Code: pgerrcode.FeatureNotSupported,
				Msg: "= ANY($n) on PHI column " + p.Column.QualifiedName() + " needs an array parameter of a type the proxy knows"}
		}
		src = elem
	}
	if conv := conversionOf(p.Column.Type, src, p.Assign); conv <= convRefusedProxy {
		return typeMismatch(conv, p.Column, src, p.Assign)
	}
	return nil
}

// literalType is the type of a literal (0: unknown, read as the column's
// type) and the OID a number literal has by its text, as PostgreSQL's
// make_const types it.
func literalType(l *rewrite.Literal) (uint32, error) {
	switch l.Type {
	case "":
		return 0, nil
	case rewrite.LiteralBool:
		return pgtype.BoolOID, nil
	case rewrite.LiteralNumber:
		return numberLiteralType(l.Value), nil
	}
	return valueType(0, l.Type)
}

// numberLiteralType: an integer that fits int4 is int4, int8 next, any
// other number numeric.
func numberLiteralType(s string) uint32 {
	integer := len(s) > 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && !(i == 0 && (s[i] == '-' || s[i] == '+')) {
			integer = false
		}
	}
	if integer {
		v, err := strconv.ParseInt(s, 10, 64)
		switch {
		case err != nil:
			return pgtype.NumericOID
		case v == int64(int32(v)):
			return pgtype.Int4OID
		}
		return pgtype.Int8OID
	}
	return pgtype.NumericOID
}

// anyValue is a value read as its own type, before it meets the column.
type anyValue struct {
	oid uint32
	s   []byte // text types, json, jsonb's canonical text
	i   int64  // integers; date (days) and timestamps (µs since 2000)
	f   float64
	n   pgNumeric
	b   bool
	u   [16]byte
}

// read reads src, a value of type oid in the given format, with oid's
// input (or receive) function.
func (c *valueCodec) read(oid uint32, format int16, src []byte, t policy.LogicalType) (anyValue, error) {
	v := anyValue{oid: oid}
	if format == formatText || oid == pgtype.TextOID || oid == pgtype.VarcharOID || oid == pgtype.BPCharOID ||
		oid == pgtype.NameOID || oid == pgtype.JSONOID {
		if err := c.checkText(t, src); err != nil {
			return v, err
		}
	}
	s := string(src)
	var err error
	switch oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID:
		v.s = src
	case pgtype.NameOID:
		v.s = clipName(src)
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		bits := map[uint32]int{pgtype.Int2OID: 16, pgtype.Int4OID: 32, pgtype.Int8OID: 64}[oid]
		if format == formatText {
			v.i, err = parseInt(s, bits, t)
			break
		}
		r := binaryReader{b: src}
		switch bits {
		case 16:
			v.i = int64(int16(r.uint16()))
		case 32:
			v.i = int64(int32(r.uint32()))
		default:
			v.i = int64(r.uint64())
		}
		err = r.done(t)
	case pgtype.NumericOID:
		if format == formatText {
			v.n, err = parseNumeric(s, t)
		} else {
			v.n, err = recvNumeric(src, t)
		}
	case pgtype.Float4OID, pgtype.Float8OID:
		bits := 64
		if oid == pgtype.Float4OID {
			bits = 32
		}
		if format == formatText {
			v.f, err = parseFloat(s, bits, t)
			break
		}
		r := binaryReader{b: src}
		if bits == 32 {
			v.f = float64(math.Float32frombits(r.uint32()))
		} else {
			v.f = math.Float64frombits(r.uint64())
		}
		err = r.done(t)
	case pgtype.BoolOID:
		if format == formatText {
			v.b, err = parseBool(s, t)
		} else {
			var out []byte
			out, err = c.canonicalBinary(nil, policy.TypeBool, src)
			v.b = len(out) == 1 && out[0] == 't'
		}
	case pgtype.UUIDOID:
		if format == formatText {
			v.u, err = parseUUID(s, t)
		} else if len(src) != 16 {
			err = errBinaryFormat(t)
			if len(src) < 16 {
				err = errInsufficientData(t)
			}
		} else {
			v.u = [16]byte(src)
		}
	case pgtype.DateOID:
		var d int32
		if format == formatText {
			d, err = readDate(s, c.dtEnv())
		} else {
			d, err = recvDate(src, t)
		}
		v.i = int64(d)
	case pgtype.TimestampOID, pgtype.TimestamptzOID:
		if format == formatText {
			v.i, err = readTimestamp(s, oid == pgtype.TimestamptzOID, c.dtEnv())
		} else {
			v.i, err = recvTimestamp(src, t)
		}
	case pgtype.JSONOID:
		v.s = src
		err = checkJSON(src, t)
	case pgtype.JSONBOID:
		if format == formatText {
			v.s, err = appendJSONB(nil, src, t)
		} else {
			v.s, err = c.canonicalBinary(nil, policy.TypeJSONB, src)
		}
	default:
		err = &TypeError{Code: pgerrcode.FeatureNotSupported, Msg: "the proxy cannot read a value of type " + strconv.FormatUint(uint64(oid), 10)}
	}
	return v, err
}

// castTo appends the canonical plaintext of v as a value of the column's
// type t, converted as PostgreSQL converts it in the context; match is
// false for a compared value no stored value can equal.
func (c *valueCodec) castTo(dst []byte, t policy.LogicalType, v *anyValue, assign bool) (out []byte, match bool, err error) {
	switch t {
	case policy.TypeText, policy.TypeVarchar:
		return c.castToText(dst, t, v)
	case policy.TypeInt4, policy.TypeInt8:
		bits := 32
		if t == policy.TypeInt8 {
			bits = 64
		}
		n, ok, err := castToInt(v, bits, assign, t)
		if err != nil || !ok {
			return dst, false, err
		}
		return strconv.AppendInt(dst, n, 10), true, nil
	case policy.TypeNumeric:
		switch v.oid {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
			n := numericFromInt(v.i)
			return n.appendText(dst), true, nil
		case pgtype.Float8OID:
			n := numericFromFloat(v.f, 15)
			return n.appendText(dst), true, n.checkRange(t)
		case pgtype.Float4OID:
			n := numericFromFloat(v.f, 6)
			return n.appendText(dst), true, n.checkRange(t)
		}
	case policy.TypeDate:
		return c.castToDate(dst, v, assign)
	case policy.TypeTimestamptz:
		return c.castToTimestamptz(dst, v, assign)
	case policy.TypeJSONB:
		if v.oid == pgtype.JSONOID {
			out, err := appendJSONB(dst, v.s, t)
			return out, true, err
		}
	}
	return dst, false, &TypeError{Code: pgerrcode.FeatureNotSupported, Msg: "unsupported conversion for a PHI value"}
}

// castToText is the conversion of a value to text or varchar: bpchar
// loses its trailing spaces, name was clipped on input, and other types
// are stored as their output functions (or casts to text) print them.
func (c *valueCodec) castToText(dst []byte, t policy.LogicalType, v *anyValue) ([]byte, bool, error) {
	switch v.oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.NameOID, pgtype.JSONOID:
		return append(dst, v.s...), true, nil
	case pgtype.BPCharOID:
		return append(dst, rtrimSpaces(v.s)...), true, nil
	case pgtype.JSONBOID:
		return append(dst, v.s...), true, nil
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		return strconv.AppendInt(dst, v.i, 10), true, nil
	case pgtype.NumericOID:
		return v.n.appendText(dst), true, nil
	case pgtype.BoolOID:
		// The cast from boolean to text says true/false, not t/f.
		if v.b {
			return append(dst, "true"...), true, nil
		}
		return append(dst, "false"...), true, nil
	case pgtype.UUIDOID:
		return appendUUID(dst, v.u), true, nil
	case pgtype.DateOID, pgtype.TimestampOID, pgtype.TimestamptzOID:
		st, err := c.currentSettings()
		if err == nil && !st.dateStyleOK {
			err = errDateStyleUnknown
		}
		if err == nil && v.oid == pgtype.TimestamptzOID && st.zone == nil {
			err = errTimeZoneUnknown
		}
		if err != nil {
			return dst, false, dtReport(err, t)
		}
		if v.oid == pgtype.DateOID {
			return appendDate(dst, int32(v.i), st.dateStyle), true, nil
		}
		var zone *time.Location
		if v.oid == pgtype.TimestamptzOID {
			zone = st.zone
		}
		out, ok := appendTimestamp(dst, v.i, zone, st.dateStyle)
		if !ok {
			return dst, false, &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "timestamp out of range"}
		}
		return out, true, nil
	}
	return dst, false, &TypeError{Code: pgerrcode.FeatureNotSupported, Msg: "unsupported conversion to text for a PHI value"}
}

// castToInt converts v to an integer column's type: on assignment as the
// casts int84, numeric_int4 and dtoi4 do (rounding, or failing out of
// range); in a comparison as the cross-type operators compare (no match
// unless the value equals an integer of the column's range).
func castToInt(v *anyValue, bits int, assign bool, t policy.LogicalType) (int64, bool, error) {
	min, max := int64(math.MinInt32), int64(math.MaxInt32)
	if bits == 64 {
		min, max = math.MinInt64, math.MaxInt64
	}
	switch v.oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID:
		if v.i < min || v.i > max {
			if assign {
				return 0, false, errIntCast(t, bits)
			}
			return 0, false, nil
		}
		return v.i, true, nil
	case pgtype.NumericOID:
		if assign {
			switch v.n.kind {
			case numNaN:
				return 0, false, &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported, Msg: "cannot convert NaN to " + intTypeName(bits)}
			case numPInf, numNInf:
				return 0, false, &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported, Msg: "cannot convert infinity to " + intTypeName(bits)}
			}
			r, fits := v.n.roundToInt()
			if !fits || r < min || r > max {
				return 0, false, errIntCast(t, bits)
			}
			return r, true, nil
		}
		r, isInt, fits := v.n.integral()
		if !isInt || !fits || r < min || r > max {
			return 0, false, nil
		}
		return r, true, nil
	case pgtype.Float4OID, pgtype.Float8OID:
		f := v.f
		if assign {
			f = math.RoundToEven(f)
			if math.IsNaN(f) || f < -math.Pow(2, float64(bits-1)) || f >= math.Pow(2, float64(bits-1)) {
				return 0, false, errIntCast(t, bits)
			}
			return int64(f), true, nil
		}
		// The integer is converted to double precision and compared: exact
		// below 2^53, where one double stands for one integer.
		if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) {
			return 0, false, nil
		}
		if math.Abs(f) >= 1<<53 {
			if bits == 32 || math.Abs(f) > 1<<63 {
				return 0, false, nil
			}
			return 0, false, &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported,
				Msg: "comparing a bigint PHI column with a floating-point value beyond 2^53 is refused: several integers equal it as double precision"}
		}
		i := int64(f)
		if i < min || i > max {
			return 0, false, nil
		}
		return i, true, nil
	}
	return 0, false, &TypeError{Code: pgerrcode.FeatureNotSupported, Msg: "unsupported conversion to an integer for a PHI value"}
}

// castToDate converts a timestamp or timestamptz to a date column: on
// assignment the date part (in the session's time zone for timestamptz),
// in a comparison only a midnight matches.
func (c *valueCodec) castToDate(dst []byte, v *anyValue, assign bool) ([]byte, bool, error) {
	t := policy.TypeDate
	switch v.i {
	case tsNoBegin:
		return appendDate(dst, dateNoBegin, isoDateStyle), true, nil
	case tsNoEnd:
		return appendDate(dst, dateNoEnd, isoDateStyle), true, nil
	}
	var zone *time.Location
	if v.oid == pgtype.TimestamptzOID {
		z, err := c.dtEnv().zone()
		if err != nil {
			return dst, false, dtReport(err, t)
		}
		zone = z
	}
	tm, _, _, _, ok := timestamp2tm(v.i, zone)
	if !ok {
		return dst, false, &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "timestamp out of range"}
	}
	d := int32(date2j(tm.year, tm.mon, tm.mday) - postgresEpochJDate)
	if !assign {
		// Equal only if the date, as a timestamp(tz) at midnight, is v.
		back, ok := dateToTimestamp(d, zone)
		if !ok || back != v.i {
			return dst, false, nil
		}
	}
	return appendDate(dst, d, isoDateStyle), true, nil
}

// dateToTimestamp is date2timestamp (zone nil) or date2timestamptz.
func dateToTimestamp(d int32, zone *time.Location) (int64, bool) {
	switch d {
	case dateNoBegin:
		return tsNoBegin, true
	case dateNoEnd:
		return tsNoEnd, true
	}
	if int64(d) >= timestampEndJulian-postgresEpochJDate {
		return 0, false
	}
	ts := int64(d) * usecsPerDay
	if zone != nil {
		var tm pgTm
		tm.year, tm.mon, tm.mday = j2date(int(d) + postgresEpochJDate)
		ts += int64(determineTimeZoneOffset(&tm, zone)) * usecsPerSec
		if !isValidTimestamp(ts) {
			return 0, false
		}
	}
	return ts, true
}

// castToTimestamptz converts a timestamp or a date to a timestamptz
// column, in the session's time zone (timestamp2timestamptz,
// date2timestamptz).
func (c *valueCodec) castToTimestamptz(dst []byte, v *anyValue, assign bool) ([]byte, bool, error) {
	t := policy.TypeTimestamptz
	zone, err := c.dtEnv().zone()
	if err != nil {
		return dst, false, dtReport(err, t)
	}
	var ts int64
	var ok bool
	msg := "timestamp out of range"
	switch v.oid {
	case pgtype.DateOID:
		ts, ok = dateToTimestamp(int32(v.i), zone)
		msg = "date out of range for timestamp"
	case pgtype.TimestampOID:
		switch v.i {
		case tsNoBegin, tsNoEnd:
			ts, ok = v.i, true
		default:
			tm, fsec, _, _, ok2 := timestamp2tm(v.i, nil)
			if ok2 {
				ts = v.i + int64(determineTimeZoneOffset(&tm, zone))*usecsPerSec
				ok = isValidTimestamp(ts)
				_ = fsec
			}
		}
	}
	if !ok {
		if assign {
			return dst, false, &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: msg}
		}
		return dst, false, nil
	}
	return appendCanonicalTimestamptz(dst, ts), true, nil
}

// convert appends the canonical plaintext, for a column of type t, of src
// (a value of type oid in the given format; 0: the column's own type),
// met in a comparison or stored. match is false for a compared value that
// no stored value can equal.
func (c *valueCodec) convert(dst []byte, col *policy.Column, oid uint32, assign bool, format int16, src []byte) ([]byte, bool, error) {
	t := col.Type
	if oid == pgtype.UnknownOID {
		oid = 0
	}
	conv := convSame
	if oid != 0 {
		conv = conversionOf(t, oid, assign)
	}
	switch conv {
	case convSame:
		out, err := c.canonical(dst, t, format, src)
		return out, err == nil, err
	case convCast:
		v, err := c.read(oid, format, src, t)
		if err != nil {
			return dst, false, err
		}
		return c.castTo(dst, t, &v, assign)
	}
	return dst, false, typeMismatch(conv, col, oid, assign)
}

// checkParams checks, at Parse, every PHI parameter of plan against the
// types the client declared: PostgreSQL's error for a type it would not
// accept, a refusal for one the proxy cannot convert exactly, and a
// refusal when the uses of one parameter disagree on its type.
func checkParams(plan *rewrite.Plan, declared []uint32) error {
	types := map[int]string{}
	for i := range plan.Params {
		p := &plan.Params[i]
		if p.Action == rewrite.ActionNone {
			continue
		}
		if t, ok := types[p.Source]; ok && t != p.Type {
			return locate(&TypeError{Code: pgerrcode.FeatureNotSupported,
				Msg: "a PHI parameter cast to different types in different places is refused",
				Hnt: "Bind the value once per type."}, "parameter $%d for %s", p.Source+1, p.Column.QualifiedName())
		}
		types[p.Source] = p.Type
		var d uint32
		if p.Source < len(declared) {
			d = declared[p.Source]
		}
		if err := checkParam(p, d); err != nil {
			return locate(err, "parameter $%d for %s", p.Source+1, p.Column.QualifiedName())
		}
	}
	return nil
}
