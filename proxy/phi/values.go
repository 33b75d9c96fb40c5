package phi

import (
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
)

// This file converts PHI values between what the client sends or expects
// (its logical type, in text or binary format) and the canonical plaintext
// the proxy encrypts and indexes. Canonical plaintext is PostgreSQL's text
// output of the logical type (so '2024-1-2'::date and a binary date of the
// same day index alike), except for bytea, whose plaintext is the raw bytes.

// Wire format codes (PostgreSQL protocol, "Formats and Format Codes").
const (
	formatText   int16 = 0
	formatBinary int16 = 1
)

// logicalType is what the proxy knows of one logical type: its OIDs and how
// to convert values. The table is immutable.
type logicalType struct {
	oid      uint32
	arrayOID uint32
	// newValue returns a fresh pgtype value to scan into; nil for the types
	// whose canonical form needs no parsing (text, varchar, bytea, jsonb).
	newValue func() any
}

var logicalTypes = map[policy.LogicalType]logicalType{
	policy.TypeText:        {oid: pgtype.TextOID, arrayOID: pgtype.TextArrayOID},
	policy.TypeVarchar:     {oid: pgtype.VarcharOID, arrayOID: pgtype.VarcharArrayOID},
	policy.TypeBytea:       {oid: pgtype.ByteaOID, arrayOID: pgtype.ByteaArrayOID},
	policy.TypeJSONB:       {oid: pgtype.JSONBOID, arrayOID: pgtype.JSONBArrayOID},
	policy.TypeInt4:        {pgtype.Int4OID, pgtype.Int4ArrayOID, func() any { return new(pgtype.Int4) }},
	policy.TypeInt8:        {pgtype.Int8OID, pgtype.Int8ArrayOID, func() any { return new(pgtype.Int8) }},
	policy.TypeNumeric:     {pgtype.NumericOID, pgtype.NumericArrayOID, func() any { return new(pgtype.Numeric) }},
	policy.TypeBool:        {pgtype.BoolOID, pgtype.BoolArrayOID, func() any { return new(pgtype.Bool) }},
	policy.TypeDate:        {pgtype.DateOID, pgtype.DateArrayOID, func() any { return new(pgtype.Date) }},
	policy.TypeTimestamptz: {pgtype.TimestamptzOID, pgtype.TimestamptzArrayOID, func() any { return new(pgtype.Timestamptz) }},
	policy.TypeUUID:        {pgtype.UUIDOID, pgtype.UUIDArrayOID, func() any { return new(pgtype.UUID) }},
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

// valueCodec converts values of logical types. It holds a pgtype.Map, which
// is not safe for concurrent use: one codec per session goroutine.
type valueCodec struct {
	m *pgtype.Map
	// nonUTF8 is the session's: its client_encoding is not UTF8.
	nonUTF8 *atomic.Bool
}

func newValueCodec(nonUTF8 *atomic.Bool) *valueCodec {
	return &valueCodec{m: pgtype.NewMap(), nonUTF8: nonUTF8}
}

// textLike reports whether the server reads and writes values of t as
// characters in the client's encoding.
func textLike(t policy.LogicalType) bool {
	return t == policy.TypeText || t == policy.TypeVarchar || t == policy.TypeJSONB
}

// checkText checks the characters of a text-like value as PostgreSQL (with
// a UTF8 database) would: valid UTF-8 without NUL. Under another client
// encoding the server would convert the value, which the proxy does not:
// only ASCII, the same in every encoding, is accepted then.
func (c *valueCodec) checkText(t policy.LogicalType, b []byte) error {
	ascii := true
	for _, ch := range b {
		if ch == 0 {
			return &ValueError{Type: t, Code: pgerrcode.CharacterNotInRepertoire, Msg: "invalid byte sequence: 0x00"}
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
	if textLike(t) {
		if err := c.checkText(t, src); err != nil {
			return dst, err
		}
	}
	switch t {
	case policy.TypeText, policy.TypeVarchar:
		// The binary format of text is its UTF-8 bytes, like the text format.
		return append(dst, src...), nil
	case policy.TypeBytea:
		if format == formatBinary {
			return append(dst, src...), nil
		}
		return decodeByteaText(dst, src)
	case policy.TypeJSONB:
		if format == formatBinary {
			// jsonb binary format: a version byte (1) and the JSON text.
			if len(src) == 0 || src[0] != 1 {
				return dst, &ValueError{Type: t}
			}
			src = src[1:]
		}
		return append(dst, src...), nil
	}
	lt, ok := logicalTypes[t]
	if !ok || lt.newValue == nil {
		return dst, &ValueError{Type: t}
	}
	if t == policy.TypeDate && format == formatText {
		src = dateOfTimestamp(src)
		if d, ok := parseDate(src); ok {
			return d.AppendFormat(dst, time.DateOnly), nil
		}
	}
	v := lt.newValue()
	if err := c.m.Scan(lt.oid, format, src, v); err != nil {
		return dst, &ValueError{Type: t}
	}
	out, err := c.m.Encode(lt.oid, formatText, v, dst)
	if err != nil || out == nil {
		return dst, &ValueError{Type: t}
	}
	return out, nil
}

// dateOfTimestamp returns the date part of an ISO timestamp text
// ("2024-01-02 10:00:00+02" → "2024-01-02"): PostgreSQL's date input
// ignores a time of day, and drivers such as pgx send a time.Time that way.
func dateOfTimestamp(src []byte) []byte {
	if len(src) > 10 && (src[10] == ' ' || src[10] == 'T') && src[4] == '-' && src[7] == '-' {
		return src[:10]
	}
	return src
}

// dateLayouts are the date inputs PostgreSQL accepts whatever its DateStyle
// (year first, or the month by name) besides ISO, which pgtype reads.
// Day/month orders that depend on DateStyle ("05/12/1980") are refused
// rather than guessed: the proxy must encrypt the date the server would
// have stored.
var dateLayouts = []string{
	"20060102", "2006/01/02", "2006-1-2", "2006/1/2", "2006.01.02", "2006.1.2",
	"Jan 2, 2006", "January 2, 2006", "Jan 2 2006", "January 2 2006",
	"2 Jan 2006", "2 January 2006", "02-Jan-2006", "2-Jan-2006", "2006-Jan-02", "2006-Jan-2",
}

// parseDate reads a date in one of dateLayouts.
func parseDate(src []byte) (time.Time, bool) {
	for _, layout := range dateLayouts {
		if d, err := time.Parse(layout, string(src)); err == nil {
			return d, true
		}
	}
	return time.Time{}, false
}

// present appends to dst the encoding, in the client's format, of plain, the
// canonical plaintext of a value of type t.
func (c *valueCodec) present(dst []byte, t policy.LogicalType, format int16, plain []byte) ([]byte, error) {
	if textLike(t) && c.nonUTF8 != nil && c.nonUTF8.Load() {
		for _, ch := range plain {
			if ch >= utf8.RuneSelf {
				return dst, errNonUTF8
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
		dst = append(dst, '\\', 'x')
		return hex.AppendEncode(dst, plain), nil
	case policy.TypeJSONB:
		if format == formatBinary {
			dst = append(dst, 1)
		}
		return append(dst, plain...), nil
	}
	if format == formatText {
		return append(dst, plain...), nil
	}
	lt, ok := logicalTypes[t]
	if !ok || lt.newValue == nil {
		return dst, &ValueError{Type: t}
	}
	v := lt.newValue()
	if err := c.m.Scan(lt.oid, formatText, plain, v); err != nil {
		return dst, &ValueError{Type: t}
	}
	out, err := c.m.Encode(lt.oid, formatBinary, v, dst)
	if err != nil || out == nil {
		return dst, &ValueError{Type: t}
	}
	return out, nil
}

// decodeByteaText decodes bytea's text format: hex (\x...) or the legacy
// escape format.
func decodeByteaText(dst, src []byte) ([]byte, error) {
	if len(src) >= 2 && src[0] == '\\' && src[1] == 'x' {
		out, err := hex.AppendDecode(dst, src[2:])
		if err != nil {
			return dst, &ValueError{Type: policy.TypeBytea}
		}
		return out, nil
	}
	for i := 0; i < len(src); i++ {
		b := src[i]
		if b != '\\' {
			dst = append(dst, b)
			continue
		}
		switch {
		case i+1 < len(src) && src[i+1] == '\\':
			dst = append(dst, '\\')
			i++
		case i+3 < len(src) && isOctal(src[i+1]) && isOctal(src[i+2]) && isOctal(src[i+3]) && src[i+1] <= '3':
			dst = append(dst, (src[i+1]-'0')<<6|(src[i+2]-'0')<<3|(src[i+3]-'0'))
			i += 3
		default:
			return dst, &ValueError{Type: policy.TypeBytea}
		}
	}
	return dst, nil
}

func isOctal(b byte) bool { return b >= '0' && b <= '7' }

// toText appends the text format of src, a binary value of type oid (any
// type pgtype knows).
func (c *valueCodec) toText(dst []byte, oid uint32, src []byte) ([]byte, error) {
	t, ok := c.m.TypeForOID(oid)
	if !ok {
		return dst, fmt.Errorf("binary value of unknown type %d", oid)
	}
	v, err := t.Codec.DecodeValue(c.m, oid, formatBinary, src)
	if err != nil {
		return dst, fmt.Errorf("invalid binary value of type %d", oid)
	}
	out, err := c.m.Encode(oid, formatText, v, dst)
	if err != nil || out == nil {
		return dst, fmt.Errorf("invalid binary value of type %d", oid)
	}
	return out, nil
}
