package phi

import (
	"encoding/hex"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
)

// The input functions of PostgreSQL's scalar types (PostgreSQL 15), with
// their SQLSTATEs: integers (pg_strtoint16/32/64 of numutils.c), boolean
// (parse_bool_with_len), uuid (string_to_uuid), bytea (byteain and
// hex_decode), float4 and float8 (float4in, float8in_internal).

// intTypeName is PostgreSQL's name of the integer type of a width.
func intTypeName(bits int) string {
	switch bits {
	case 16:
		return "smallint"
	case 32:
		return "integer"
	}
	return "bigint"
}

// parseInt is pg_strtoint16/32/64: white space around, a sign, digits.
func parseInt(s string, bits int, t policy.LogicalType) (int64, error) {
	min := int64(-1) << (bits - 1)
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	} else if i < len(s) && s[i] == '+' {
		i++
	}
	if i >= len(s) || !isDigit(s[i]) {
		return 0, syntaxError(t, intTypeName(bits))
	}
	var v int64 // accumulated negatively, as PostgreSQL does
	for i < len(s) && isDigit(s[i]) {
		d := int64(s[i] - '0')
		i++
		if v < min/10 {
			return 0, errIntRange(t, bits)
		}
		v *= 10
		if v < min+d {
			return 0, errIntRange(t, bits)
		}
		v -= d
	}
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	if i != len(s) {
		return 0, syntaxError(t, intTypeName(bits))
	}
	if !neg {
		if v == min {
			return 0, errIntRange(t, bits)
		}
		v = -v
	}
	return v, nil
}

// errIntRange is `value "..." is out of range for type integer`.
func errIntRange(t policy.LogicalType, bits int) error {
	return &ValueError{Type: t, Code: pgerrcode.NumericValueOutOfRange, Msg: "value is out of range for type " + intTypeName(bits)}
}

// errIntCast is int84's, numeric_int4's, dtoi4's "integer out of range".
func errIntCast(t policy.LogicalType, bits int) error {
	return &ValueError{Type: t, Code: pgerrcode.NumericValueOutOfRange, Msg: intTypeName(bits) + " out of range"}
}

// parseBool is boolin.
func parseBool(s string, t policy.LogicalType) (bool, error) {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	v := s[i:j]
	prefixOf := func(word string, minLen int) bool {
		n := len(v)
		if n < minLen {
			n = minLen
		}
		if n > len(word) || len(v) > len(word) {
			return false
		}
		return hasPrefixFold(word, v) && len(v) >= minLen
	}
	if len(v) > 0 {
		switch lower(v[0]) {
		case 't':
			if prefixOf("true", 1) {
				return true, nil
			}
		case 'f':
			if prefixOf("false", 1) {
				return false, nil
			}
		case 'y':
			if prefixOf("yes", 1) {
				return true, nil
			}
		case 'n':
			if prefixOf("no", 1) {
				return false, nil
			}
		case 'o':
			// "o" alone is ambiguous: at least two characters.
			if prefixOf("on", 2) {
				return true, nil
			}
			if prefixOf("off", 2) {
				return false, nil
			}
		case '1':
			if len(v) == 1 {
				return true, nil
			}
		case '0':
			if len(v) == 1 {
				return false, nil
			}
		}
	}
	return false, syntaxError(t, "boolean")
}

// parseUUID is string_to_uuid: 32 hex digits, a hyphen allowed after any
// group of four but the last, optionally in braces.
func parseUUID(s string, t policy.LogicalType) ([16]byte, error) {
	var u [16]byte
	i := 0
	braces := false
	if i < len(s) && s[i] == '{' {
		braces = true
		i++
	}
	for k := 0; k < 16; k++ {
		if i+1 >= len(s) {
			return u, syntaxError(t, "uuid")
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, syntaxError(t, "uuid")
		}
		u[k] = hi<<4 | lo
		i += 2
		if i < len(s) && s[i] == '-' && k%2 == 1 && k < 15 {
			i++
		}
	}
	if braces {
		if i >= len(s) || s[i] != '}' {
			return u, syntaxError(t, "uuid")
		}
		i++
	}
	if i != len(s) {
		return u, syntaxError(t, "uuid")
	}
	return u, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendUUID is uuid_out.
func appendUUID(dst []byte, u [16]byte) []byte {
	for k, b := range u {
		if k == 4 || k == 6 || k == 8 || k == 10 {
			dst = append(dst, '-')
		}
		dst = hex.AppendEncode(dst, []byte{b})
	}
	return dst
}

// decodeByteaText is byteain: the hex format (\x, white space allowed
// between digit pairs) or the escape format.
func decodeByteaText(dst, src []byte) ([]byte, error) {
	if len(src) >= 2 && src[0] == '\\' && src[1] == 'x' {
		s := src[2:]
		for i := 0; i < len(s); {
			c := s[i]
			if c == ' ' || c == '\n' || c == '\t' || c == '\r' {
				i++
				continue
			}
			hi, ok := unhex(c)
			if !ok {
				return dst, &ValueError{Type: policy.TypeBytea, Code: pgerrcode.InvalidParameterValue, Msg: "invalid hexadecimal digit"}
			}
			i++
			if i >= len(s) {
				return dst, &ValueError{Type: policy.TypeBytea, Code: pgerrcode.InvalidParameterValue, Msg: "invalid hexadecimal data: odd number of digits"}
			}
			lo, ok := unhex(s[i])
			if !ok {
				return dst, &ValueError{Type: policy.TypeBytea, Code: pgerrcode.InvalidParameterValue, Msg: "invalid hexadecimal digit"}
			}
			i++
			dst = append(dst, hi<<4|lo)
		}
		return dst, nil
	}
	for i := 0; i < len(src); i++ {
		b := src[i]
		if b != '\\' {
			dst = append(dst, b)
			continue
		}
		switch {
		case i+3 < len(src) && src[i+1] >= '0' && src[i+1] <= '3' && isOctal(src[i+2]) && isOctal(src[i+3]):
			dst = append(dst, (src[i+1]-'0')<<6|(src[i+2]-'0')<<3|(src[i+3]-'0'))
			i += 3
		case i+1 < len(src) && src[i+1] == '\\':
			dst = append(dst, '\\')
			i++
		default:
			return dst, syntaxError(policy.TypeBytea, "bytea")
		}
	}
	return dst, nil
}

func isOctal(b byte) bool { return b >= '0' && b <= '7' }

// parseFloat is float8in_internal (bits 64) or float4in (bits 32). Forms
// strtod reads but Go does not (hexadecimal) are refused.
func parseFloat(s string, bits int, t policy.LogicalType) (float64, error) {
	name := "double precision"
	if bits == 32 {
		name = "real"
	}
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	if i == len(s) {
		return 0, syntaxError(t, name)
	}
	num := s[i:]
	unsigned := num
	if unsigned != "" && (unsigned[0] == '+' || unsigned[0] == '-') {
		unsigned = unsigned[1:]
	}
	if len(unsigned) >= 2 && unsigned[0] == '0' && lower(unsigned[1]) == 'x' || hasPrefixFold(unsigned, "nan(") {
		return 0, &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported,
			Msg: "hexadecimal and NaN(...) floating-point input is refused by the proxy"}
	}
	// The longest prefix strtod reads: a decimal number, or the
	// infinities and NaN.
	end, nonzero, special := strtodPrefix(num)
	var f float64
	switch {
	case special != "":
		switch {
		case hasPrefixFold(special, "nan"):
			f = math.NaN()
		case special[0] == '-':
			f = math.Inf(-1)
		default:
			f = math.Inf(1)
		}
	case end == 0:
		return 0, syntaxError(t, name)
	default:
		v, err := strconv.ParseFloat(num[:end], bits)
		if (err != nil && !math.IsInf(v, 0)) || (nonzero && v == 0) || math.IsInf(v, 0) {
			return 0, &ValueError{Type: t, Code: pgerrcode.NumericValueOutOfRange, Msg: "value is out of range for type " + name}
		}
		f = v
	}
	for end < len(num) && isSpace(num[end]) {
		end++
	}
	if end != len(num) {
		return 0, syntaxError(t, name)
	}
	return f, nil
}

// strtodPrefix is the length of the decimal number at the start of s (0:
// none), whether its digits are not all zero, or the special word strtod
// and PostgreSQL accept there ("inf", "-Infinity", "NaN").
func strtodPrefix(s string) (end int, nonzero bool, special string) {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	for _, w := range []string{"infinity", "inf", "nan"} {
		if hasPrefixFold(s[i:], w) {
			return i + len(w), false, s[:i+len(w)]
		}
	}
	digits := 0
	for i < len(s) && isDigit(s[i]) {
		nonzero = nonzero || s[i] != '0'
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && isDigit(s[i]) {
			nonzero = nonzero || s[i] != '0'
			i++
			digits++
		}
	}
	if digits == 0 {
		return 0, false, ""
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j < len(s) && isDigit(s[j]) {
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			i = j
		}
	}
	return i, nonzero, ""
}

// clipName is name input: at most NAMEDATALEN-1 (63) bytes, cut at a
// character boundary (pg_mbcliplen).
func clipName(s []byte) []byte {
	if len(s) <= 63 {
		return s
	}
	n := 0
	for n < len(s) {
		_, size := utf8.DecodeRune(s[n:])
		if n+size > 63 {
			break
		}
		n += size
	}
	return s[:n]
}

// rtrimSpaces is bpchar's conversion to text: trailing spaces go.
func rtrimSpaces(s []byte) []byte {
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}
