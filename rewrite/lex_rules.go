package rewrite

import "strings"

// scan.l's rules for comments, words, operators, "$" tokens and quoted identifiers.

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
