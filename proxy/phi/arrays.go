package phi

import (
	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
)

// Arrays bound for `col = ANY($n)`: array_in and array_recv of
// src/backend/utils/adt/arrayfuncs.c (PostgreSQL 15) for one-dimensional
// and rectangular multi-dimensional arrays, whose elements the comparison
// sees in order. Dimension decorations ('[1:2]={...}') are refused.

const maxArrayDims = 6 // MAXDIM

func errMalformedArray(t policy.LogicalType) error {
	return &ValueError{Type: t, Code: pgerrcode.InvalidTextRepresentation, Msg: "malformed array literal"}
}

// arrayElems returns the elements of an array parameter (nil for NULL),
// each in the array's format.
func arrayElems(format int16, src []byte, elemOID uint32, t policy.LogicalType) ([][]byte, error) {
	if format == formatBinary {
		return recvArray(src, elemOID, t)
	}
	return parseArrayText(src, t)
}

// parseArrayText is array_in with the delimiter ','.
func parseArrayText(src []byte, t policy.LogicalType) ([][]byte, error) {
	p := arrayParser{s: src, t: t}
	for p.i < len(p.s) && isSpace(p.s[p.i]) {
		p.i++
	}
	if p.i < len(p.s) && p.s[p.i] == '[' {
		return nil, &ValueError{Type: t, Code: pgerrcode.FeatureNotSupported, Msg: "arrays with explicit dimensions are refused by the proxy"}
	}
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, errMalformedArray(t)
	}
	if _, err := p.array(0); err != nil {
		return nil, err
	}
	for ; p.i < len(p.s); p.i++ {
		if !isSpace(p.s[p.i]) {
			return nil, errMalformedArray(t)
		}
	}
	return p.elems, nil
}

type arrayParser struct {
	s     []byte
	i     int
	t     policy.LogicalType
	elems [][]byte
	dims  []int // the length of each level, once known
}

// array reads one {...} at nesting level depth and returns its length.
func (p *arrayParser) array(depth int) (int, error) {
	if depth >= maxArrayDims {
		return 0, &ValueError{Type: p.t, Code: pgerrcode.ProgramLimitExceeded, Msg: "number of array dimensions exceeds the maximum allowed (6)"}
	}
	p.i++ // '{'
	n := 0
	sub := -1 // whether elements are sub-arrays (1) or values (0)
	for {
		for p.i < len(p.s) && isSpace(p.s[p.i]) {
			p.i++
		}
		if p.i >= len(p.s) {
			return 0, errMalformedArray(p.t)
		}
		if p.s[p.i] == '}' && n == 0 {
			p.i++
			if depth > 0 {
				return 0, errMalformedArray(p.t) // {{}} has no shape
			}
			return 0, p.level(depth, 0)
		}
		if p.s[p.i] == '{' {
			if sub == 0 {
				return 0, errMalformedArray(p.t)
			}
			sub = 1
			if _, err := p.array(depth + 1); err != nil {
				return 0, err
			}
		} else {
			if sub == 1 {
				return 0, errMalformedArray(p.t)
			}
			sub = 0
			if err := p.element(); err != nil {
				return 0, err
			}
		}
		n++
		for p.i < len(p.s) && isSpace(p.s[p.i]) {
			p.i++
		}
		if p.i >= len(p.s) {
			return 0, errMalformedArray(p.t)
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			if sub == 0 && len(p.dims) > depth+1 {
				return 0, errMalformedArray(p.t)
			}
			return n, p.level(depth, n)
		default:
			return 0, errMalformedArray(p.t)
		}
	}
}

// level checks that every array at a depth has the same length. The
// innermost arrays close first, so a depth's length is often known
// before the lengths of the depths above it (-1 until then).
func (p *arrayParser) level(depth, n int) error {
	for len(p.dims) <= depth {
		p.dims = append(p.dims, -1)
	}
	if p.dims[depth] == -1 {
		p.dims[depth] = n
		return nil
	}
	if p.dims[depth] != n {
		return &ValueError{Type: p.t, Code: pgerrcode.InvalidTextRepresentation, Msg: "malformed array literal: multidimensional arrays must have sub-arrays with matching dimensions"}
	}
	return nil
}

// element reads one element: quoted, or bare (NULL is the null value).
func (p *arrayParser) element() error {
	var b []byte
	quoted, hadQuote, escaped := false, false, false
	lastKept := 0 // length of b up to the last quoted or escaped or non-space byte
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\\' && hadQuote && !quoted:
			return errMalformedArray(p.t)
		case c == '\\':
			p.i++
			if p.i >= len(p.s) {
				return errMalformedArray(p.t)
			}
			b = append(b, p.s[p.i])
			lastKept = len(b)
			escaped = true
		case c == '"':
			if !quoted && hadQuote {
				return errMalformedArray(p.t)
			}
			if !quoted && len(b) > 0 {
				return errMalformedArray(p.t)
			}
			quoted = !quoted
			hadQuote = true
			lastKept = len(b)
		case quoted:
			b = append(b, c)
			lastKept = len(b)
		case c == ',' || c == '}':
			if len(b) == 0 && !hadQuote {
				return errMalformedArray(p.t)
			}
			b = b[:lastKept]
			if !hadQuote && !escaped && len(b) == 4 && hasPrefixFold(string(b), "null") {
				p.elems = append(p.elems, nil)
				return nil
			}
			if b == nil {
				b = []byte{}
			}
			p.elems = append(p.elems, b)
			return nil
		case c == '{':
			return errMalformedArray(p.t)
		case hadQuote:
			if !isSpace(c) {
				return errMalformedArray(p.t)
			}
		default:
			if !isSpace(c) || len(b) > 0 {
				b = append(b, c)
				if !isSpace(c) {
					lastKept = len(b)
				}
			}
		}
		p.i++
	}
	return errMalformedArray(p.t)
}

// recvArray is array_recv for an array of elemOID.
func recvArray(src []byte, elemOID uint32, t policy.LogicalType) ([][]byte, error) {
	r := binaryReader{b: src}
	ndim := int32(r.uint32())
	flags := int32(r.uint32())
	elem := r.uint32()
	if r.err {
		return nil, errInsufficientData(t)
	}
	if ndim < 0 {
		return nil, &ValueError{Type: t, Code: pgerrcode.InvalidBinaryRepresentation, Msg: "invalid number of dimensions"}
	}
	if ndim > maxArrayDims {
		return nil, &ValueError{Type: t, Code: pgerrcode.ProgramLimitExceeded, Msg: "number of array dimensions exceeds the maximum allowed (6)"}
	}
	if flags != 0 && flags != 1 {
		return nil, &ValueError{Type: t, Code: pgerrcode.InvalidBinaryRepresentation, Msg: "invalid array flags"}
	}
	if elem != elemOID {
		return nil, &ValueError{Type: t, Code: pgerrcode.DatatypeMismatch, Msg: "binary data has array element type of another type than expected"}
	}
	n := int64(1)
	for range ndim {
		d := int32(r.uint32())
		r.uint32() // lower bound
		if r.err {
			return nil, errInsufficientData(t)
		}
		if d < 0 {
			return nil, &ValueError{Type: t, Code: pgerrcode.InvalidBinaryRepresentation, Msg: "invalid array dimensions"}
		}
		n *= int64(d)
		if n > 1<<27 {
			return nil, &ValueError{Type: t, Code: pgerrcode.ProgramLimitExceeded, Msg: "array size exceeds the maximum allowed"}
		}
	}
	if ndim == 0 {
		n = 0
	}
	elems := make([][]byte, 0, n)
	for range n {
		l := int32(r.uint32())
		if r.err {
			return nil, errInsufficientData(t)
		}
		if l == -1 {
			elems = append(elems, nil)
			continue
		}
		if l < -1 || int(l) > len(r.b) {
			return nil, errInsufficientData(t)
		}
		elems = append(elems, r.b[:l:l])
		r.b = r.b[l:]
	}
	if len(r.b) > 0 {
		return nil, errBinaryFormat(t)
	}
	return elems, nil
}
