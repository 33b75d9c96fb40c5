package rewrite

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrValueUnknown is AppendValue's answer for a constant whose value the
// server builds partly in its own encoding: in a client_encoding other than
// UTF8, an escape (E'\xe9', E'\u00e9', U&'\00e9') that makes a non-ASCII
// character puts UTF8 bytes next to the converted client text, and the
// value is not in the client's encoding without a conversion table. The
// token's boundaries are exact all the same.
var ErrValueUnknown = errors.New("rewrite: the string value is not known in the client encoding")

// AppendValue appends to dst the value of string constant t of src (lexed
// by Lex with o), as the server's scanner and grammar filter make it: two
// quotes as one, the parts of a continued constant joined, escapes of E'…'
// and U&'…' decoded (UTF8 bytes for Unicode escapes), a dollar-quoted body
// as written. It is in the client's encoding. For B'…' and X'…' it is the
// digits between the quotes. It does not allocate when dst has room,
// except in a client-only encoding.
func AppendValue(dst []byte, src string, t Token, o LexOptions) ([]byte, error) {
	switch t.Kind {
	case TokenString, TokenUnicodeString, TokenBitString, TokenHexString:
	default:
		return dst, fmt.Errorf("rewrite: a %v token has no string value", t.Kind)
	}
	if t.flags&tokValueUnknown != 0 {
		return dst, ErrValueUnknown
	}
	raw := src[t.Start:t.End]
	view := raw
	if o.Encoding.class() == classClientOnly {
		view, _ = shadowOf(raw, o.Encoding)
	}
	return decodeString(dst, view, raw, t, o)
}

// decodeString appends the value of string token t, given its text as
// lexed (view, the shadow in a client-only encoding, where only ASCII
// bytes are the characters they look like) and as sent (raw).
func decodeString(dst []byte, view, raw string, t Token, o LexOptions) ([]byte, error) {
	switch t.form {
	case formDollar:
		d := strings.IndexByte(view[1:], '$') + 2 // the delimiter's length
		return append(dst, raw[d:len(raw)-d]...), nil
	case formEscape:
		return appendEscaped(dst, view, raw), nil
	case formUnicode:
		var vbuf, rbuf [256]byte
		v, r := undouble(vbuf[:0], rbuf[:0], view, raw, t)
		out, _, err := udeescape(dst, v, r, t.esc, t.Start, o.Encoding.class() == classUTF8)
		return out, err
	}
	return appendParts(dst, view, raw, t.form == formStandard), nil
}

// appendParts appends the body of a <xq>, <xb> or <xh> constant: its
// quoted parts without the quotes, a doubled quote as one where doubling is allowed.
func appendParts(dst []byte, view, raw string, doubled bool) []byte {
	j := strings.IndexByte(view, '\'') + 1
	for {
		k := plainBody(view, j, doubled)
		for j < k {
			q := strings.IndexByte(view[j:k], '\'')
			if q < 0 {
				dst = append(dst, raw[j:k]...)
				break
			}
			dst = append(dst, raw[j:j+q+1]...) // up to the first of ''
			j += q + 2
		}
		if k+1 == len(view) {
			return dst
		}
		next, _ := continuation(view, k+1)
		j = next + 1
	}
}

// appendEscaped appends the value of an <xe> constant.
func appendEscaped(dst []byte, view, raw string) []byte {
	j := strings.IndexByte(view, '\'') + 1
	for {
		k := strings.IndexAny(view[j:], `'\`) + j
		dst = append(dst, raw[j:k]...)
		j = k
		switch {
		case view[j] == '\'' && peek(view, j+1) == '\'':
			dst = append(dst, '\'')
			j += 2
		case view[j] == '\'':
			if j+1 == len(view) {
				return dst
			}
			next, _ := continuation(view, j+1)
			j = next + 1
		default:
			dst, j = appendEscape(dst, view, raw, j)
		}
	}
}

// appendEscape appends what the escape at view[j] stands for (Lex has
// checked it) and returns the index after it.
func appendEscape(dst []byte, view, raw string, j int) ([]byte, int) {
	switch c := view[j+1]; {
	case c == 'u' || c == 'U':
		cp, n, _ := unicodeEscape(view, j)
		if isSurrogateFirst(cp) {
			lo, m, _ := unicodeEscape(view, j+n)
			cp, n = surrogatePair(cp, lo), n+m
		}
		return utf8.AppendRune(dst, cp), j + n
	case c == 'x' && byteClass[peek(view, j+2)]&bHex != 0:
		n := 3
		if byteClass[peek(view, j+3)]&bHex != 0 {
			n = 4
		}
		return append(dst, byte(hexValue(view[j+2:j+n]))), j + n
	case c >= '0' && c <= '7':
		n, v := 1, 0
		for n < 4 && peek(view, j+n) >= '0' && peek(view, j+n) <= '7' {
			v = v*8 + int(view[j+n]-'0')
			n++
		}
		return append(dst, byte(v)), j + n
	}
	// {xeescape}: unescape_single_char; any other byte stands for itself
	// (in a client-only encoding, the first byte of a character).
	b := raw[j+1]
	switch b {
	case 'b':
		b = '\b'
	case 'f':
		b = '\f'
	case 'n':
		b = '\n'
	case 'r':
		b = '\r'
	case 't':
		b = '\t'
	case 'v':
		b = '\v'
	}
	return append(dst, b), j + 2
}

// undouble appends the body of a U& token, as lexed (to vdst) and as sent
// (to rdst): its quoted parts without quotes, the doubled quote undoubled.
// This is the value the scanner hands the grammar filter.
func undouble(vdst, rdst []byte, view, raw string, t Token) ([]byte, []byte) {
	quote := byte('\'')
	if t.Kind == TokenUnicodeIdent {
		quote = '"'
	}
	j := 3 // U&' or U&"
	for {
		k := strings.IndexByte(view[j:], quote) + j
		vdst, rdst = append(vdst, view[j:k]...), append(rdst, raw[j:k]...)
		if peek(view, k+1) == quote {
			vdst, rdst = append(vdst, quote), append(rdst, quote)
			j = k + 2
			continue
		}
		if k+1 == len(view) {
			return vdst, rdst
		}
		next, _ := continuation(view, k+1)
		j = next + 1
	}
}

// udeescape is str_udeescape (parser.c): in the value of a U& token, esc
// and esc is esc, esc and four hex digits or esc, "+" and six hex digits a
// code point (UTF-16 surrogates in pairs); any other esc is an error. It
// appends the result to dst and reports whether it holds a non-ASCII
// escape in a client that is not UTF8 (its value is then unknown).
func udeescape(dst, view, raw []byte, esc byte, pos int, utf8Client bool) ([]byte, bool, error) {
	unknown := false
	var pairFirst rune
	invalidPair := syntaxErr("invalid Unicode surrogate pair", pos)
	hexAt := func(i, n int) bool {
		for k := i; k < i+n; k++ {
			if k >= len(view) || byteClass[view[k]]&bHex == 0 {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(view); {
		if view[i] != esc {
			if pairFirst != 0 {
				return dst, false, invalidPair
			}
			dst = append(dst, raw[i])
			i++
			continue
		}
		var cp rune
		switch {
		case i+1 < len(view) && view[i+1] == esc:
			if pairFirst != 0 {
				return dst, false, invalidPair
			}
			dst = append(dst, esc)
			i += 2
			continue
		case hexAt(i+1, 4):
			cp = rune(hexValue(string(view[i+1 : i+5])))
			i += 5
		case i+1 < len(view) && view[i+1] == '+' && hexAt(i+2, 6):
			cp = rune(hexValue(string(view[i+2 : i+8])))
			i += 8
		default:
			return dst, false, syntaxErr("invalid Unicode escape", pos)
		}
		if !validCodepoint(cp) {
			return dst, false, syntaxErr("invalid Unicode escape value", pos)
		}
		switch {
		case pairFirst != 0 && isSurrogateSecond(cp):
			cp, pairFirst = surrogatePair(pairFirst, cp), 0
		case pairFirst != 0 || isSurrogateSecond(cp):
			return dst, false, invalidPair
		case isSurrogateFirst(cp):
			pairFirst = cp
			continue
		}
		if cp >= 0x80 && !utf8Client {
			unknown = true
		}
		dst = utf8.AppendRune(dst, cp)
	}
	if pairFirst != 0 {
		return dst, false, invalidPair
	}
	return dst, unknown, nil
}
