package phi

import (
	"math"
	"strconv"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
)

// This file is PostgreSQL's numeric type as far as the proxy needs it:
// numeric_in (set_var_from_str), numeric_out (get_str_from_var),
// numeric_recv and numeric_send of src/backend/utils/adt/numeric.c
// (PostgreSQL 15), and the casts between numeric, integers and floats.
// A numeric keeps its display scale: '1.50' stays 1.50, '1.5e1' is 15 and
// '1.50e1' is 15.0, exactly as the server stores them. The binary format
// is in numeric_binary.go.

// numKind tells finite numerics from the special values.
type numKind uint8

const (
	numFinite numKind = iota
	numNaN
	numPInf
	numNInf
)

// Limits of the storage format (numeric.c: NUMERIC_WEIGHT_MAX is the
// int16 range of the base-10000 weight, NUMERIC_DSCALE_MASK is 0x3FFF).
const (
	numericWeightMax = math.MaxInt16
	numericWeightMin = math.MinInt16
	numericDscaleMax = 0x3FFF
	numericNBase     = 10000
)

// Sign words of the binary format (numeric.c).
const (
	numericPos  = 0x0000
	numericNeg  = 0x4000
	numericNaN  = 0xC000
	numericPInf = 0xD000
	numericNInf = 0xF000
)

// pgNumeric is one numeric value. For a finite value, digits are its
// significant decimal digits (0-9, no leading or trailing zeros, empty for
// zero) and the value is digits × 10^exp; dscale is the display scale.
type pgNumeric struct {
	kind   numKind
	neg    bool
	digits []byte
	exp    int
	dscale int
}

// errNumericOverflow is numeric.c's "value overflows numeric format".
func errNumericOverflow(t policy.LogicalType) error {
	return &ValueError{Type: t, Code: pgerrcode.NumericValueOutOfRange, Msg: "value overflows numeric format"}
}

// syntaxError is PostgreSQL's "invalid input syntax for type %s", without
// the value.
func syntaxError(t policy.LogicalType, typeName string) error {
	return &ValueError{Type: t, Code: pgerrcode.InvalidTextRepresentation, Msg: "invalid input syntax for type " + typeName}
}

// normalize strips leading and trailing zero digits; a zero is positive.
func (n *pgNumeric) normalize() {
	i := 0
	for i < len(n.digits) && n.digits[i] == 0 {
		i++
	}
	n.digits = n.digits[i:]
	j := len(n.digits)
	for j > 0 && n.digits[j-1] == 0 {
		j--
	}
	n.exp += len(n.digits) - j
	n.digits = n.digits[:j]
	if len(n.digits) == 0 {
		n.neg, n.exp = false, 0
	}
}

// checkRange is make_result's overflow check: the base-10000 weight must
// fit in int16 and the display scale in 14 bits.
func (n *pgNumeric) checkRange(t policy.LogicalType) error {
	if n.kind != numFinite {
		return nil
	}
	if n.dscale > numericDscaleMax {
		return errNumericOverflow(t)
	}
	if len(n.digits) > 0 {
		w := floorDiv(n.exp+len(n.digits)-1, 4)
		if w > numericWeightMax || w < numericWeightMin {
			return errNumericOverflow(t)
		}
	}
	return nil
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// isSpace is C's isspace in the C (and any UTF-8) locale.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// hasPrefixFold is pg_strncasecmp(s, prefix, len(prefix)) == 0.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		a, b := s[i], prefix[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// parseNumeric is numeric_in without a type modifier. t names the type
// in errors (a jsonb number reports jsonb).
func parseNumeric(s string, t policy.LogicalType) (pgNumeric, error) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	var n pgNumeric
	rest := s[i:]
	switch {
	case hasPrefixFold(rest, "NaN"):
		n.kind, i = numNaN, i+3
	case hasPrefixFold(rest, "Infinity"):
		n.kind, i = numPInf, i+8
	case hasPrefixFold(rest, "+Infinity"):
		n.kind, i = numPInf, i+9
	case hasPrefixFold(rest, "-Infinity"):
		n.kind, i = numNInf, i+9
	case hasPrefixFold(rest, "inf"):
		n.kind, i = numPInf, i+3
	case hasPrefixFold(rest, "+inf"):
		n.kind, i = numPInf, i+4
	case hasPrefixFold(rest, "-inf"):
		n.kind, i = numNInf, i+4
	default:
		var err error
		if n, i, err = parseNumericVar(s, i, t); err != nil {
			return n, err
		}
	}
	for ; i < len(s); i++ {
		if !isSpace(s[i]) {
			return pgNumeric{}, syntaxError(t, "numeric")
		}
	}
	return n, n.checkRange(t)
}

// parseNumericVar is set_var_from_str: a finite numeric starting at s[i],
// and where it ends.
func parseNumericVar(s string, i int, t policy.LogicalType) (pgNumeric, int, error) {
	var n pgNumeric
	if i < len(s) {
		switch s[i] {
		case '+':
			i++
		case '-':
			n.neg = true
			i++
		}
	}
	haveDP := false
	if i < len(s) && s[i] == '.' {
		haveDP = true
		i++
	}
	if i >= len(s) || !isDigit(s[i]) {
		return n, i, syntaxError(t, "numeric")
	}
	dweight, dscale := -1, 0
	n.digits = make([]byte, 0, len(s)-i)
	for i < len(s) {
		c := s[i]
		if isDigit(c) {
			n.digits = append(n.digits, c-'0')
			if haveDP {
				dscale++
			} else {
				dweight++
			}
			i++
		} else if c == '.' {
			if haveDP {
				return n, i, syntaxError(t, "numeric")
			}
			haveDP = true
			i++
		} else {
			break
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		exponent, end := strtol(s, i+1)
		if end == i+1 {
			return n, i, syntaxError(t, "numeric")
		}
		i = end
		const limit = math.MaxInt32 / 2
		if exponent >= limit || exponent <= -limit {
			return n, i, errNumericOverflow(t)
		}
		dweight += int(exponent)
		dscale -= int(exponent)
		if dscale < 0 {
			dscale = 0
		}
	}
	// The last digit has weight dweight-(len-1).
	n.exp = dweight - (len(n.digits) - 1)
	n.dscale = dscale
	n.normalize()
	return n, i, nil
}

// strtol is C's strtol(s+i, &end, 10) on a 64-bit long: leading white
// space, a sign, digits; it saturates on overflow. end == i when no digits.
func strtol(s string, i int) (int64, int) {
	start := i
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	if i >= len(s) || !isDigit(s[i]) {
		return 0, start
	}
	var v uint64
	over := false
	for ; i < len(s) && isDigit(s[i]); i++ {
		d := uint64(s[i] - '0')
		if v > (math.MaxUint64-d)/10 {
			over = true
		} else {
			v = v*10 + d
		}
	}
	switch {
	case neg && (over || v > 1<<63):
		return math.MinInt64, i
	case neg:
		return -int64(v), i
	case over || v > math.MaxInt64:
		return math.MaxInt64, i
	}
	return int64(v), i
}

// appendText is numeric_out.
func (n *pgNumeric) appendText(dst []byte) []byte {
	switch n.kind {
	case numNaN:
		return append(dst, "NaN"...)
	case numPInf:
		return append(dst, "Infinity"...)
	case numNInf:
		return append(dst, "-Infinity"...)
	}
	if n.neg && len(n.digits) > 0 {
		dst = append(dst, '-')
	}
	top := n.exp + len(n.digits) - 1 // weight of the first digit
	if len(n.digits) == 0 || top < 0 {
		dst = append(dst, '0')
	} else {
		for p := top; p >= 0; p-- {
			dst = append(dst, '0'+n.digitAt(p))
		}
	}
	if n.dscale > 0 {
		dst = append(dst, '.')
		for p := -1; p >= -n.dscale; p-- {
			dst = append(dst, '0'+n.digitAt(p))
		}
	}
	return dst
}

// digitAt is the decimal digit of weight p (p = 0 for units).
func (n *pgNumeric) digitAt(p int) byte {
	i := n.exp + len(n.digits) - 1 - p
	if i < 0 || i >= len(n.digits) {
		return 0
	}
	return n.digits[i]
}

// numericFromInt is an integer as numeric (scale 0).
func numericFromInt(v int64) pgNumeric {
	var n pgNumeric
	u := uint64(v)
	if v < 0 {
		n.neg, u = true, uint64(-v)
	}
	s := strconv.FormatUint(u, 10)
	n.digits = make([]byte, len(s))
	for i := range s {
		n.digits[i] = s[i] - '0'
	}
	n.normalize()
	return n
}

// numericFromFloat is float8_numeric (prec 15, DBL_DIG) or float4_numeric
// (prec 6, FLT_DIG): the value printed with "%.*g", read back.
func numericFromFloat(f float64, prec int) pgNumeric {
	switch {
	case math.IsNaN(f):
		return pgNumeric{kind: numNaN}
	case math.IsInf(f, 1):
		return pgNumeric{kind: numPInf}
	case math.IsInf(f, -1):
		return pgNumeric{kind: numNInf}
	}
	n, _, err := parseNumericVar(strconv.FormatFloat(f, 'g', prec, 64), 0, policy.TypeNumeric)
	if err != nil {
		// FormatFloat's output is always numeric syntax.
		panic("numericFromFloat: " + err.Error())
	}
	return n
}

// integral reports whether n is a finite integer, and its value when it
// fits in int64.
func (n *pgNumeric) integral() (v int64, isInt, fits bool) {
	if n.kind != numFinite || n.exp < 0 {
		return 0, false, false
	}
	if len(n.digits)+n.exp > 19 {
		return 0, true, false
	}
	var u uint64
	for i := range len(n.digits) + n.exp {
		d := uint64(0)
		if i < len(n.digits) {
			d = uint64(n.digits[i])
		}
		u = u*10 + d
	}
	switch {
	case n.neg && u <= 1<<63:
		return -int64(u), true, true
	case !n.neg && u <= math.MaxInt64:
		return int64(u), true, true
	}
	return 0, true, false
}

// roundToInt is numericvar_to_int64 after round_var(0): half away from
// zero. ok is false when the result does not fit in int64.
func (n *pgNumeric) roundToInt() (int64, bool) {
	r := *n
	if r.exp < 0 {
		keep := len(r.digits) + r.exp // digits at or above the units
		up := false
		if keep >= 0 && keep < len(r.digits) {
			up = r.digits[keep] >= 5
		}
		var digits []byte
		if keep > 0 {
			digits = append(digits, r.digits[:keep]...)
		}
		if up {
			// Add one unit, carrying.
			i := len(digits) - 1
			for ; i >= 0 && digits[i] == 9; i-- {
				digits[i] = 0
			}
			if i >= 0 {
				digits[i]++
			} else {
				digits = append([]byte{1}, digits...)
			}
		}
		r.digits, r.exp = digits, 0
		r.normalize()
	}
	v, _, fits := r.integral()
	return v, fits
}
