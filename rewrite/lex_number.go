package rewrite

import "strings"

// number lexes a numeric constant at s[i] (a digit, or "." and a digit):
// scan.l's {decinteger} {hexinteger} {octinteger} {bininteger} {numeric}
// {real}, {numericfail} ("1..2" is 1, "..", 2), and the error rules
// {hexfail} {octfail} {binfail} {realfail} and {integer_junk}
// {numeric_junk} {real_junk}: a {decinteger}, {numeric} or {real} prefix
// followed by an {identifier}. A junk rule wins when it is longer than the
// longest valid match, which the identifier, running over digits,
// underscores, letters and "$", often makes it: "1e1$" is 1 and the
// identifier e1$, an error, while "1e+1$" is 1e+1 and "$"; "1_2$" is an
// error and "12$" is not.
func number(s string, i int) (Token, error) {
	if s[i] == '0' {
		base, what := 0, ""
		switch peek(s, i+1) {
		case 'x', 'X':
			base, what = 16, "hexadecimal"
		case 'o', 'O':
			base, what = 8, "octal"
		case 'b', 'B':
			base, what = 2, "binary"
		}
		if base != 0 {
			return basedInteger(s, i, base, what)
		}
	}
	junk := 0 // end of the longest junk match
	// digits notes a {decinteger} at s[from:to], whose prefixes followed
	// by an underscore, or which followed by a letter, start a junk match.
	digits := func(from, to int) {
		if strings.IndexByte(s[from:to], '_') >= 0 || byteClass[peek(s, to)]&bIdentStart != 0 {
			junk = max(junk, identRun(s, from))
		}
	}
	j, float := i, false // end of the longest valid match
	if s[i] != '.' {
		j = decEnd(s, i)
		digits(i, j)
		if peek(s, j) == '.' && peek(s, j+1) == '.' {
			// {numericfail}, longer than {numeric}: the integer, then
			// DOT_DOT.
			if junk > j+2 {
				return Token{}, syntaxErr("trailing junk after numeric literal", i)
			}
			return integerToken(s, i, j, 10), nil
		}
	}
	if peek(s, j) == '.' {
		float = true
		j++
		f := j
		if byteClass[peek(s, j)]&bDigit != 0 {
			j = decEnd(s, j)
		}
		digits(f, j)
	}
	if c := peek(s, j); c == 'e' || c == 'E' {
		k := j + 1
		sign := peek(s, k) == '+' || peek(s, k) == '-'
		if sign {
			k++
		}
		switch {
		case byteClass[peek(s, k)]&bDigit != 0:
			j, float = decEnd(s, k), true
			digits(k, j)
		case sign: // {realfail}
			return Token{}, syntaxErr("trailing junk after numeric literal", i)
		}
	}
	if junk > j {
		return Token{}, syntaxErr("trailing junk after numeric literal", i)
	}
	if float {
		return Token{Kind: TokenFloat, Start: i, End: j}, nil
	}
	return integerToken(s, i, j, 10), nil
}

// identRun returns the end of the run of {ident_cont} bytes at s[i].
func identRun(s string, i int) int {
	for i < len(s) && byteClass[s[i]]&bIdentCont != 0 {
		i++
	}
	return i
}

// decEnd returns the end of {decinteger} at s[i], a digit:
// {decdigit}(_?{decdigit})*.
func decEnd(s string, i int) int {
	j := i + 1
	for {
		k := j
		if peek(s, k) == '_' {
			k++
		}
		if byteClass[peek(s, k)]&bDigit == 0 {
			return j
		}
		j = k + 1
	}
}

// basedInteger is {hexinteger} 0[xX](_?{hexdigit})+ and its octal and
// binary siblings. With no digit it is {hexfail} (0x_?); if letters or
// digits follow the longest match, {integer_junk} (0 and an identifier
// starting at the x) is longer and wins.
func basedInteger(s string, i, base int, what string) (Token, error) {
	j := i + 2
	for {
		k := j
		if peek(s, k) == '_' {
			k++
		}
		if !isDigitOf(peek(s, k), base) {
			break
		}
		j = k + 1
	}
	junk := identRun(s, i+1) // {integer_junk}: 0 and the identifier x…
	if j > i+2 {
		if junk > j {
			return Token{}, syntaxErr("trailing junk after numeric literal", i)
		}
		return integerToken(s, i, j, base), nil
	}
	fail := i + 2
	if peek(s, fail) == '_' {
		fail++
	}
	if junk > fail {
		return Token{}, syntaxErr("trailing junk after numeric literal", i)
	}
	return Token{}, syntaxErr("invalid "+what+" integer", i)
}

func isDigitOf(c byte, base int) bool {
	switch base {
	case 16:
		return byteClass[c]&bHex != 0
	case 8:
		return c >= '0' && c <= '7'
	case 2:
		return c == '0' || c == '1'
	}
	return byteClass[c]&bDigit != 0
}

// integerToken is an integer constant s[i:j]: ICONST when it fits int32
// (process_integer_literal, pg_strtoint32_safe), FCONST otherwise.
func integerToken(s string, i, j, base int) Token {
	digits := s[i:j]
	if base != 10 {
		digits = digits[2:]
	}
	var v uint64
	for k := 0; k < len(digits); k++ {
		c := digits[k]
		var d uint64
		switch {
		case c == '_':
			continue
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		default:
			d = uint64(c-'A') + 10
		}
		v = v*uint64(base) + d
		if v > 1<<31-1 {
			return Token{Kind: TokenFloat, Start: i, End: j}
		}
	}
	return Token{Kind: TokenInteger, Start: i, End: j}
}
