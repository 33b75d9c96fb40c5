package phi

import (
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
)

// Reading a PHI value as the type it was given (its declared, cast or
// literal type) and casting it to the column's logical type exactly as the
// server's input functions and casts would (declared.go says when each
// applies).

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
		if format != formatText && len(src) >= 64 {
			// namerecv clips nothing: it refuses NAMEDATALEN bytes or more.
			return v, &ValueError{Type: t, Code: pgerrcode.NameTooLong, Msg: "identifier too long"}
		}
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
