package phi

import (
	"encoding/binary"

	"github.com/novamind/phiproxy/proxy"
)

// Byte-level reading of the messages the proxy inspects without decoding
// them whole.

func protocolError(msg string) error { return &proxy.ProtocolError{Msg: msg} }

// bindNames reads the portal and statement names at the start of a Bind.
func bindNames(msg []byte) (portal, stmt string, ok bool) {
	p, rest, ok := proxy.CString(msg[5:])
	if !ok {
		return "", "", false
	}
	st, _, ok := proxy.CString(rest)
	if !ok {
		return "", "", false
	}
	return string(p), string(st), true
}

// bindResultFormats reads the result format codes at the end of a Bind
// without decoding its parameters.
func bindResultFormats(msg []byte) ([]int16, error) {
	bad := protocolError("invalid Bind message")
	b := msg[5:]
	for range 2 { // portal and statement names
		var ok bool
		if _, b, ok = proxy.CString(b); !ok {
			return nil, bad
		}
	}
	u16 := func() (int, bool) {
		if len(b) < 2 {
			return 0, false
		}
		v := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		return v, true
	}
	n, ok := u16() // parameter format codes
	if !ok || len(b) < 2*n {
		return nil, bad
	}
	b = b[2*n:]
	if n, ok = u16(); !ok { // parameter values
		return nil, bad
	}
	for range n {
		if len(b) < 4 {
			return nil, bad
		}
		size := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if size > 0 {
			if int(size) > len(b) {
				return nil, bad
			}
			b = b[size:]
		}
	}
	if n, ok = u16(); !ok || len(b) != 2*n {
		return nil, bad
	}
	if n == 0 {
		return nil, nil
	}
	formats := make([]int16, n)
	for i := range formats {
		formats[i] = int16(binary.BigEndian.Uint16(b[2*i:]))
	}
	return formats, nil
}

// formatOf returns the format code of parameter i under the Bind rules: no
// codes means text, one code applies to all, else one per parameter.
func formatOf(codes []int16, i int) int16 {
	switch len(codes) {
	case 0:
		return formatText
	case 1:
		return codes[0]
	}
	if i < len(codes) {
		return codes[i]
	}
	return formatText
}
