package rewrite

import (
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// literal is one string literal of a simple-protocol text.
type literal struct {
	raw   string // as written, quotes included
	value string // its value, in the client's encoding
	start int    // byte offset of raw in the text
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

// tokenPool holds token slices for shapeWith, so that lexing costs no
// allocation. Slices grown past maxPooledTokens by a huge text are left to
// the garbage collector.
const maxPooledTokens = 8192

var tokenPool = sync.Pool{New: func() any { s := make([]Token, 0, 256); return &s }}

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
	pooled := tokenPool.Get().(*[]Token)
	toks, err := Lex((*pooled)[:0], sql, o)
	defer func() {
		if cap(toks) <= maxPooledTokens {
			*pooled = toks[:0]
			tokenPool.Put(pooled)
		}
	}()
	if err != nil {
		return simpleShape{}, err
	}
	def := o == LexOptions{}
	sh := simpleShape{textPortable: true, keyPortable: true}
	strs := 0
	for _, t := range toks {
		if t.Kind == TokenString {
			strs++
		}
	}
	if strs > 0 {
		sh.values = make([]literal, 0, strs)
	}
	var b strings.Builder
	b.Grow(len(sql))
	at, hasParam := 0, false
	for i, t := range toks {
		portable := def || portableToken(sql, t, o)
		sh.textPortable = sh.textPortable && portable
		if t.Kind == TokenParam {
			hasParam = true
		}
		v, isLit := literalValue(sql, toks, i, o)
		if !isLit {
			sh.keyPortable = sh.keyPortable && portable
			continue
		}
		sh.values = append(sh.values, literal{raw: sql[t.Start:t.End], value: v, start: t.Start})
		b.WriteString(sql[at:t.Start])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(len(sh.values)))
		at = t.End
	}
	if hasParam || len(sh.values) == 0 {
		sh.values = nil
		return sh, nil
	}
	b.WriteString(sql[at:])
	sh.key, sh.ok = b.String(), true
	return sh, nil
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
