package rewrite

import (
	"fmt"
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
// each function below says which rules it stands for and how it resolves
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

// TokenKind is the class of a token, mapping onto the server's token codes
// (gram.y) where tokens differ in boundaries or meaning. Keywords are
// TokenIdent: the scanner ends them exactly where it ends identifiers.
type TokenKind uint8

// Token kinds.
const (
	TokenInvalid       TokenKind = iota
	TokenIdent                   // identifier or keyword (IDENT, keywords); "N" before a string (NCHAR)
	TokenQuotedIdent             // "…" (IDENT)
	TokenUnicodeIdent            // U&"…" (UIDENT)
	TokenString                  // '…', E'…', $tag$…$tag$, with continuations (SCONST)
	TokenUnicodeString           // U&'…' (USCONST)
	TokenBitString               // B'…' (BCONST)
	TokenHexString               // X'…' (XCONST)
	TokenInteger                 // integer fitting int32 (ICONST)
	TokenFloat                   // other numbers (FCONST)
	TokenParam                   // $n (PARAM)
	TokenOp                      // operator (Op)
	TokenTypecast                // ::
	TokenDotDot                  // ..
	TokenColonEquals             // :=
	TokenEqualsGreater           // =>
	TokenLessEquals              // <=
	TokenGreaterEquals           // >=
	TokenNotEquals               // <> or !=
	TokenChar                    // one byte returned as itself: {self} characters and {other}
	TokenLineComment             // -- to the end of the line
	TokenBlockComment            // /* … */, nested
)

var tokenKindNames = [...]string{"Invalid", "Ident", "QuotedIdent", "UnicodeIdent", "String", "UnicodeString", "BitString", "HexString",
	"Integer", "Float", "Param", "Op", "Typecast", "DotDot", "ColonEquals", "EqualsGreater", "LessEquals", "GreaterEquals",
	"NotEquals", "Char", "LineComment", "BlockComment"}

func (k TokenKind) String() string {
	if int(k) < len(tokenKindNames) {
		return tokenKindNames[k]
	}
	return fmt.Sprintf("TokenKind(%d)", k)
}

// Token is one token of a text: its kind and byte offsets.
type Token struct {
	Kind       TokenKind
	form       strForm // string constants: the scan.l state of their body
	flags      tokFlags
	esc        byte // U& constants: their escape character (UESCAPE)
	Start, End int  // src[Start:End] is the token
}

// strForm is the scan.l state a string constant's body is read in.
type strForm uint8

const (
	formNone     strForm = iota
	formStandard         // <xq>: '' is a quote, nothing else is special
	formEscape           // <xe>: E'…', or '…' with standard_conforming_strings off
	formUnicode          // <xus>: U&'…', escapes decoded after UESCAPE
	formBits             // <xb>, <xh>: no doubled quotes
	formDollar           // <xdolq>: nothing is special
)

type tokFlags uint8

const (
	tokContinued    tokFlags = 1 << iota // the constant continues after a quote, whitespace with a newline, and a quote
	tokCommentGap                        // such whitespace holds a -- comment (pg_query's Scan splits it there)
	tokHighEscape                        // an octal or hex escape made a byte ≥ 0x80 (the server then verifies the encoding)
	tokValueUnknown                      // the value is not in the client's encoding without a conversion table
	tokDoubledQuote                      // a '…' constant in <xq> holds '' (its value is not its body as written)
)

// Continued reports whether the string constant was written as several
// quoted parts separated by whitespace holding a newline ('a'⏎'b').
func (t Token) Continued() bool { return t.flags&tokContinued != 0 }

// Standard reports whether a TokenString is a standard '…' constant (not
// E'…' nor dollar-quoted): the form whose backslashes mean something else
// when standard_conforming_strings is off.
func (t Token) Standard() bool { return t.Kind == TokenString && t.form == formStandard }

// LexError is a text the server refuses while reading it, before running
// any of it. Message is the server's, without the text it quotes.
type LexError struct {
	Code    string // the SQLSTATE the server reports
	Message string
	Pos     int // byte offset of the construct at fault
}

func (e *LexError) Error() string {
	return fmt.Sprintf("%s at byte %d (SQLSTATE %s)", e.Message, e.Pos, e.Code)
}

func syntaxErr(msg string, pos int) *LexError {
	return &LexError{Code: CodeSyntaxError, Message: msg, Pos: pos}
}

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

// lineComment is {comment}: "--" to the next newline, which it leaves.
func lineComment(s string, i int) Token {
	end := len(s)
	if k := strings.IndexAny(s[i+2:], "\n\r"); k >= 0 {
		end = i + 2 + k
	}
	return Token{Kind: TokenLineComment, Start: i, End: end}
}

// blockComment is {xcstart} and the <xc> state: comments nest, each "/*"
// opens one and each {xcstop} (\*+\/) closes one. {xcstart} also matches
// the operator characters after "/*" so that it beats {operator}, but
// gives them back (yyless(2)), so only "/*" itself counts.
func blockComment(s string, i int) (Token, error) {
	depth := 0
	for j := i + 2; j < len(s); {
		switch s[j] {
		case '/':
			if peek(s, j+1) == '*' {
				depth++
				j += 2
				continue
			}
			j++
		case '*':
			k := j + 1
			for k < len(s) && s[k] == '*' {
				k++
			}
			if peek(s, k) != '/' {
				j = k
				continue
			}
			if depth == 0 {
				return Token{Kind: TokenBlockComment, Start: i, End: k + 1}, nil
			}
			depth--
			j = k + 1
		default:
			j++
		}
	}
	return Token{}, syntaxErr("unterminated /* comment", i)
}

// word is a token starting with a letter: the prefixed constants B'…'
// X'…' E'…' N'…' U&'…' U&"…" ({xbstart} {xhstart} {xestart} {xnstart} {xusstart}
// {xuistart}, two or three characters, longer than the identifier they
// start with), {xufailed} (U& alone: the identifier U) or {identifier}.
func (lx *lexer) word(i int) (Token, error) {
	s := lx.s
	c := s[i]
	if peek(s, i+1) == '\'' {
		switch c {
		case 'b', 'B':
			return lx.quoted(i, i+2, TokenBitString, formBits)
		case 'x', 'X':
			return lx.quoted(i, i+2, TokenHexString, formBits)
		case 'e', 'E':
			return lx.quoted(i, i+2, TokenString, formEscape)
		case 'n', 'N':
			// {xnstart} returns the keyword NCHAR for the N alone
			// (yyless(1)); the quote then starts an ordinary string.
			return Token{Kind: TokenIdent, Start: i, End: i + 1}, nil
		}
	}
	if (c == 'u' || c == 'U') && peek(s, i+1) == '&' {
		switch peek(s, i+2) {
		case '\'':
			if lx.o.StandardStringsOff {
				return Token{}, &LexError{Code: CodeFeatureNotSupported, Message: "unsafe use of string constant with Unicode escapes", Pos: i}
			}
			lx.unicode = true
			t, err := lx.quoted(i, i+3, TokenUnicodeString, formUnicode)
			t.esc = '\\' // unless UESCAPE follows (unicodeEscapes)
			return t, err
		case '"':
			lx.unicode = true
			t, err := quotedIdent(s, i, i+3, TokenUnicodeIdent)
			t.esc = '\\'
			return t, err
		}
		return Token{Kind: TokenIdent, Start: i, End: i + 1}, nil
	}
	j := i + 1
	for j < len(s) && byteClass[s[j]]&bIdentCont != 0 {
		j++
	}
	return Token{Kind: TokenIdent, Start: i, End: j}, nil
}

// operator is {operator} ({op_chars}+) with its action's corrections, and
// the fixed two-character tokens it ties with (=> <= >= <> !=, listed
// earlier in scan.l, so they win a tie): the operator stops before an
// embedded "/*" or "--" (a comment start), and loses trailing + and -
// unless it holds one of ~ ! @ # ^ & | ` ? %, so that "=-" is "=" and "-"
// as SQL requires. What is left of one {self} character is that
// character; of two, the fixed token it spells.
func operator(s string, i int) (Token, error) {
	j := i
	for j < len(s) && byteClass[s[j]]&bOpChar != 0 {
		j++
	}
	op := s[i:j]
	n := len(op)
	if k := strings.Index(op, "/*"); k >= 0 {
		n = k
	}
	if k := strings.Index(op[:n], "--"); k >= 0 {
		n = k
	}
	if n > 1 && (op[n-1] == '+' || op[n-1] == '-') && !strings.ContainsAny(op[:n-1], "~!@#^&|`?%") {
		for n > 1 && (op[n-1] == '+' || op[n-1] == '-') {
			n--
		}
	}
	t := Token{Kind: TokenOp, Start: i, End: i + n}
	switch {
	case n == 1 && byteClass[op[0]]&bSelf != 0:
		t.Kind = TokenChar
	case n == 2:
		switch op[:2] {
		case "=>":
			t.Kind = TokenEqualsGreater
		case "<=":
			t.Kind = TokenLessEquals
		case ">=":
			t.Kind = TokenGreaterEquals
		case "<>", "!=":
			t.Kind = TokenNotEquals
		}
	case n >= 64: // NAMEDATALEN
		return Token{}, syntaxErr("operator too long", i)
	}
	return t, nil
}

// dollar is a token starting with "$": {param} ($ and digits; no
// underscores, and in PostgreSQL 17 no {param_junk}: "$1abc" is $1 and
// abc), {dolqdelim} ($tag$ opening a dollar-quoted string), or
// {dolqfailed} and {other}: the "$" alone, as itself.
func (lx *lexer) dollar(i int) (Token, error) {
	s := lx.s
	j := i + 1
	if byteClass[peek(s, j)]&bDigit != 0 {
		for j < len(s) && byteClass[s[j]]&bDigit != 0 {
			j++
		}
		return Token{Kind: TokenParam, Start: i, End: j}, nil
	}
	if byteClass[peek(s, j)]&bIdentStart != 0 {
		j++
		for j < len(s) && byteClass[s[j]]&bDolqCont != 0 {
			j++
		}
	}
	if peek(s, j) != '$' {
		return Token{Kind: TokenChar, Start: i, End: i + 1}, nil
	}
	delim := s[i : j+1]
	if cl := lx.o.Encoding.class(); cl != classUTF8 && cl != classSingleByte && strings.IndexFunc(delim, func(r rune) bool { return r >= 0x80 }) >= 0 {
		// Two tags that differ in the client's bytes may be one tag
		// after the server's conversion to UTF8 (see lex_encoding.go).
		return Token{}, &LexError{Code: CodeFeatureNotSupported, Message: "a dollar-quote tag with non-ASCII characters cannot be lexed exactly in client_encoding " + lx.o.Encoding.String(), Pos: i}
	}
	// In <xdolq> flex tries {dolqdelim} at every "$" (a longer one that
	// does not match gives back its last "$"), so the string ends at the
	// first occurrence of the opening delimiter.
	k := strings.Index(s[j+1:], delim)
	if k < 0 {
		return Token{}, syntaxErr("unterminated dollar-quoted string", i)
	}
	return Token{Kind: TokenString, form: formDollar, Start: i, End: j + 1 + k + len(delim)}, nil
}

// quotedIdent is {xdstart} or {xuistart} and the <xd>/<xui> states: ""
// is a quote; the identifier may not be empty.
func quotedIdent(s string, start, body int, kind TokenKind) (Token, error) {
	for j := body; ; {
		k := strings.IndexByte(s[j:], '"')
		if k < 0 {
			return Token{}, syntaxErr("unterminated quoted identifier", start)
		}
		k += j
		if peek(s, k+1) == '"' {
			j = k + 2
			continue
		}
		if k == body {
			return Token{}, syntaxErr("zero-length delimited identifier", start)
		}
		return Token{Kind: kind, Start: start, End: k + 1}, nil
	}
}
