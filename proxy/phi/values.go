package phi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"
	"sync/atomic"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
)

// This file converts PHI values between what the client sends or expects
// (its logical type, in text or binary format) and the canonical plaintext
// the proxy encrypts and indexes. Canonical plaintext is PostgreSQL's text
// output of the logical type in ISO style (so '2024-1-2'::date and a binary
// date of the same day index alike), with two exceptions: a timestamptz is
// written in UTC whatever the session's TimeZone ("2020-01-01 08:00:00Z"),
// and bytea's plaintext is the raw bytes.
//
// Input is read exactly as PostgreSQL 15 reads it (datetime.go,
// numeric.go, jsonb.go, scalars.go): what the server accepts is
// canonicalized to what it would store, what it rejects fails with its
// SQLSTATE before anything is sent, and what the proxy cannot read exactly
// is refused with 0A000. Output is what the server would send: dates and
// timestamptz in text format follow the session's DateStyle and TimeZone.

// Wire format codes (PostgreSQL protocol, "Formats and Format Codes").
const (
	formatText   int16 = 0
	formatBinary int16 = 1
)

// logicalType is the OIDs of one logical type. The table is immutable.
type logicalType struct {
	oid, arrayOID uint32
}

var logicalTypes = map[policy.LogicalType]logicalType{
	policy.TypeText:        {pgtype.TextOID, pgtype.TextArrayOID},
	policy.TypeVarchar:     {pgtype.VarcharOID, pgtype.VarcharArrayOID},
	policy.TypeBytea:       {pgtype.ByteaOID, pgtype.ByteaArrayOID},
	policy.TypeJSONB:       {pgtype.JSONBOID, pgtype.JSONBArrayOID},
	policy.TypeInt4:        {pgtype.Int4OID, pgtype.Int4ArrayOID},
	policy.TypeInt8:        {pgtype.Int8OID, pgtype.Int8ArrayOID},
	policy.TypeNumeric:     {pgtype.NumericOID, pgtype.NumericArrayOID},
	policy.TypeBool:        {pgtype.BoolOID, pgtype.BoolArrayOID},
	policy.TypeDate:        {pgtype.DateOID, pgtype.DateArrayOID},
	policy.TypeTimestamptz: {pgtype.TimestamptzOID, pgtype.TimestamptzArrayOID},
	policy.TypeUUID:        {pgtype.UUIDOID, pgtype.UUIDArrayOID},
}

// typeOID returns the OID the client sees for a logical type, and for an
// array of it.
func typeOID(t policy.LogicalType, array bool) uint32 {
	lt := logicalTypes[t]
	if array {
		return lt.arrayOID
	}
	return lt.oid
}

// storageOID returns the OID of a storage type.
func storageOID(s policy.Storage) uint32 {
	if s == policy.StorageBytea {
		return pgtype.ByteaOID
	}
	return pgtype.TextOID
}

// valueCodec converts values of logical types. Not safe for concurrent
// use: one codec per session goroutine.
type valueCodec struct {
	// nonUTF8 is the session's: its client_encoding is not UTF8.
	nonUTF8 *atomic.Bool
	// settings returns the session settings values may depend on, or why
	// they cannot be known for the value at hand; nil refuses every value
	// that depends on them. Set by the owner (writer, reader).
	settings func() (*sessionSettings, error)
	// unsure reports whether the value at hand goes to the client under
	// a client_encoding that a statement of the same text or pipeline may
	// have changed (SET client_encoding, set_config), not yet reported;
	// nil: never. Set by the reader.
	unsure func() bool
	env    dtEnv
}

func newValueCodec(nonUTF8 *atomic.Bool) *valueCodec {
	return &valueCodec{nonUTF8: nonUTF8}
}

// dtEnv is the environment of one date/time input.
func (c *valueCodec) dtEnv() *dtEnv {
	c.env = dtEnv{settings: c.settings}
	return &c.env
}

// currentSettings returns the settings for an output that depends on them.
func (c *valueCodec) currentSettings() (*sessionSettings, error) {
	return c.dtEnv().current()
}

// textLike reports whether the server reads and writes values of t as
// characters in the client's encoding, in both formats.
func textLike(t policy.LogicalType) bool {
	return t == policy.TypeText || t == policy.TypeVarchar || t == policy.TypeJSONB
}

// checkText checks the characters of a value in text format as
// PostgreSQL (with a UTF8 database) does before any input function: valid
// UTF-8 without NUL. Under another client encoding the server would
// convert the value, which the proxy does not: only ASCII, the same in
// every encoding, is accepted then.
func (c *valueCodec) checkText(t policy.LogicalType, b []byte) error {
	ascii := true
	for _, ch := range b {
		if ch == 0 {
			return &ValueError{Type: t, Code: pgerrcode.CharacterNotInRepertoire, Msg: `invalid byte sequence for encoding "UTF8": 0x00`}
		}
		if ch >= utf8.RuneSelf {
			ascii = false
		}
	}
	switch {
	case ascii:
		return nil
	case c.nonUTF8 != nil && c.nonUTF8.Load():
		return errNonUTF8
	case !utf8.Valid(b):
		return &ValueError{Type: t, Code: pgerrcode.CharacterNotInRepertoire, Msg: `invalid byte sequence for encoding "UTF8"`}
	}
	return nil
}

// canonical appends to dst the canonical plaintext of src, a value of type t
// in the given wire format.
func (c *valueCodec) canonical(dst []byte, t policy.LogicalType, format int16, src []byte) ([]byte, error) {
	if format == formatBinary {
		return c.canonicalBinary(dst, t, src)
	}
	if err := c.checkText(t, src); err != nil {
		return dst, err
	}
	switch t {
	case policy.TypeText, policy.TypeVarchar:
		return append(dst, src...), nil
	case policy.TypeBytea:
		return decodeByteaText(dst, src)
	case policy.TypeJSONB:
		return appendJSONB(dst, src, t)
	case policy.TypeInt4, policy.TypeInt8:
		bits := 32
		if t == policy.TypeInt8 {
			bits = 64
		}
		v, err := parseInt(string(src), bits, t)
		if err != nil {
			return dst, c.laterSyntax(err, src, t)
		}
		return strconv.AppendInt(dst, v, 10), nil
	case policy.TypeNumeric:
		n, err := parseNumeric(string(src), t)
		if err != nil {
			return dst, c.laterSyntax(err, src, t)
		}
		return n.appendText(dst), nil
	case policy.TypeBool:
		v, err := parseBool(string(src), t)
		if err != nil {
			return dst, err
		}
		return appendBool(dst, v), nil
	case policy.TypeUUID:
		u, err := parseUUID(string(src), t)
		if err != nil {
			return dst, err
		}
		return appendUUID(dst, u), nil
	case policy.TypeDate:
		if isISODate(src) {
			// YYYY-MM-DD, the form drivers send: read the same under
			// every DateStyle, and already canonical.
			return append(dst, src...), nil
		}
		d, err := readDate(string(src), c.dtEnv())
		if err != nil {
			return dst, err
		}
		return appendDate(dst, d, isoDateStyle), nil
	case policy.TypeTimestamptz:
		ts, err := readTimestamp(string(src), true, c.dtEnv())
		if err != nil {
			return dst, err
		}
		return appendCanonicalTimestamptz(dst, ts), nil
	}
	return dst, &ValueError{Type: t}
}

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 't')
	}
	return append(dst, 'f')
}

// canonicalBinary is canonical for the binary format: the type's receive
// function, then its canonical text.
func (c *valueCodec) canonicalBinary(dst []byte, t policy.LogicalType, src []byte) ([]byte, error) {
	switch t {
	case policy.TypeText, policy.TypeVarchar:
		// The binary format of text is its characters, as the text format.
		if err := c.checkText(t, src); err != nil {
			return dst, err
		}
		return append(dst, src...), nil
	case policy.TypeBytea:
		return append(dst, src...), nil
	case policy.TypeJSONB:
		// jsonb_recv: a version byte (1) and the JSON text.
		if len(src) == 0 {
			return dst, errInsufficientData(t)
		}
		if src[0] != 1 {
			return dst, &ValueError{Type: t, Code: pgerrcode.InternalError, Msg: "unsupported jsonb version number"}
		}
		if err := c.checkText(t, src[1:]); err != nil {
			return dst, err
		}
		return appendJSONB(dst, src[1:], t)
	case policy.TypeInt4:
		r := binaryReader{b: src}
		v := int32(r.uint32())
		if err := r.done(t); err != nil {
			return dst, err
		}
		return strconv.AppendInt(dst, int64(v), 10), nil
	case policy.TypeInt8:
		r := binaryReader{b: src}
		v := int64(r.uint64())
		if err := r.done(t); err != nil {
			return dst, err
		}
		return strconv.AppendInt(dst, v, 10), nil
	case policy.TypeNumeric:
		n, err := recvNumeric(src, t)
		if err != nil {
			return dst, err
		}
		return n.appendText(dst), nil
	case policy.TypeBool:
		if len(src) == 0 {
			return dst, errInsufficientData(t)
		}
		if len(src) > 1 {
			return dst, errBinaryFormat(t)
		}
		return appendBool(dst, src[0] != 0), nil
	case policy.TypeUUID:
		if len(src) < 16 {
			return dst, errInsufficientData(t)
		}
		if len(src) > 16 {
			return dst, errBinaryFormat(t)
		}
		return appendUUID(dst, [16]byte(src)), nil
	case policy.TypeDate:
		d, err := recvDate(src, t)
		if err != nil {
			return dst, err
		}
		return appendDate(dst, d, isoDateStyle), nil
	case policy.TypeTimestamptz:
		ts, err := recvTimestamp(src, t)
		if err != nil {
			return dst, err
		}
		return appendCanonicalTimestamptz(dst, ts), nil
	}
	return dst, &ValueError{Type: t}
}

// recvDate is date_recv.
func recvDate(src []byte, t policy.LogicalType) (int32, error) {
	r := binaryReader{b: src}
	d := int32(r.uint32())
	if err := r.done(t); err != nil {
		return 0, err
	}
	if d != dateNoBegin && d != dateNoEnd && !isValidDate(int64(d)) {
		return 0, &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "date out of range"}
	}
	return d, nil
}

// recvTimestamp is timestamp_recv and timestamptz_recv.
func recvTimestamp(src []byte, t policy.LogicalType) (int64, error) {
	r := binaryReader{b: src}
	ts := int64(r.uint64())
	if err := r.done(t); err != nil {
		return 0, err
	}
	if ts != tsNoBegin && ts != tsNoEnd && !isValidTimestamp(ts) {
		return 0, &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "timestamp out of range"}
	}
	return ts, nil
}

// present appends to dst the encoding, in the client's format, of plain, the
// canonical plaintext of a value of type t.
func (c *valueCodec) present(dst []byte, t policy.LogicalType, format int16, plain []byte) ([]byte, error) {
	if textLike(t) && (c.nonUTF8 != nil && c.nonUTF8.Load() || c.unsure != nil && c.unsure()) {
		for _, ch := range plain {
			if ch >= utf8.RuneSelf {
				if c.nonUTF8 != nil && c.nonUTF8.Load() {
					return dst, errNonUTF8
				}
				return dst, errEncodingMoved
			}
		}
	}
	switch t {
	case policy.TypeText, policy.TypeVarchar:
		return append(dst, plain...), nil
	case policy.TypeBytea:
		if format == formatBinary {
			return append(dst, plain...), nil
		}
		// byteaout with bytea_output = hex, the default.
		dst = append(dst, '\\', 'x')
		return hex.AppendEncode(dst, plain), nil
	case policy.TypeJSONB:
		if format == formatBinary {
			dst = append(dst, 1)
		}
		return append(dst, plain...), nil
	case policy.TypeDate:
		d, ok := parseCanonicalDate(plain)
		if !ok {
			return dst, errCanonical
		}
		if format == formatBinary {
			return binary.BigEndian.AppendUint32(dst, uint32(d)), nil
		}
		st, err := c.currentSettings()
		if err == nil && !st.dateStyleOK {
			err = errDateStyleUnknown
		}
		if err != nil {
			return dst, dtReport(err, t)
		}
		if st.dateStyle.style == styleISO {
			return append(dst, plain...), nil
		}
		return appendDate(dst, d, st.dateStyle), nil
	case policy.TypeTimestamptz:
		ts, ok := parseCanonicalTimestamptz(plain)
		if !ok {
			return dst, errCanonical
		}
		if format == formatBinary {
			return binary.BigEndian.AppendUint64(dst, uint64(ts)), nil
		}
		st, err := c.currentSettings()
		switch {
		case err != nil:
		case !st.dateStyleOK:
			err = errDateStyleUnknown
		case st.zone == nil:
			err = errTimeZoneUnknown
		}
		if err != nil {
			return dst, dtReport(err, t)
		}
		out, ok := appendTimestamp(dst, ts, st.zone, st.dateStyle)
		if !ok {
			return dst, &ValueError{Type: t, Code: pgerrcode.DatetimeFieldOverflow, Msg: "timestamp out of range"}
		}
		return out, nil
	}
	if format == formatText {
		return append(dst, plain...), nil
	}
	switch t {
	case policy.TypeInt4:
		v, err := strconv.ParseInt(string(plain), 10, 32)
		if err != nil {
			return dst, errCanonical
		}
		return binary.BigEndian.AppendUint32(dst, uint32(int32(v))), nil
	case policy.TypeInt8:
		v, err := strconv.ParseInt(string(plain), 10, 64)
		if err != nil {
			return dst, errCanonical
		}
		return binary.BigEndian.AppendUint64(dst, uint64(v)), nil
	case policy.TypeNumeric:
		n, err := parseNumeric(string(plain), t)
		if err != nil {
			return dst, errCanonical
		}
		return n.appendBinary(dst), nil
	case policy.TypeBool:
		switch string(plain) {
		case "t":
			return append(dst, 1), nil
		case "f":
			return append(dst, 0), nil
		}
	case policy.TypeUUID:
		u, err := parseUUID(string(plain), t)
		if err != nil {
			return dst, errCanonical
		}
		return append(dst, u[:]...), nil
	}
	return dst, errCanonical
}

// errCanonical: a decrypted value is not canonical plaintext of its
// column's type (written by something other than the proxy).
var errCanonical = &ValueError{Code: pgerrcode.DataCorrupted, Msg: "stored value is not in canonical form"}

// equalityKey returns the plaintext a blind index is computed from: the
// canonical plaintext, except where PostgreSQL's = holds between values
// with different canonical text: numeric ignores the display scale (1.50 =
// 1.5), and jsonb compares numbers as numeric ({"a": 1.0} = {"a": 1}). The
// key is the same for the values = finds equal, and differs otherwise.
func equalityKey(dst []byte, t policy.LogicalType, plain []byte) []byte {
	switch t {
	case policy.TypeNumeric:
		n, err := parseNumeric(string(plain), t)
		if err != nil {
			return append(dst, plain...)
		}
		n.dscale = 0
		if n.exp < 0 {
			n.dscale = -n.exp
		}
		return n.appendText(dst)
	case policy.TypeJSONB:
		v, err := parseJSON(plain, true, t)
		if err != nil {
			return append(dst, plain...)
		}
		v.normalizeNumbers()
		return v.appendJSONB(dst)
	}
	return append(dst, plain...)
}

// laterSyntax refuses, rather than rejects, integer and numeric input that
// PostgreSQL 15 rejects but PostgreSQL 16 and later accept (1_000, 0x1F,
// 0o17, 0b101), when the server is not a PostgreSQL 15 (or older).
func (c *valueCodec) laterSyntax(err error, src []byte, t policy.LogicalType) error {
	var ve *ValueError
	if !errors.As(err, &ve) || ve.Code != pgerrcode.InvalidTextRepresentation {
		return err
	}
	st, serr := c.currentSettings()
	if serr == nil && st.serverMajor != 0 && st.serverMajor <= 15 {
		return err
	}
	s := bytes.ToLower(bytes.TrimSpace(src))
	s = bytes.TrimLeft(s, "+-")
	if bytes.ContainsRune(src, '_') || bytes.HasPrefix(s, []byte("0x")) || bytes.HasPrefix(s, []byte("0o")) || bytes.HasPrefix(s, []byte("0b")) {
		return &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported,
			Msg: "integer and numeric input with underscores or a 0x, 0o or 0b prefix is refused: the proxy reads values as PostgreSQL 15 does"}
	}
	return err
}

// isISODate reports whether b is YYYY-MM-DD with a valid AD date of four
// year digits, which date_in reads as that date whatever the settings.
func isISODate(b []byte) bool {
	if len(b) != 10 || b[4] != '-' || b[7] != '-' {
		return false
	}
	for _, i := range []int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isDigit(b[i]) {
			return false
		}
	}
	year := int(b[0]-'0')*1000 + int(b[1]-'0')*100 + int(b[2]-'0')*10 + int(b[3]-'0')
	mon := int(b[5]-'0')*10 + int(b[6]-'0')
	day := int(b[8]-'0')*10 + int(b[9]-'0')
	return year > 0 && mon >= 1 && mon <= 12 && day >= 1 && day <= daysIn(year, mon)
}
