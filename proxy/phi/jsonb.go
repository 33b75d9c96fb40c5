package phi

import (
	"bytes"
	"slices"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
)

// This file reads JSON as PostgreSQL 15 does (the lexer and recursive
// descent parser of src/common/jsonapi.c) and writes jsonb as jsonb_out
// does (JsonbToCString): keys sorted by length then bytes, the last of
// duplicate keys kept, numbers as numeric_out prints them, strings
// de-escaped and escaped again with escape_json, ", " and ": " between
// items. Errors come in the order the server finds them, with its
// SQLSTATEs: 22P02 for syntax, 22P05 for \u0000, 22003 for a number
// numeric cannot hold.

// maxJSONDepth bounds nesting. PostgreSQL's limit is its stack
// (max_stack_depth), which the proxy cannot know: deeper documents are
// refused rather than guessed at.
const maxJSONDepth = 1000

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

// jsonParser is pg_parse_json with jsonb's semantic actions.
type jsonParser struct {
	l     jsonLexer
	depth int
}

// parseJSON parses a whole document. For json (deescape false) the value
// is not built, the text is only checked.
func parseJSON(in []byte, deescape bool, t policy.LogicalType) (jsonValue, error) {
	p := jsonParser{l: jsonLexer{in: in, deescape: deescape, t: t}}
	if err := p.l.next(); err != nil {
		return jsonValue{}, err
	}
	v, err := p.value()
	if err != nil {
		return jsonValue{}, err
	}
	if p.l.tok != jtEnd {
		return jsonValue{}, jsonSyntaxError(t)
	}
	return v, nil
}

func (p *jsonParser) value() (jsonValue, error) {
	switch p.l.tok {
	case jtObjectStart:
		return p.object()
	case jtArrayStart:
		return p.array()
	}
	return p.scalar()
}

// scalar is parse_scalar: the token after it is lexed before the value is
// converted (a number too large for numeric fails only then).
func (p *jsonParser) scalar() (jsonValue, error) {
	var v jsonValue
	switch p.l.tok {
	case jtString:
		v.kind = jvString
		if p.l.deescape {
			v.str = slices.Clone(p.l.str)
		}
	case jtNumber:
		v.kind = jvNumber
		v.str = p.l.in[p.l.start:p.l.pos]
	case jtTrue:
		v.kind = jvTrue
	case jtFalse:
		v.kind = jvFalse
	case jtNull:
		v.kind = jvNull
	default:
		return v, jsonSyntaxError(p.l.t)
	}
	if err := p.l.next(); err != nil {
		return v, err
	}
	if v.kind == jvNumber && p.l.deescape {
		n, err := parseNumeric(string(v.str), p.l.t)
		if err != nil {
			return v, err
		}
		v.str = n.appendText(nil)
	}
	return v, nil
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > maxJSONDepth {
		return &ValueError{Type: p.l.t, Code: pgerrcode.FeatureNotSupported,
			Msg: "JSON nested deeper than 1000 levels is refused: the server's limit depends on its stack"}
	}
	return nil
}

func (p *jsonParser) array() (jsonValue, error) {
	v := jsonValue{kind: jvArray}
	if err := p.enter(); err != nil {
		return v, err
	}
	defer func() { p.depth-- }()
	if err := p.l.next(); err != nil { // past '['
		return v, err
	}
	if p.l.tok == jtArrayEnd {
		return v, p.l.next()
	}
	for {
		e, err := p.value()
		if err != nil {
			return v, err
		}
		if p.l.deescape {
			v.elems = append(v.elems, e)
		}
		switch p.l.tok {
		case jtComma:
			if err := p.l.next(); err != nil {
				return v, err
			}
		case jtArrayEnd:
			return v, p.l.next()
		default:
			return v, jsonSyntaxError(p.l.t)
		}
	}
}

func (p *jsonParser) object() (jsonValue, error) {
	v := jsonValue{kind: jvObject}
	if err := p.enter(); err != nil {
		return v, err
	}
	defer func() { p.depth-- }()
	if err := p.l.next(); err != nil { // past '{'
		return v, err
	}
	if p.l.tok == jtObjectEnd {
		return v, p.l.next()
	}
	for {
		if p.l.tok != jtString {
			return v, jsonSyntaxError(p.l.t)
		}
		var key []byte
		if p.l.deescape {
			key = slices.Clone(p.l.str)
		}
		if err := p.l.next(); err != nil {
			return v, err
		}
		if p.l.tok != jtColon {
			return v, jsonSyntaxError(p.l.t)
		}
		if err := p.l.next(); err != nil {
			return v, err
		}
		e, err := p.value()
		if err != nil {
			return v, err
		}
		if p.l.deescape {
			v.pairs = append(v.pairs, jsonPair{key: key, value: e, order: len(v.pairs)})
		}
		switch p.l.tok {
		case jtComma:
			if err := p.l.next(); err != nil {
				return v, err
			}
		case jtObjectEnd:
			return v, p.l.next()
		default:
			return v, jsonSyntaxError(p.l.t)
		}
	}
}

// appendJSONB appends PostgreSQL's jsonb text for the JSON document src.
func appendJSONB(dst, src []byte, t policy.LogicalType) ([]byte, error) {
	v, err := parseJSON(src, true, t)
	if err != nil {
		return dst, err
	}
	return v.appendJSONB(dst), nil
}

// checkJSON validates src as json_in does (json keeps its text).
func checkJSON(src []byte, t policy.LogicalType) error {
	_, err := parseJSON(src, false, t)
	return err
}

// appendJSONB writes v as jsonb_out does.
func (v *jsonValue) appendJSONB(dst []byte) []byte {
	switch v.kind {
	case jvNull:
		return append(dst, "null"...)
	case jvTrue:
		return append(dst, "true"...)
	case jvFalse:
		return append(dst, "false"...)
	case jvNumber:
		return append(dst, v.str...)
	case jvString:
		return appendJSONString(dst, v.str)
	case jvArray:
		dst = append(dst, '[')
		for i := range v.elems {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = v.elems[i].appendJSONB(dst)
		}
		return append(dst, ']')
	}
	// uniqueifyJsonbObject: sorted by key length, then bytes; of equal
	// keys the last written is kept.
	pairs := v.pairs
	slices.SortFunc(pairs, func(a, b jsonPair) int {
		if len(a.key) != len(b.key) {
			return len(a.key) - len(b.key)
		}
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		return b.order - a.order
	})
	dst = append(dst, '{')
	first := true
	for i := range pairs {
		if i > 0 && bytes.Equal(pairs[i].key, pairs[i-1].key) {
			continue
		}
		if !first {
			dst = append(dst, ", "...)
		}
		first = false
		dst = appendJSONString(dst, pairs[i].key)
		dst = append(dst, ": "...)
		dst = pairs[i].value.appendJSONB(dst)
	}
	return append(dst, '}')
}

// appendJSONString is escape_json.
func appendJSONString(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch c {
		case '\b':
			dst = append(dst, `\b`...)
		case '\f':
			dst = append(dst, `\f`...)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		case '"':
			dst = append(dst, `\"`...)
		case '\\':
			dst = append(dst, `\\`...)
		default:
			if c < ' ' {
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			} else {
				dst = append(dst, c)
			}
		}
	}
	return append(dst, '"')
}

// normalizeNumbers drops the display scale of every number, for
// equalityKey: jsonb's = compares numbers as numeric values.
func (v *jsonValue) normalizeNumbers() {
	switch v.kind {
	case jvNumber:
		n, err := parseNumeric(string(v.str), policy.TypeJSONB)
		if err == nil {
			n.dscale = 0
			if n.exp < 0 {
				n.dscale = -n.exp
			}
			v.str = n.appendText(nil)
		}
	case jvArray:
		for i := range v.elems {
			v.elems[i].normalizeNumbers()
		}
	case jvObject:
		for i := range v.pairs {
			v.pairs[i].value.normalizeNumbers()
		}
	}
}
