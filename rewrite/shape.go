package rewrite

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// literal is one string literal of a simple-protocol text.
type literal struct {
	raw     string // as written, quotes included
	value   string // its value, in the client's encoding
	start   int    // byte offset of raw in the text
	doubled bool   // (templates) raw holds '', value does not yet say '
}

// simpleShape is a simple-protocol text read under the session's settings.
type simpleShape struct {
	// key is the text with each plain string literal in a value position
	// replaced by $1, $2, …; values are those literals.
	key    string
	values []literal
	// ok: the text has such literals and no $n of its own, so key can
	// stand for it.
	ok bool
	// textPortable and keyPortable report whether the text and the key
	// read the same under the server's default settings
	// (standard_conforming_strings on, UTF8), which is how pg_query reads
	// them: only then may they be analyzed, and be cache keys shared by
	// sessions with any settings.
	textPortable, keyPortable bool
}

// shapeBuf is the space a text's shape is built in: its tokens, its key
// and its literals. Sessions keep one (SimpleScratch); shapeWith takes one
// from a pool, so that building a shape costs no allocation but the key
// and literals it returns.
type shapeBuf struct {
	toks   []Token
	key    []byte
	values []literal
}

// Buffers grown past these sizes by a huge text are left to the garbage
// collector rather than kept for the next text.
const (
	maxPooledTokens   = 8192
	maxPooledKeyBytes = 64 << 10
)

// trim drops the buffers a huge text grew.
func (b *shapeBuf) trim() {
	if cap(b.toks) > maxPooledTokens {
		b.toks = nil
	}
	if cap(b.key) > maxPooledKeyBytes {
		b.key = nil
	}
	if cap(b.values) > maxPooledTokens {
		b.values = nil
	}
}

var shapePool = sync.Pool{New: func() any { return &shapeBuf{toks: make([]Token, 0, 256)} }}

// shapeOf returns the shape key of sql read with the default settings,
// or false when it has none (no literal to replace, a $n of its own, or
// text the lexer refuses).
func shapeOf(sql string) (key string, values []literal, ok bool) {
	sh, err := shapeWith(sql, LexOptions{})
	if err != nil || !sh.ok {
		return "", nil, false
	}
	return sh.key, sh.values, true
}

// shapeWith lexes sql under o and builds its shape; a *LexError when the
// server would refuse the text.
func shapeWith(sql string, o LexOptions) (simpleShape, error) {
	b := shapePool.Get().(*shapeBuf)
	defer func() {
		b.trim()
		shapePool.Put(b)
	}()
	sh, err := b.build(sql, o)
	if err != nil || !sh.ok {
		return sh, err
	}
	sh.key, sh.values = string(b.key), slices.Clone(b.values)
	return sh, nil
}

// build lexes sql under o and puts its shape key and literals in b (when
// the result's ok is true; its key and values are left empty, for the
// caller to take from b).
func (b *shapeBuf) build(sql string, o LexOptions) (simpleShape, error) {
	var err error
	b.key, b.values = b.key[:0], b.values[:0]
	if b.toks, err = Lex(b.toks[:0], sql, o); err != nil {
		return simpleShape{}, err
	}
	if o == (LexOptions{}) {
		return b.buildDefault(sql), nil
	}
	return b.buildSettings(sql, o), nil
}

// buildSettings is build's loop over b.toks, lexed under o.
func (b *shapeBuf) buildSettings(sql string, o LexOptions) simpleShape {
	toks := b.toks
	sh := simpleShape{textPortable: true, keyPortable: true}
	at, hasParam := 0, false
	for i := range toks {
		t := &toks[i]
		portable := portableToken(sql, *t, o)
		sh.textPortable = sh.textPortable && portable
		if t.Kind == TokenParam {
			hasParam = true
		}
		if t.Kind != TokenString {
			sh.keyPortable = sh.keyPortable && portable
			continue
		}
		v, isLit := literalValue(sql, toks, i, o)
		if !isLit {
			sh.keyPortable = sh.keyPortable && portable
			continue
		}
		b.values = append(b.values, literal{raw: sql[t.Start:t.End], value: v, start: t.Start})
		b.key = append(b.key, sql[at:t.Start]...)
		b.key = appendPlaceholder(b.key, len(b.values))
		at = t.End
	}
	if hasParam || len(b.values) == 0 {
		b.key, b.values = b.key[:0], b.values[:0]
		return sh
	}
	b.key = append(b.key, sql[at:]...)
	sh.ok = true
	return sh
}

// buildDefault is buildSettings for the default settings, in which every
// token is portable and every '…' constant is read in <xq>
// (FuzzShapeDefault compares them).
func (b *shapeBuf) buildDefault(sql string) simpleShape {
	sh := simpleShape{textPortable: true, keyPortable: true}
	toks := b.toks
	at := 0
	for i := range toks {
		switch t := &toks[i]; t.Kind {
		case TokenParam:
			b.key, b.values = b.key[:0], b.values[:0]
			return sh
		case TokenString:
			v, isLit := standardLiteral(sql, toks, i)
			if !isLit {
				continue
			}
			b.values = append(b.values, literal{raw: sql[t.Start:t.End], value: v, start: t.Start})
			b.key = append(b.key, sql[at:t.Start]...)
			b.key = appendPlaceholder(b.key, len(b.values))
			at = t.End
		}
	}
	if len(b.values) == 0 {
		return sh
	}
	b.key = append(b.key, sql[at:]...)
	sh.ok = true
	return sh
}

// appendPlaceholder appends $n to dst.
func appendPlaceholder(dst []byte, n int) []byte {
	dst = append(dst, '$')
	if n < 10 {
		return append(dst, byte('0'+n))
	}
	return strconv.AppendInt(dst, int64(n), 10)
}

// literalValue returns the value of toks[i] when it is a string literal
// the shape replaces by a parameter: a plain quoted string, not continued,
// in a value position, with a value known in the client's encoding.
// E'…', U&'…', dollar quoting and continued literals stay in the key.
func literalValue(sql string, toks []Token, i int, o LexOptions) (string, bool) {
	t := toks[i]
	if t.Kind != TokenString || t.Continued() || sql[t.Start] != '\'' || i == 0 || !valuePosition(sql, toks[i-1]) {
		return "", false
	}
	if i+1 < len(toks) && toks[i+1].Kind == TokenChar && (sql[toks[i+1].Start] == '.' || sql[toks[i+1].Start] == '[') {
		return "", false // $1.f and $1[1] parse, 'x'.f and 'x'[1] do not
	}
	if t.form == formStandard {
		// '' is the only escape: no allocation unless there is one.
		return strings.ReplaceAll(sql[t.Start+1:t.End-1], "''", "'"), true
	}
	v, err := AppendValue(nil, sql, t, o)
	if err != nil {
		return "", false
	}
	return string(v), true
}

// standardLiteral is literalValue with the default settings, in which a
// '…' constant is read in <xq> (formStandard).
func standardLiteral(sql string, toks []Token, i int) (string, bool) {
	t := &toks[i]
	if t.flags&tokContinued != 0 || sql[t.Start] != '\'' || i == 0 || !valueToken(sql, &toks[i-1]) {
		return "", false
	}
	if i+1 < len(toks) && toks[i+1].Kind == TokenChar && (sql[toks[i+1].Start] == '.' || sql[toks[i+1].Start] == '[') {
		return "", false // $1.f and $1[1] parse, 'x'.f and 'x'[1] do not
	}
	body := sql[t.Start+1 : t.End-1]
	if t.flags&tokDoubledQuote == 0 {
		return body, true
	}
	return strings.ReplaceAll(body, "''", "'"), true
}

// valueToken is valuePosition by the token's kind: "(", "," and "=" are
// one-character tokens, "<>" and "!=" TokenNotEquals.
func valueToken(sql string, prev *Token) bool {
	switch prev.Kind {
	case TokenChar:
		c := sql[prev.Start]
		return c == '(' || c == ',' || c == '='
	case TokenNotEquals:
		return true
	}
	return false
}

// valuePosition reports whether a literal after token prev stands where a
// parameter may stand with the same meaning: after "(", ",", or a
// comparison or assignment operator. After a type name (DATE '…') or a
// keyword (LIKE '…', INTERVAL '…') it stays a literal.
func valuePosition(sql string, prev Token) bool {
	switch sql[prev.Start:prev.End] {
	case "(", ",", "=", "<>", "!=":
		return true
	}
	return false
}

// portableToken reports whether t, read under o, reads the same under the
// default settings: in a client_encoding other than UTF8 it must be ASCII
// (pg_query reads UTF8; whitespace is always ASCII) and, if a string, have
// a value in the client's encoding (E'\xc3\xa9' is é in the server's
// UTF8: a plan's literal values are all in the client's encoding or it is
// refused), and with standard_conforming_strings off a '…' string (read
// like E'…') must hold no backslash.
func portableToken(sql string, t Token, o LexOptions) bool {
	text := sql[t.Start:t.End]
	if o.Encoding.class() != classUTF8 && (!isASCII(text) || t.flags&tokValueUnknown != 0) {
		return false
	}
	return !(t.Kind == TokenString && t.form == formEscape && text[0] == '\'' && strings.IndexByte(text, '\\') >= 0)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
