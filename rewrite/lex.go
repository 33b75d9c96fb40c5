package rewrite

import (
	"slices"
	"strings"
)

// This file is a Go transcription of PostgreSQL's scanner,
// src/backend/parser/scan.l of PostgreSQL 17 (the grammar pg_query v6
// carries), for finding token boundaries without cgo: the simple-protocol
// path lexes every text to find its string literals, and pg_query's Scan
// (cgo and protobuf) cost ~20 µs a statement there. pg_query stays the
// authority for parsing; this lexer only has to agree with the server on
// where each token starts and ends and what a string constant holds, under
// the session's settings (standard_conforming_strings, client_encoding,
// backslash_quote), which pg_query cannot be told.
//
// flex picks the longest match and, among equal lengths, the earliest rule;
// each function of the lexer says which rules it stands for and how it resolves
// them. Rules that only raise an error (the *fail and *_junk patterns) are
// errors here too: the server then refuses the whole query string before
// running any of it, because exec_simple_query parses the whole text first.
//
// Differences from pg_query's Scan, where the real server wins (the
// differential fuzz target FuzzLexMatchesScan skips them, the server test in
// integration/lexer_test.go covers them):
//
//   - pg_query returns "--" and "/* */" comments as tokens (a libpg_query
//     patch), which this lexer does too, but its patched whitespace rules no
//     longer let a "--" comment sit in the whitespace that continues a
//     string literal: for the server 'a' -- c⏎'b' is the one constant 'ab'.
//   - PostgreSQL 15 and earlier reject what PostgreSQL 16 added to the
//     scanner (\v as whitespace, 0x/0o/0b integers, underscores in numbers,
//     $1 followed directly by letters); where they reject, they run nothing,
//     so lexing as PostgreSQL 17 never puts a boundary where an older server
//     would execute something else.

// Lex appends the tokens of src, a query string as a client sends it, read
// under the settings o, to dst and returns it; or an error where the server
// would refuse the text. It does not allocate once dst has room, except
// for a copy of the text in a client-only encoding (SJIS, BIG5, …). String
// values are decoded on demand by AppendValue.
func Lex(dst []Token, src string, o LexOptions) ([]Token, error) {
	first := len(dst)
	if i := strings.IndexByte(src, 0); i >= 0 {
		// A Query message is a C string; the server refuses one with a
		// NUL inside as a malformed message.
		return dst, &LexError{Code: "08P01", Message: "NUL byte in statement text", Pos: i}
	}
	s, err := checkText(src, o.Encoding)
	if err != nil {
		return dst, err
	}
	lx := lexer{s: s, src: src, o: o}
	if dst, err = lx.tokens(dst); err != nil {
		return dst[:first], err
	}
	if o.pgQueryScan || !lx.unicode {
		return dst, nil
	}
	if err := lx.unicodeEscapes(dst[first:]); err != nil {
		return dst[:first], err
	}
	return dst, nil
}

// lexer is the state of one Lex call.
type lexer struct {
	s   string // the text lexed: src, or its shadow in a client-only encoding (shadowOf)
	src string // the client's bytes
	o   LexOptions
	// unicode: a U&'…' or U&"…" token was read (unicodeEscapes has work).
	unicode bool
}

// Byte classes of scan.l's character sets.
const (
	bSpace      = 1 << iota // {space}: [ \t\n\r\f\v] (\v since PostgreSQL 16)
	bIdentStart             // {ident_start}, {dolq_start}: [A-Za-z\200-\377_]
	bIdentCont              // {ident_cont}: [A-Za-z\200-\377_0-9\$]
	bDolqCont               // {dolq_cont}: [A-Za-z\200-\377_0-9]
	bDigit                  // [0-9]
	bHex                    // [0-9A-Fa-f]
	bOpChar                 // {op_chars}: [~!@#^&|`?+\-*/%<>=]
	bSelf                   // {self}: [,()\[\].;:+\-*/%^<>=]
)

var byteClass = func() (t [256]uint8) {
	for _, c := range []byte(" \t\n\r\f\v") {
		t[c] |= bSpace
	}
	for c := 0; c < 256; c++ {
		letter := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= 0x80 || c == '_'
		digit := c >= '0' && c <= '9'
		if letter {
			t[c] |= bIdentStart | bIdentCont | bDolqCont
		}
		if digit {
			t[c] |= bDigit | bHex | bIdentCont | bDolqCont
		}
		if c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f' {
			t[c] |= bHex
		}
	}
	t['$'] |= bIdentCont
	for _, c := range []byte("~!@#^&|`?+-*/%<>=") {
		t[c] |= bOpChar
	}
	for _, c := range []byte(",()[].;:+-*/%^<>=") {
		t[c] |= bSelf
	}
	return t
}()

// peek returns s[i], or 0 past the end (the text holds no NUL).
func peek(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

// tokens appends the tokens of lx.s to dst: at each position, skipping
// {whitespace}, the longest match of scan.l's INITIAL rules. The tokens
// most texts are made of (words, single characters, one-character
// operators) are read here; the others by token.
func (lx *lexer) tokens(dst []Token) ([]Token, error) {
	s := lx.s
	// Tokens are written at dst[n], the slice kept at its capacity: the
	// length stays in a register (append would store it each time).
	n := len(dst)
	dst = dst[:cap(dst)]
	for i := 0; i < len(s); {
		if n == len(dst) {
			dst = slices.Grow(dst, 16)
			dst = dst[:cap(dst)]
		}
		c := s[i]
		switch startClass[c] {
		case startSpace:
			i++
			continue
		case startWord:
			// A letter before a quote or "&" may start a prefixed
			// constant or U&"…": token reads those.
			if b := peek(s, i+1); b != '\'' && b != '&' {
				j := i + 1
				for j < len(s) && byteClass[s[j]]&bIdentCont != 0 {
					j++
				}
				dst[n] = Token{Kind: TokenIdent, Start: i, End: j}
				n++
				i = j
				continue
			}
		case startQuote:
			// A '…' constant in <xq> (standard_conforming_strings on)
			// that no other part continues.
			if !lx.o.StandardStringsOff {
				if k, doubled := standardBody(s, i+1); k >= 0 {
					if next, _ := continuation(s, k+1); next < 0 {
						dst[n] = Token{Kind: TokenString, form: formStandard, Start: i, End: k + 1}
						if doubled {
							dst[n].flags = tokDoubledQuote
						}
						n++
						i = k + 1
						continue
					}
				}
			}
		case startSelf:
			dst[n] = Token{Kind: TokenChar, Start: i, End: i + 1}
			n++
			i++
			continue
		case startOp:
			// One operator character alone is itself (a {self} one)
			// or an operator; with others after it, token reads the
			// longest operator and the comments that may start in it.
			if byteClass[peek(s, i+1)]&bOpChar == 0 {
				k := TokenOp
				if byteClass[c]&bSelf != 0 {
					k = TokenChar
				}
				dst[n] = Token{Kind: k, Start: i, End: i + 1}
				n++
				i++
				continue
			}
		}
		t, err := lx.token(i)
		if err == nil && t.flags&tokHighEscape != 0 {
			err = lx.verifyEscapes(t)
		}
		if err != nil {
			return dst[:n], err
		}
		dst[n] = t
		n++
		i = t.End
	}
	return dst[:n], nil
}

// What a token starting with a byte may be, for tokens.
const (
	startOther = iota // anything else: token decides
	startSpace        // {space}
	startWord         // {ident_start}: an identifier, unless a prefixed constant
	startSelf         // , ( ) [ ] ; and {other} bytes: the byte itself
	startOp           // {op_chars}
	startQuote        // '
)

var startClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch b := byteClass[c]; {
		case b&bSpace != 0:
			t[c] = startSpace
		case b&bIdentStart != 0:
			t[c] = startWord
		case c == '\'':
			t[c] = startQuote
		case c == '-' || c == '/': // they may start a comment
		case b&bOpChar != 0:
			t[c] = startOp
		case c == '\'' || c == '"' || c == '$' || c == '.' || c == ':' || b&bDigit != 0 || c == 0:
		default:
			t[c] = startSelf
		}
	}
	return t
}()

// token reads the token at s[i], which is not whitespace.
func (lx *lexer) token(i int) (Token, error) {
	s := lx.s
	switch c := s[i]; {
	case c == '-' && peek(s, i+1) == '-':
		return lineComment(s, i), nil
	case c == '/' && peek(s, i+1) == '*':
		return blockComment(s, i)
	case c == '\'':
		form := formStandard
		if lx.o.StandardStringsOff {
			form = formEscape
		}
		return lx.quoted(i, i+1, TokenString, form)
	case c == '"':
		return quotedIdent(s, i, i+1, TokenQuotedIdent)
	case c == '$':
		return lx.dollar(i)
	case byteClass[c]&bDigit != 0 || c == '.' && byteClass[peek(s, i+1)]&bDigit != 0:
		return number(s, i)
	case byteClass[c]&bIdentStart != 0:
		return lx.word(i)
	case c == ':':
		switch peek(s, i+1) {
		case ':':
			return Token{Kind: TokenTypecast, Start: i, End: i + 2}, nil
		case '=':
			return Token{Kind: TokenColonEquals, Start: i, End: i + 2}, nil
		}
		return Token{Kind: TokenChar, Start: i, End: i + 1}, nil
	case c == '.':
		if peek(s, i+1) == '.' {
			return Token{Kind: TokenDotDot, Start: i, End: i + 2}, nil
		}
		return Token{Kind: TokenChar, Start: i, End: i + 1}, nil
	case byteClass[c]&bOpChar != 0:
		return operator(s, i)
	}
	// , ( ) [ ] ; and {other}: any other byte, as itself
	return Token{Kind: TokenChar, Start: i, End: i + 1}, nil
}
