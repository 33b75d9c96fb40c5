package rewrite

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tok is a token as the tests write it: kind and text.
type tok struct {
	Kind TokenKind
	Text string
}

func lexTexts(t *testing.T, src string, o LexOptions) []tok {
	t.Helper()
	toks, err := Lex(nil, src, o)
	if err != nil {
		t.Fatalf("Lex(%q): %v", src, err)
	}
	out := make([]tok, len(toks))
	for i, x := range toks {
		out[i] = tok{x.Kind, src[x.Start:x.End]}
	}
	return out
}

// TestLexTokens covers what pg_query's Scan cannot check: the server's
// reading where Scan differs (comments in a continuation), and the
// session settings.
func TestLexTokens(t *testing.T) {
	off := LexOptions{StandardStringsOff: true}
	sjis := LexOptions{Encoding: EncodingSJIS}
	for _, tc := range []struct {
		name string
		in   string
		o    LexOptions
		want []tok
	}{
		{"select", "SELECT a, 'b' FROM t WHERE c = $1::int", LexOptions{}, []tok{
			{TokenIdent, "SELECT"}, {TokenIdent, "a"}, {TokenChar, ","}, {TokenString, "'b'"}, {TokenIdent, "FROM"}, {TokenIdent, "t"},
			{TokenIdent, "WHERE"}, {TokenIdent, "c"}, {TokenChar, "="}, {TokenParam, "$1"}, {TokenTypecast, "::"}, {TokenIdent, "int"}}},
		{"comment continues a string", "'a' -- c\n'b' x", LexOptions{}, []tok{{TokenString, "'a' -- c\n'b'"}, {TokenIdent, "x"}}},
		{"comment before the newline", "E'\\n'--c\r'\\t'", LexOptions{}, []tok{{TokenString, "E'\\n'--c\r'\\t'"}}},
		{"no newline, no continuation", "'a' 'b'", LexOptions{}, []tok{{TokenString, "'a'"}, {TokenString, "'b'"}}},
		{"block comment does not continue", "'a' /* c */\n'b'", LexOptions{}, []tok{{TokenString, "'a'"}, {TokenBlockComment, "/* c */"}, {TokenString, "'b'"}}},
		{"standard: backslash is a character", `'\' || ' ), $$x$$) --'`, LexOptions{}, []tok{
			{TokenString, `'\'`}, {TokenOp, "||"}, {TokenString, `' ), $$x$$) --'`}}},
		{"off: backslash escapes the quote", `'\' || ' ), $$x$$) --'`, off, []tok{
			{TokenString, `'\' || '`}, {TokenChar, ")"}, {TokenChar, ","}, {TokenString, "$$x$$"}, {TokenChar, ")"}, {TokenLineComment, "--'"}}},
		{"off: N'' is NCHAR and an escape string", `N'\''`, off, []tok{{TokenIdent, "N"}, {TokenString, `'\''`}}},
		{"off: dollar quotes unchanged", `$$\$$`, off, []tok{{TokenString, `$$\$$`}}},
		{"SJIS: 0x5c second byte is no backslash", "E'\x95\x5c' x", sjis, []tok{{TokenString, "E'\x95\x5c'"}, {TokenIdent, "x"}}},
		{"SJIS: 0x27 cannot be a second byte, but 0x60 is no backtick", "a\x83\x60b", sjis, []tok{{TokenIdent, "a\x83\x60b"}}},
		{"SJIS: half-width katakana is one byte", "'\xb1'", sjis, []tok{{TokenString, "'\xb1'"}}},
		{"LATIN1 reads the same bytes differently", "E'\x95\x5c' x'", LexOptions{Encoding: EncodingLATIN1}, []tok{{TokenString, "E'\x95\x5c' x'"}}},
		{"BIG5: 0x5c second byte", "'\xa5\x5c' || E'\xa5\x5c'", LexOptions{Encoding: EncodingBIG5}, []tok{
			{TokenString, "'\xa5\x5c'"}, {TokenOp, "||"}, {TokenString, "E'\xa5\x5c'"}}},
		{"GB18030: four bytes with digits", "x\x81\x30\x81\x30y 1", LexOptions{Encoding: EncodingGB18030}, []tok{{TokenIdent, "x\x81\x30\x81\x30y"}, {TokenInteger, "1"}}},
		{"LATIN1: high bytes are letters", "caf\xe9 = '\xe9'", LexOptions{Encoding: EncodingLATIN1}, []tok{{TokenIdent, "caf\xe9"}, {TokenChar, "="}, {TokenString, "'\xe9'"}}},
		{"UESCAPE", "U&'!0041' UESCAPE '!'", LexOptions{}, []tok{{TokenUnicodeString, "U&'!0041'"}, {TokenIdent, "UESCAPE"}, {TokenString, "'!'"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, lexTexts(t, tc.in, tc.o)); diff != "" {
				t.Errorf("Lex(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// TestAppendValue checks the values the server makes of string constants.
func TestAppendValue(t *testing.T) {
	off := LexOptions{StandardStringsOff: true}
	for _, tc := range []struct {
		name string
		in   string // one string constant, maybe followed by UESCAPE
		o    LexOptions
		want string
	}{
		{"plain", "'a''b'", LexOptions{}, "a'b"},
		{"plain backslash", `'a\nb'`, LexOptions{}, `a\nb`},
		{"continued", "'a'\n'b' -- x\n\t'c'", LexOptions{}, "abc"},
		{"escape", `E'\b\f\n\r\t\v\z\\\''`, LexOptions{}, "\b\f\n\r\t\vz\\'"},
		{"escape doubled quote", `E'a''b'`, LexOptions{}, "a'b"},
		{"octal and hex", `E'\101\x41\x4a\7\1010'`, LexOptions{}, "AAJ\aA0"},
		{"x without digits", `E'\x\xg'`, LexOptions{}, "xxg"},
		{"unicode", `E'\u00e9\U0001F600\ud83d\ude00'`, LexOptions{}, "é😀😀"},
		{"high bytes forming UTF8", `E'\xc3\xa9'`, LexOptions{}, "é"},
		{"escaped multibyte", `E'\é'`, LexOptions{}, "é"},
		{"escape continued", "E'\\n'\n'\\t'", LexOptions{}, "\n\t"},
		{"off", `'a\'b\\c\n'`, off, "a'b\\c\n"},
		{"off continued", "'\\''\n'\\n'", off, "'\n"},
		{"dollar", "$a$it's $b$ \\$a$", LexOptions{}, "it's $b$ \\"},
		{"dollar empty tag", "$$$$", LexOptions{}, ""},
		{"unicode string", `U&'d\0061t\+000061'`, LexOptions{}, "data"},
		{"unicode escape escaped", `U&'a\\b'`, LexOptions{}, `a\b`},
		{"uescape", "U&'d!0061t!!' UESCAPE '!'", LexOptions{}, "dat!"},
		{"uescape after comments", "U&'d!0061' /* c */ uescape -- x\n '!'", LexOptions{}, "da"},
		{"unicode surrogates", `U&'\d83d\de00'`, LexOptions{}, "😀"},
		{"unicode continued", "U&'\\00'\n'41'", LexOptions{}, "A"},
		{"bits", "B'10'\n'1'", LexOptions{}, "101"},
		{"hex", "x'1F'", LexOptions{}, "1F"},
		{"SJIS 0x5c second byte", "E'\x95\x5c\\n'", LexOptions{Encoding: EncodingSJIS}, "\x95\x5c\n"},
		{"SJIS escaped character", "E'\\\x95\x5c'", LexOptions{Encoding: EncodingSJIS}, "\x95\x5c"},
		{"SJIS unicode escape", "U&'\x95\x5c\\0041'", LexOptions{Encoding: EncodingSJIS}, "\x95\x5cA"},
		{"LATIN1", "'caf\xe9'", LexOptions{Encoding: EncodingLATIN1}, "caf\xe9"},
		{"LATIN1 ASCII escapes", `E'\x41\u0042'`, LexOptions{Encoding: EncodingLATIN1}, "AB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			toks, err := Lex(nil, tc.in, tc.o)
			if err != nil {
				t.Fatalf("Lex(%q): %v", tc.in, err)
			}
			got, err := AppendValue(nil, tc.in, toks[0], tc.o)
			if err != nil {
				t.Fatalf("AppendValue: %v", err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("value of %q (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// TestAppendValueUnknown: escapes that make non-ASCII characters in a
// client encoding other than UTF8 have no value in that encoding.
func TestAppendValueUnknown(t *testing.T) {
	for _, in := range []string{`E'\xc3\xa9'`, `E'\u00e9'`, `U&'\00e9'`, `E'\351'`} {
		t.Run(in, func(t *testing.T) {
			o := LexOptions{Encoding: EncodingLATIN1}
			toks, err := Lex(nil, in, o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := AppendValue(nil, in, toks[0], o); !errors.Is(err, ErrValueUnknown) {
				t.Errorf("AppendValue error %v, want ErrValueUnknown", err)
			}
		})
	}
}

// TestLexErrors: texts the server refuses while reading them.
func TestLexErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		o        LexOptions
		code     string
	}{
		{"unterminated string", "'abc", LexOptions{}, CodeSyntaxError},
		{"unterminated escape string", `E'abc\'`, LexOptions{}, CodeSyntaxError},
		{"off: a backslash hides the quote", `'abc\'`, LexOptions{StandardStringsOff: true}, CodeSyntaxError},
		{"off: U&'' refused", "U&'x'", LexOptions{StandardStringsOff: true}, CodeFeatureNotSupported},
		{"backslash_quote off", `E'\''`, LexOptions{BackslashQuote: BackslashQuoteOff}, "22P06"},
		{"safe_encoding in SJIS", `E'\''`, LexOptions{Encoding: EncodingSJIS}, "22P06"},
		{"safe_encoding in SJIS, off", `'\''`, LexOptions{Encoding: EncodingSJIS, StandardStringsOff: true}, "22P06"},
		{"invalid UTF8", "SELECT '\xff'", LexOptions{}, "22021"},
		{"NUL", "SELECT 1\x00", LexOptions{}, "08P01"},
		{"escape makes invalid UTF8", `E'\xff'`, LexOptions{}, "22021"},
		{"escape makes NUL", `E'\0'`, LexOptions{}, "22021"},
		{"escape makes NUL in LATIN1", `E'\x00'`, LexOptions{Encoding: EncodingLATIN1}, "22021"},
		{"short unicode escape", `E'\u12'`, LexOptions{}, "22025"},
		{"lone surrogate", `E'\ud83d'`, LexOptions{}, CodeSyntaxError},
		{"U& lone surrogate", `U&'\d83d'`, LexOptions{}, CodeSyntaxError},
		{"U& bad escape", `U&'\12'`, LexOptions{}, CodeSyntaxError},
		{"U& zero", `U&'\0000'`, LexOptions{}, CodeSyntaxError},
		{"UESCAPE without string", "U&'x' UESCAPE 1", LexOptions{}, CodeSyntaxError},
		{"UESCAPE of two characters", "U&'x' UESCAPE 'ab'", LexOptions{}, CodeSyntaxError},
		{"UESCAPE hex digit", "U&'x' UESCAPE 'a'", LexOptions{}, CodeSyntaxError},
		{"UESCAPE non-ASCII in LATIN1", "U&'x' UESCAPE '\xe9'", LexOptions{Encoding: EncodingLATIN1}, CodeSyntaxError},
		{"empty quoted identifier", `""`, LexOptions{}, CodeSyntaxError},
		{"unterminated comment", "/* /* */", LexOptions{}, CodeSyntaxError},
		{"unterminated dollar quote", "$a$x$A$", LexOptions{}, CodeSyntaxError},
		{"trailing junk", "SELECT 1e1$", LexOptions{}, CodeSyntaxError},
		{"operator too long", strings.Repeat("@", 64), LexOptions{}, CodeSyntaxError},
		{"SJIS truncated", "'\x95", LexOptions{Encoding: EncodingSJIS}, "22021"},
		{"SJIS bad second byte", "'\x95\x27'", LexOptions{Encoding: EncodingSJIS}, "22021"},
		{"SJIS non-ASCII dollar tag", "$\x95\x5c$x$\x95\x5c$", LexOptions{Encoding: EncodingSJIS}, CodeFeatureNotSupported},
		{"EUC_JP non-ASCII dollar tag", "$\xb0\xa1$x$\xb0\xa1$", LexOptions{Encoding: EncodingEUCJP}, CodeFeatureNotSupported},
		{"SHIFT_JIS_2004 refused", "SELECT 1", LexOptions{Encoding: EncodingSHIFTJIS2004}, CodeFeatureNotSupported},
		{"MULE_INTERNAL refused", "SELECT 1", LexOptions{Encoding: EncodingMULEINTERNAL}, CodeFeatureNotSupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			toks, err := Lex(make([]Token, 0, 8), tc.in, tc.o)
			var le *LexError
			if !errors.As(err, &le) {
				t.Fatalf("Lex(%q) = %v, %v; want a *LexError", tc.in, toks, err)
			}
			if le.Code != tc.code {
				t.Errorf("Lex(%q) error %v, want SQLSTATE %s", tc.in, le, tc.code)
			}
			if len(toks) != 0 {
				t.Errorf("Lex(%q) returned tokens with its error: %v", tc.in, toks)
			}
		})
	}
}

func TestEncodingByName(t *testing.T) {
	for _, tc := range []struct {
		name  string
		want  Encoding
		exact bool
	}{
		{"UTF8", EncodingUTF8, true}, {"utf-8", EncodingUTF8, true}, {"SQL_ASCII", EncodingSQLASCII, true},
		{"LATIN1", EncodingLATIN1, true}, {"Latin-9", EncodingLATIN9, true}, {"WIN1252", EncodingWIN1252, true},
		{"ISO_8859_5", EncodingISO8859_5, true}, {"KOI8R", EncodingKOI8R, true}, {"EUC_JP", EncodingEUCJP, true},
		{"SJIS", EncodingSJIS, true}, {"BIG5", EncodingBIG5, true}, {"GBK", EncodingGBK, true}, {"UHC", EncodingUHC, true},
		{"GB18030", EncodingGB18030, true}, {"JOHAB", EncodingJOHAB, true},
		{"SHIFT_JIS_2004", EncodingSHIFTJIS2004, false}, {"MULE_INTERNAL", EncodingMULEINTERNAL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := EncodingByName(tc.name)
			if !ok || e != tc.want || e.Exact() != tc.exact {
				t.Errorf("EncodingByName(%q) = %v, %v (exact %v); want %v (exact %v)", tc.name, e, ok, e.Exact(), tc.want, tc.exact)
			}
		})
	}
	if _, ok := EncodingByName("EBCDIC"); ok {
		t.Error("EncodingByName found EBCDIC")
	}
}

func TestLexOptionsFor(t *testing.T) {
	for _, tc := range []struct {
		scs, enc string
		want     LexOptions
		ok       bool
	}{
		{"on", "UTF8", LexOptions{}, true},
		{"off", "SJIS", LexOptions{StandardStringsOff: true, Encoding: EncodingSJIS}, true},
		{"on", "WIN1252", LexOptions{Encoding: EncodingWIN1252}, true},
		{"on", "SHIFT_JIS_2004", LexOptions{}, false},
		{"on", "KLINGON", LexOptions{}, false},
		{"", "UTF8", LexOptions{}, false},
	} {
		t.Run(tc.scs+"/"+tc.enc, func(t *testing.T) {
			got, err := LexOptionsFor(tc.scs, tc.enc)
			if (err == nil) != tc.ok || err == nil && got != tc.want {
				t.Errorf("LexOptionsFor(%q, %q) = %+v, %v; want %+v, ok %v", tc.scs, tc.enc, got, err, tc.want, tc.ok)
			}
		})
	}
}

// TestLexAllocs: lexing a statement into a slice with room allocates
// nothing, in UTF8 and single-byte encodings.
func TestLexAllocs(t *testing.T) {
	sql := simpleTexts("insert13", 1)[0] + " -- " + strings.Repeat("x", 3000)
	toks := make([]Token, 0, 128)
	var val []byte
	for _, o := range []LexOptions{{}, {StandardStringsOff: true}, {Encoding: EncodingLATIN1}} {
		allocs := testing.AllocsPerRun(100, func() {
			var err error
			if toks, err = Lex(toks[:0], sql, o); err != nil {
				t.Fatal(err)
			}
			for _, tk := range toks {
				if tk.Kind == TokenString {
					val, _ = AppendValue(val[:0], sql, tk, o)
				}
			}
		})
		if allocs != 0 {
			t.Errorf("Lex with %+v: %v allocations, want 0", o, allocs)
		}
	}
}

func BenchmarkLex(b *testing.B) {
	for _, name := range []string{"insert13", "selectByEmail"} {
		sql := simpleTexts(name, 1)[0]
		b.Run(name, func(b *testing.B) {
			toks := make([]Token, 0, 128)
			b.ReportAllocs()
			b.SetBytes(int64(len(sql)))
			for b.Loop() {
				var err error
				if toks, err = Lex(toks[:0], sql, LexOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
