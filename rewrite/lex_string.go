package rewrite

import (
	"strings"
	"unicode/utf8"
)

// quoted lexes a quoted string constant whose body starts at s[body]:
// scan.l's <xq> <xe> <xus> <xb> <xh> states and <xqs>, the lookahead after
// each closing quote for {quotecontinue}: whitespace holding a newline,
// then another quote, continues the same constant in the same state, so
// E'\n'⏎'\t' is one constant with two escapes.
func (lx *lexer) quoted(start, body int, kind TokenKind, form strForm) (Token, error) {
	t := Token{Kind: kind, form: form, Start: start}
	for j := body; ; {
		var k int
		if form == formEscape {
			var err error
			if k, err = lx.escapeBody(j, &t); err != nil {
				return Token{}, err
			}
		} else if form == formStandard {
			var doubled bool
			if k, doubled = standardBody(lx.s, j); doubled {
				t.flags |= tokDoubledQuote
			}
		} else {
			k = plainBody(lx.s, j, form != formBits)
		}
		if k < 0 {
			msg := "unterminated quoted string"
			switch kind {
			case TokenBitString:
				msg = "unterminated bit string literal"
			case TokenHexString:
				msg = "unterminated hexadecimal string literal"
			}
			return Token{}, syntaxErr(msg, start)
		}
		next, comment := continuation(lx.s, k+1)
		if comment && lx.o.pgQueryScan {
			next = -1
		}
		if next < 0 {
			t.End = k + 1
			return t, nil
		}
		t.flags |= tokContinued
		if comment {
			t.flags |= tokCommentGap
		}
		j = next + 1
	}
}

// plainBody returns the index of the quote closing a body of <xq>, <xus>
// (where {xqdouble}, two quotes, is a quote, and as the longer match beats the
// closing {quote}) or <xb>/<xh> (no doubling), or -1.
func plainBody(s string, j int, doubled bool) int {
	for {
		k := strings.IndexByte(s[j:], '\'')
		if k < 0 {
			return -1
		}
		k += j
		if doubled && peek(s, k+1) == '\'' {
			j = k + 2
			continue
		}
		return k
	}
}

// standardBody is plainBody of an <xq> body, which also reports whether
// the body holds a doubled quote.
func standardBody(s string, j int) (k int, doubled bool) {
	for {
		k := strings.IndexByte(s[j:], '\'')
		if k < 0 {
			return -1, doubled
		}
		k += j
		if peek(s, k+1) != '\'' {
			return k, doubled
		}
		doubled = true
		j = k + 2
	}
}

// continuation looks at s[p:], just after a closing quote, for
// {quotecontinue} = {whitespace_with_newline}{quote}: spaces and "--"
// comments (each running to a newline) holding at least one newline
// (\n or \r), then a quote. It returns the index of that quote, or -1, and
// whether a comment was skipped.
func continuation(s string, p int) (int, bool) {
	newline, comment := false, false
	for p < len(s) {
		switch c := s[p]; {
		case c == '\n' || c == '\r':
			newline = true
			p++
		case byteClass[c]&bSpace != 0:
			p++
		case c == '-' && peek(s, p+1) == '-':
			comment = true
			k := strings.IndexAny(s[p:], "\n\r")
			if k < 0 {
				return -1, false
			}
			p += k
		case c == '\'' && newline:
			return p, comment
		default:
			return -1, false
		}
	}
	return -1, false
}

// escapeBody scans an <xe> body from s[j] and returns the index of its
// closing quote, or -1; it checks each escape as scan.l does and records
// in t what the value needs.
func (lx *lexer) escapeBody(j int, t *Token) (int, error) {
	s := lx.s
	for {
		k := strings.IndexAny(s[j:], `'\`)
		if k < 0 {
			return -1, nil
		}
		j += k
		if s[j] == '\'' {
			if peek(s, j+1) == '\'' {
				j += 2
				continue
			}
			return j, nil
		}
		n, err := lx.escape(j, t)
		if err != nil {
			return 0, err
		}
		j += n
	}
}

// escape checks the backslash escape at s[j] of an <xe> body and returns
// its length: {xeunicode} \uXXXX or \UXXXXXXXX (a UTF-16 high surrogate
// must be followed by the low one, state <xeu>), {xeunicodefail} (an error,
// beating {xeescape} by coming first), {xehexesc} \x with one or two hex
// digits, {xeoctesc} one to three octal digits, {xeescape} a backslash and
// any one byte. A \' is refused by backslash_quote = off, and by
// safe_encoding in a client-only encoding, where a trailing byte 0x5c
// could have passed for a backslash in a client that does not know the
// encoding.
func (lx *lexer) escape(j int, t *Token) (int, error) {
	s := lx.s
	utf8Client := lx.o.Encoding.class() == classUTF8
	switch c := peek(s, j+1); {
	case c == 0:
		return 1, nil // <xe>. before the end: unterminated
	case c == 'u' || c == 'U':
		cp, n, err := unicodeEscape(s, j)
		if err != nil {
			return 0, err
		}
		if isSurrogateFirst(cp) {
			if peek(s, j+n) != '\\' || (peek(s, j+n+1) != 'u' && peek(s, j+n+1) != 'U') {
				return 0, syntaxErr("invalid Unicode surrogate pair", j+n)
			}
			lo, m, err := unicodeEscape(s, j+n)
			if err != nil {
				return 0, err
			}
			if !isSurrogateSecond(lo) {
				return 0, syntaxErr("invalid Unicode surrogate pair", j+n)
			}
			cp, n = surrogatePair(cp, lo), n+m
		} else if isSurrogateSecond(cp) {
			return 0, syntaxErr("invalid Unicode surrogate pair", j)
		}
		if !validCodepoint(cp) {
			return 0, syntaxErr("invalid Unicode escape value", j)
		}
		if cp >= 0x80 && !utf8Client {
			t.flags |= tokValueUnknown
		}
		return n, nil
	case c == 'x' && byteClass[peek(s, j+2)]&bHex != 0:
		n := 3
		if byteClass[peek(s, j+3)]&bHex != 0 {
			n = 4
		}
		return n, lx.escapedByte(byte(hexValue(s[j+2:j+n])), j, t)
	case c >= '0' && c <= '7':
		n := 2
		for n < 4 && peek(s, j+n) >= '0' && peek(s, j+n) <= '7' {
			n++
		}
		v := 0
		for _, d := range s[j+1 : j+n] {
			v = v*8 + int(d-'0')
		}
		return n, lx.escapedByte(byte(v), j, t)
	case c == '\'':
		if lx.o.BackslashQuote == BackslashQuoteOff || lx.o.BackslashQuote == BackslashQuoteSafeEncoding && lx.o.Encoding.clientOnly() {
			return 0, &LexError{Code: "22P06", Message: `unsafe use of \' in a string literal`, Pos: j}
		}
	}
	return 2, nil
}

// escapedByte records a byte made by an octal or hex escape. The server
// verifies the whole constant in the database encoding when one is NUL or
// ≥ 0x80 (saw_non_ascii, pg_verifymbstr): NUL always fails; in a UTF8
// client Lex verifies the value (verifyEscapes), in others the bytes are
// UTF8 mixed with the client's and the value is unknown.
func (lx *lexer) escapedByte(b byte, j int, t *Token) error {
	switch {
	case b == 0:
		return &LexError{Code: "22021", Message: `invalid byte sequence for encoding "UTF8": 0x00`, Pos: j}
	case b >= 0x80 && lx.o.Encoding.class() == classUTF8:
		t.flags |= tokHighEscape
	case b >= 0x80:
		t.flags |= tokValueUnknown
	}
	return nil
}

// unicodeEscape reads \uXXXX or \UXXXXXXXX at s[j]; anything shorter is
// {xeunicodefail}.
func unicodeEscape(s string, j int) (cp rune, n int, err error) {
	digits := 4
	if s[j+1] == 'U' {
		digits = 8
	}
	for k := 0; k < digits; k++ {
		if byteClass[peek(s, j+2+k)]&bHex == 0 {
			return 0, 0, &LexError{Code: "22025", Message: "invalid Unicode escape", Pos: j}
		}
	}
	v := hexValue(s[j+2 : j+2+digits])
	if v > utf8.MaxRune {
		v = utf8.MaxRune + 1 // invalid however large
	}
	return rune(v), 2 + digits, nil
}

func hexValue(h string) uint32 {
	var v uint32
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		v = v<<4 | uint32(c)
	}
	return v
}

func isSurrogateFirst(c rune) bool  { return c >= 0xd800 && c <= 0xdbff }
func isSurrogateSecond(c rune) bool { return c >= 0xdc00 && c <= 0xdfff }
func surrogatePair(hi, lo rune) rune {
	return ((hi & 0x3ff) << 10) + 0x10000 + (lo & 0x3ff)
}

// validCodepoint is is_valid_unicode_codepoint: U+0000 is not allowed.
func validCodepoint(c rune) bool { return c > 0 && c <= utf8.MaxRune }

// verifyEscapes is pg_verifymbstr on the value of an E'…' constant whose
// escapes made bytes ≥ 0x80, in a UTF8 client.
func (lx *lexer) verifyEscapes(t Token) error {
	var buf [256]byte
	v, err := decodeString(buf[:0], lx.s[t.Start:t.End], lx.src[t.Start:t.End], t, lx.o)
	if err != nil {
		return err
	}
	if !utf8.Valid(v) {
		return &LexError{Code: "22021", Message: `invalid byte sequence for encoding "UTF8"`, Pos: t.Start}
	}
	return nil
}

// unicodeEscapes does for U&'…' and U&"…" what the server's grammar filter
// (base_yylex in parser.c) does: an optional UESCAPE and a string constant
// of one character give the escape character (check_uescapechar), and the
// body is de-escaped with it (str_udeescape), which can fail. Comments
// between these tokens are not tokens to the server. The escape string
// must be one byte in the database encoding: a non-ASCII character never
// is in UTF8.
func (lx *lexer) unicodeEscapes(toks []Token) error {
	for i := range toks {
		t := &toks[i]
		if t.Kind != TokenUnicodeString && t.Kind != TokenUnicodeIdent {
			continue
		}
		t.esc = '\\'
		n := nextToken(toks, i+1)
		if n < len(toks) && toks[n].Kind == TokenIdent && strings.EqualFold(lx.src[toks[n].Start:toks[n].End], "uescape") {
			m := nextToken(toks, n+1)
			if m >= len(toks) || toks[m].Kind != TokenString {
				return syntaxErr("UESCAPE must be followed by a simple string literal", toks[n].Start)
			}
			var buf [8]byte
			e, err := decodeString(buf[:0], lx.s[toks[m].Start:toks[m].End], lx.src[toks[m].Start:toks[m].End], toks[m], lx.o)
			if err != nil || len(e) != 1 || e[0] >= 0x80 || !uescapeAllowed(e[0]) {
				return syntaxErr("invalid Unicode escape character", toks[m].Start)
			}
			t.esc = e[0]
		}
		unknown, err := lx.checkUnicode(*t)
		if err != nil {
			return err
		}
		if unknown {
			t.flags |= tokValueUnknown
		}
	}
	return nil
}

// nextToken returns the index of the first token at or after i that is
// not a comment.
func nextToken(toks []Token, i int) int {
	for i < len(toks) && (toks[i].Kind == TokenLineComment || toks[i].Kind == TokenBlockComment) {
		i++
	}
	return i
}

// uescapeAllowed is check_uescapechar: not a hex digit, +, a quote or
// whitespace.
func uescapeAllowed(c byte) bool {
	return byteClass[c]&(bHex|bSpace) == 0 && c != '+' && c != '\'' && c != '"'
}

// checkUnicode de-escapes a U& token to see whether the server accepts it
// and whether its value is known in the client's encoding.
func (lx *lexer) checkUnicode(t Token) (unknown bool, err error) {
	var vbuf, rbuf [256]byte
	view, raw := undouble(vbuf[:0], rbuf[:0], lx.s[t.Start:t.End], lx.src[t.Start:t.End], t)
	var out [256]byte
	_, unknown, err = udeescape(out[:0], view, raw, t.esc, t.Start, lx.o.Encoding.class() == classUTF8)
	return unknown, err
}
