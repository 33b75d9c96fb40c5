package phi

import (
	"bytes"
	"slices"

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
// numeric cannot hold. The lexer is in jsonb_lex.go.

// maxJSONDepth bounds nesting. PostgreSQL's limit is its stack
// (max_stack_depth), which the proxy cannot know: deeper documents are
// refused rather than guessed at.
const maxJSONDepth = 1000

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
