package phi

import (
	"bytes"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
)

// The JSON lexer of src/common/jsonapi.c (json_lex, json_lex_number,
// json_lex_string) as PostgreSQL 15 runs it; the parser and the jsonb output
// are in jsonb.go.

type jsonTok uint8

const (
	jtEnd jsonTok = iota
	jtObjectStart
	jtObjectEnd
	jtArrayStart
	jtArrayEnd
	jtComma
	jtColon
	jtString
	jtNumber
	jtTrue
	jtFalse
	jtNull
)

// jsonKind is the kind of a jsonValue.
type jsonKind uint8

const (
	jvNull jsonKind = iota
	jvTrue
	jvFalse
	jvString
	jvNumber
	jvArray
	jvObject
)

// jsonValue is a parsed jsonb value.
type jsonValue struct {
	kind  jsonKind
	str   []byte // string value, or the number's numeric_out text
	elems []jsonValue
	pairs []jsonPair
}

type jsonPair struct {
	key   []byte
	value jsonValue
	order int
}

// jsonLexer is json_lex over one input. With deescape (jsonb) strings are
// de-escaped and checked as jsonb needs; without (json) only validated.
type jsonLexer struct {
	in       []byte
	pos      int
	deescape bool
	t        policy.LogicalType
	tok      jsonTok
	start    int    // the current token's first byte
	str      []byte // the current string token, de-escaped
}

func jsonSyntaxError(t policy.LogicalType) error {
	return &ValueError{Type: t, Code: pgerrcode.InvalidTextRepresentation, Msg: "invalid input syntax for type json"}
}

func isJSONAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c >= 0x80
}

// next lexes the next token.
func (l *jsonLexer) next() error {
	s := l.in
	i := l.pos
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	l.start = i
	if i >= len(s) {
		l.tok, l.pos = jtEnd, i
		return nil
	}
	switch c := s[i]; c {
	case '{':
		l.tok, l.pos = jtObjectStart, i+1
	case '}':
		l.tok, l.pos = jtObjectEnd, i+1
	case '[':
		l.tok, l.pos = jtArrayStart, i+1
	case ']':
		l.tok, l.pos = jtArrayEnd, i+1
	case ',':
		l.tok, l.pos = jtComma, i+1
	case ':':
		l.tok, l.pos = jtColon, i+1
	case '"':
		return l.lexString(i)
	case '-':
		return l.lexNumber(i + 1)
	default:
		if isDigit(c) {
			return l.lexNumber(i)
		}
		j := i
		for j < len(s) && isJSONAlnum(s[j]) {
			j++
		}
		switch string(s[i:j]) {
		case "true":
			l.tok = jtTrue
		case "false":
			l.tok = jtFalse
		case "null":
			l.tok = jtNull
		default:
			return jsonSyntaxError(l.t)
		}
		l.pos = j
	}
	return nil
}

// lexNumber is json_lex_number from s[i] (after a minus sign, if any).
func (l *jsonLexer) lexNumber(i int) error {
	s := l.in
	bad := false
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		bad = true
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			bad = true
		} else {
			for i < len(s) && isDigit(s[i]) {
				i++
			}
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(s[i]) {
			bad = true
		} else {
			for i < len(s) && isDigit(s[i]) {
				i++
			}
		}
	}
	for i < len(s) && isJSONAlnum(s[i]) {
		bad = true
		i++
	}
	if bad {
		return jsonSyntaxError(l.t)
	}
	l.tok, l.pos = jtNumber, i
	return nil
}

// lexString is json_lex_string from the quote at s[i].
func (l *jsonLexer) lexString(i int) error {
	s := l.in
	l.str = l.str[:0]
	hi := -1 // a high surrogate waiting for its low half
	for {
		i++
		if i >= len(s) {
			return jsonSyntaxError(l.t)
		}
		c := s[i]
		switch {
		case c == '"':
			if hi != -1 {
				return jsonSyntaxError(l.t) // low surrogate must follow
			}
			l.tok, l.pos = jtString, i+1
			return nil
		case c < 0x20:
			return jsonSyntaxError(l.t) // must be escaped
		case c == '\\':
			i++
			if i >= len(s) {
				return jsonSyntaxError(l.t)
			}
			if s[i] == 'u' {
				ch := 0
				for k := 0; k < 4; k++ {
					i++
					if i >= len(s) {
						return jsonSyntaxError(l.t)
					}
					h := s[i]
					switch {
					case '0' <= h && h <= '9':
						ch = ch*16 + int(h-'0')
					case 'a' <= h && h <= 'f':
						ch = ch*16 + int(h-'a') + 10
					case 'A' <= h && h <= 'F':
						ch = ch*16 + int(h-'A') + 10
					default:
						return jsonSyntaxError(l.t)
					}
				}
				if !l.deescape {
					continue
				}
				switch {
				case ch >= 0xD800 && ch <= 0xDBFF:
					if hi != -1 {
						return jsonSyntaxError(l.t)
					}
					hi = ch
					continue
				case ch >= 0xDC00 && ch <= 0xDFFF:
					if hi == -1 {
						return jsonSyntaxError(l.t)
					}
					ch = 0x10000 + (hi-0xD800)<<10 + (ch - 0xDC00)
					hi = -1
				}
				if hi != -1 {
					return jsonSyntaxError(l.t)
				}
				if ch == 0 {
					return &ValueError{Type: l.t, Code: pgerrcode.UntranslatableCharacter, Msg: "unsupported Unicode escape sequence"}
				}
				l.str = utf8.AppendRune(l.str, rune(ch))
				continue
			}
			if !l.deescape {
				if bytes.IndexByte([]byte("\"\\/bfnrt"), s[i]) < 0 {
					return jsonSyntaxError(l.t)
				}
				continue
			}
			if hi != -1 {
				return jsonSyntaxError(l.t)
			}
			switch s[i] {
			case '"', '\\', '/':
				l.str = append(l.str, s[i])
			case 'b':
				l.str = append(l.str, '\b')
			case 'f':
				l.str = append(l.str, '\f')
			case 'n':
				l.str = append(l.str, '\n')
			case 'r':
				l.str = append(l.str, '\r')
			case 't':
				l.str = append(l.str, '\t')
			default:
				return jsonSyntaxError(l.t)
			}
		default:
			if hi != -1 {
				return jsonSyntaxError(l.t)
			}
			if l.deescape {
				l.str = append(l.str, c)
			}
		}
	}
}
