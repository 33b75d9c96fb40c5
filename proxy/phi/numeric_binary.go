package phi

import (
	"encoding/binary"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
)

// numeric's binary format: numeric_send and numeric_recv of numeric.c,
// with the reader of binary parameter values (pq_getmsg*) that the other
// receive functions share.

// appendBinary is numeric_send.
func (n *pgNumeric) appendBinary(dst []byte) []byte {
	var sign uint16
	switch n.kind {
	case numNaN:
		sign = numericNaN
	case numPInf:
		sign = numericPInf
	case numNInf:
		sign = numericNInf
	default:
		if n.neg {
			sign = numericNeg
		}
	}
	var ndigits, weight int
	if n.kind == numFinite && len(n.digits) > 0 {
		weight = floorDiv(n.exp+len(n.digits)-1, 4)
		last := floorDiv(n.exp, 4)
		ndigits = weight - last + 1
	}
	dscale := 0
	switch n.kind {
	case numFinite:
		dscale = n.dscale
	case numPInf, numNInf:
		// numeric_send reads the display scale from the special value's
		// short header: 0xD000 and 0xF000 carry 0x20 in its scale bits.
		dscale = 0x20
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(ndigits))
	dst = binary.BigEndian.AppendUint16(dst, uint16(int16(weight)))
	dst = binary.BigEndian.AppendUint16(dst, sign)
	dst = binary.BigEndian.AppendUint16(dst, uint16(dscale))
	for g := weight; g > weight-ndigits; g-- {
		var d uint16
		for k := 3; k >= 0; k-- {
			d = d*10 + uint16(n.digitAt(4*g+k))
		}
		dst = binary.BigEndian.AppendUint16(dst, d)
	}
	return dst
}

// binaryReader reads a binary parameter value as pq_getmsg* do: reading
// past the end is PostgreSQL's "insufficient data left in message"
// (08P01), and bytes left over are "incorrect binary data format" (22P03).
type binaryReader struct {
	b   []byte
	err bool
}

func (r *binaryReader) uint16() uint16 {
	if len(r.b) < 2 {
		r.err, r.b = true, nil
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *binaryReader) uint32() uint32 {
	if len(r.b) < 4 {
		r.err, r.b = true, nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *binaryReader) uint64() uint64 {
	if len(r.b) < 8 {
		r.err, r.b = true, nil
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// done reports a short or long value.
func (r *binaryReader) done(t policy.LogicalType) error {
	if r.err {
		return errInsufficientData(t)
	}
	if len(r.b) > 0 {
		return errBinaryFormat(t)
	}
	return nil
}

func errInsufficientData(t policy.LogicalType) error {
	return &ValueError{Type: t, Code: pgerrcode.ProtocolViolation, Msg: "insufficient data left in message"}
}

func errBinaryFormat(t policy.LogicalType) error {
	return &ValueError{Type: t, Code: pgerrcode.InvalidBinaryRepresentation, Msg: "incorrect binary data format"}
}

// recvNumeric is numeric_recv: digits hidden by the display scale are
// truncated away, as PostgreSQL does.
func recvNumeric(src []byte, t policy.LogicalType) (pgNumeric, error) {
	r := binaryReader{b: src}
	ndigits := int(r.uint16())
	weight := int(int16(r.uint16()))
	sign := r.uint16()
	if r.err {
		return pgNumeric{}, errInsufficientData(t)
	}
	var n pgNumeric
	switch sign {
	case numericPos:
	case numericNeg:
		n.neg = true
	case numericNaN:
		n.kind = numNaN
	case numericPInf:
		n.kind = numPInf
	case numericNInf:
		n.kind = numNInf
	default:
		return n, &ValueError{Type: t, Code: pgerrcode.InvalidBinaryRepresentation, Msg: `invalid sign in external "numeric" value`}
	}
	dscale := int(r.uint16())
	if r.err {
		return pgNumeric{}, errInsufficientData(t)
	}
	if dscale&numericDscaleMax != dscale {
		return pgNumeric{}, &ValueError{Type: t, Code: pgerrcode.InvalidBinaryRepresentation, Msg: `invalid scale in external "numeric" value`}
	}
	digits := make([]byte, 0, 4*ndigits)
	for range ndigits {
		d := int16(r.uint16())
		if r.err {
			return pgNumeric{}, errInsufficientData(t)
		}
		if d < 0 || d >= numericNBase {
			return pgNumeric{}, &ValueError{Type: t, Code: pgerrcode.InvalidBinaryRepresentation, Msg: `invalid digit in external "numeric" value`}
		}
		digits = append(digits, byte(d/1000), byte(d/100%10), byte(d/10%10), byte(d%10))
	}
	if err := r.done(t); err != nil {
		return pgNumeric{}, err
	}
	if n.kind != numFinite {
		return pgNumeric{kind: n.kind}, nil
	}
	n.digits = digits
	n.exp = 4 * (weight - ndigits + 1)
	n.dscale = dscale
	// trunc_var: drop the digits beyond the display scale.
	if n.exp < -dscale {
		cut := -dscale - n.exp
		if cut > len(n.digits) {
			cut = len(n.digits)
		}
		n.digits = n.digits[:len(n.digits)-cut]
		n.exp += cut
	}
	n.normalize()
	return n, n.checkRange(t)
}
