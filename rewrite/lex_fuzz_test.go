package rewrite

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	pg "github.com/pganalyze/pg_query_go/v6"
)

var updateLexCorpus = flag.Bool("update-lex-corpus", false,
	"write testdata/fuzz/FuzzLexMatchesScan: the golden inputs, the integration tests' string literals and lexTrickyCases")

// FuzzLexMatchesScan feeds one text to Lex and to pg_query's Scan (the
// server's scanner, standard_conforming_strings on, UTF8) and requires the
// same tokens: boundaries, and kinds where they map. Lex runs in the mode
// that reads as Scan does (pgQueryScan, see lex.go for the two differences
// from the real server); the default mode must then give the same tokens
// unless a "--" comment continues a string, where they rightly differ.
// Texts that are not valid UTF8 or hold a NUL are not compared: Scan lexes
// them without the server's encoding check.
func FuzzLexMatchesScan(f *testing.F) {
	if *updateLexCorpus {
		writeLexCorpus(f)
	}
	for _, s := range []string{"SELECT 'a' FROM t WHERE x = $1", "E'\\''", "$a$ $b$ $a$", "U&'\\0041' UESCAPE '!'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if !utf8.ValidString(sql) || strings.IndexByte(sql, 0) >= 0 {
			return
		}
		want, scanErr := scanTokens(sql)
		got, lexErr := Lex(nil, sql, LexOptions{pgQueryScan: true})
		if (scanErr != nil) != (lexErr != nil) {
			t.Fatalf("input %q\nScan error: %v\nLex error: %v\nScan: %v\nLex: %v", sql, scanErr, lexErr, want, got)
		}
		if scanErr == nil {
			if diff := cmp.Diff(want, kindsAndSpans(got)); diff != "" {
				t.Fatalf("input %q: tokens (-Scan +Lex):\n%s", sql, diff)
			}
			for _, tk := range got {
				if _, err := AppendValue(nil, sql, tk, LexOptions{}); tk.Kind == TokenString && err != nil {
					t.Fatalf("input %q: no value for %v: %v", sql, tk, err)
				}
			}
		}
		server, err := Lex(nil, sql, LexOptions{})
		for _, tk := range server {
			if tk.flags&tokCommentGap != 0 {
				return
			}
		}
		if err == nil && lexErr == nil {
			if diff := cmp.Diff(kindsAndSpans(got), kindsAndSpans(server)); diff != "" {
				t.Fatalf("input %q: server mode differs without a comment in a string's continuation (-Scan mode +server mode):\n%s", sql, diff)
			}
		}
	})
}

// span is a token for comparison.
type span struct {
	Kind       TokenKind
	Start, End int
}

func kindsAndSpans(toks []Token) []span {
	out := make([]span, len(toks))
	for i, t := range toks {
		out[i] = span{t.Kind, t.Start, t.End}
	}
	return out
}

// scanTokens returns pg_query's tokens in Lex's kinds.
func scanTokens(sql string) ([]span, error) {
	res, err := pg.Scan(sql)
	if err != nil {
		return nil, err
	}
	out := make([]span, len(res.Tokens))
	for i, t := range res.Tokens {
		out[i] = span{scanKind(sql, t), int(t.Start), int(t.End)}
	}
	return out, nil
}

func scanKind(sql string, t *pg.ScanToken) TokenKind {
	if t.KeywordKind != pg.KeywordKind_NO_KEYWORD {
		return TokenIdent
	}
	switch t.Token {
	case pg.Token_IDENT:
		if strings.HasPrefix(sql[t.Start:], `"`) {
			return TokenQuotedIdent
		}
		return TokenIdent
	case pg.Token_UIDENT:
		return TokenUnicodeIdent
	case pg.Token_SCONST:
		return TokenString
	case pg.Token_USCONST:
		return TokenUnicodeString
	case pg.Token_BCONST:
		return TokenBitString
	case pg.Token_XCONST:
		return TokenHexString
	case pg.Token_ICONST:
		return TokenInteger
	case pg.Token_FCONST:
		return TokenFloat
	case pg.Token_PARAM:
		return TokenParam
	case pg.Token_Op:
		return TokenOp
	case pg.Token_TYPECAST:
		return TokenTypecast
	case pg.Token_DOT_DOT:
		return TokenDotDot
	case pg.Token_COLON_EQUALS:
		return TokenColonEquals
	case pg.Token_EQUALS_GREATER:
		return TokenEqualsGreater
	case pg.Token_LESS_EQUALS:
		return TokenLessEquals
	case pg.Token_GREATER_EQUALS:
		return TokenGreaterEquals
	case pg.Token_NOT_EQUALS:
		return TokenNotEquals
	case pg.Token_SQL_COMMENT:
		return TokenLineComment
	case pg.Token_C_COMMENT:
		return TokenBlockComment
	}
	if t.Token < 256 {
		return TokenChar
	}
	return TokenInvalid
}

// lexTrickyCases are seeds for the places where scan.l is subtle.
var lexTrickyCases = []string{
	// String constants and their continuation.
	"'a'\n'b'", "'a'  \n  'b'", "'a'\r'b'", "'a' 'b'", "'a'\n\n\t'b'", "'a'\v\n'b'", "'a'\n-'b'", "'a'\n- 'b'", "'a' -\n'b'",
	"'a'--c\n'b'", "'a'\n--c\n'b'", "'a'\n--c", "'a'/*c*/\n'b'", "E'\\''\n'\\''", "E'a'\n'\\n'", "'a'\nE'b'", "b'1'\n'0'", "x'1f'\n'2'",
	"U&'a'\n'b'", "$$a$$\n'b'", "'it''s'", "''''", "'a'''", "E'\\\\'", "E'\\'", "'\\'", "'\\''", "E'a\\", "'",
	"E'\\x41\\101\\u0041\\U00000041'", "E'\\xc3\\xa9'", "E'\\xff'", "E'\\0'", "E'\\400'", "E'\\x'", "E'\\xg'", "E'\\u12'", "E'\\u0000'",
	"E'\\ud83d\\ude00'", "E'\\ud83d'", "E'\\ude00'", "E'\\ud83dx'", "E'\\ud83d\\u0041'", "E'\\UFFFFFFFF'", "E'\\é'", "E'\\b\\f\\n\\r\\t\\v\\z'",
	"e'x'", "n'x'", "N'x'", "nx'1'", "xy'1'", "ex'1'", "é'1'", "b''", "x'g'", "b'1''0'",
	"U&'\\0041' UESCAPE '!'", "U&'!0041' UESCAPE '!'", "U&'x' UESCAPE 'ab'", "U&'x' uescape", "U&'\\+01F600'", "U&'\\12'",
	"U&'\\d83d\\de00'", "u&'x'", "U&x", "U&", "U&'", "U&\"a\"", "U&\"\"", "U&\"\\0041\" UESCAPE '#'",
	// Dollar quoting.
	"$$x$$", "$a$x$a$", "$a$$b$$a$", "$a$x$b$a$", "$A$x$a$", "$a1$x$a1$", "$1a$", "$é$x$é$", "$_$x$_$", "$a$x$a", "$$", "$$a$$$$",
	"$a", "$", "$1", "$01", "$1$", "$1abc", "$1_000", "a$b$c", "$a$'$a$", "$q$it's$q$",
	// Identifiers and comments.
	"\"a\"\"b\"", "\"\"", "\"a", "é", "_a1$", "/* a /* b */ c */ d", "/*/", "/* */*/", "--x", "a--b", "/**/", "/*", "x/*y*/z",
	// Operators.
	"+-", "=-", "@-", "*/", "<=>", "!=-", "=>", ">=-", "<>", "!=", "a<>b", "@--x", "+/*c*/", "~", "?", "`", "|/", "||", "&&",
	"::", ":=", ":", ":::", "..", "...", ".a", "a.b", "a.*", strings.Repeat("~", 64), strings.Repeat("~", 63),
	// Numbers.
	"1", "1.", ".5", "1.5e10", "1e+5", "1e-", "1e", "1ex", "1.e5", "1..2", "1...2", "1.2.3", "0x1F", "0x", "0x_", "0x_1", "0x1g",
	"0o17", "0o8", "0b101", "0b2", "1_000", "1__0", "1_", "1_000.5_5", "9999999999", "2147483647", "2147483648", "0x7fffffff",
	"0x80000000", "1a", "1.x", "a.1", "1.2e3.4", "0e0$", "1$", "1e1$", "1e+1$", "12$", "1_2$", "1.2_3$", "1.2_3", "1e1_2$",
	"1e+1_2$", "1_2..", "1_2..$", ".5_5$", "1.5e+1$", "0x1$", "0x$", "1_$",
	// Characters.
	"\\", "{", "}", "\x01", "\x7f", "a\vb",
}

// writeLexCorpus writes the seed corpus of FuzzLexMatchesScan.
func writeLexCorpus(f *testing.F) {
	var seeds []string
	files, _ := filepath.Glob("testdata/*.txt")
	for _, file := range files {
		cases, _ := readGolden(f, file)
		for _, c := range cases {
			seeds = append(seeds, c.input)
		}
	}
	seeds = append(seeds, integrationLiterals(f)...)
	seeds = append(seeds, lexTrickyCases...)
	dir := filepath.Join("testdata", "fuzz", "FuzzLexMatchesScan")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range seeds {
		if seen[s] {
			continue
		}
		seen[s] = true
		name := fmt.Sprintf("seed-%x", sha256.Sum256([]byte(s)))[:21]
		body := "go test fuzz v1\nstring(" + strconv.Quote(s) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	f.Logf("wrote %d seeds to %s", len(seen), dir)
}

// integrationLiterals returns the string literals of the integration
// tests that hold a quote, a backslash or a dollar sign: the SQL of their
// attacks and checks.
func integrationLiterals(f *testing.F) []string {
	files, _ := filepath.Glob("../integration/*.go")
	var out []string
	fset := gotoken.NewFileSet()
	for _, file := range files {
		af, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			f.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != gotoken.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && strings.ContainsAny(s, `'\$"`) {
				out = append(out, s)
			}
			return true
		})
	}
	if len(out) == 0 {
		f.Fatal("no literals found in ../integration")
	}
	return out
}

// FuzzLexSettings lexes one text under each session setting and checks
// what pg_query cannot: no panic; tokens in order, inside the text, in a
// client-only encoding starting on a character; every string constant has
// a value or ErrValueUnknown; and a text without backslashes or non-ASCII
// bytes reads the same under every setting, but for U&'…' refused with
// standard_conforming_strings off (AnalyzeSimpleWith relies on it to share
// cache entries). The seeds are FuzzLexMatchesScan's corpus.
func FuzzLexSettings(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzLexMatchesScan", "*"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		_, lit, _ := strings.Cut(strings.TrimSpace(string(b)), "string(")
		if s, err := strconv.Unquote(strings.TrimSuffix(lit, ")")); err == nil {
			f.Add(s)
		}
	}
	settings := []LexOptions{{}, {StandardStringsOff: true}, {Encoding: EncodingLATIN1}, {Encoding: EncodingSJIS},
		{Encoding: EncodingBIG5, StandardStringsOff: true}, {Encoding: EncodingGB18030}, {Encoding: EncodingEUCJP}, {BackslashQuote: BackslashQuoteOff}}
	f.Fuzz(func(t *testing.T, sql string) {
		portable := isASCII(sql) && !strings.Contains(sql, `\`)
		base, baseErr := Lex(nil, sql, LexOptions{})
		for _, o := range settings {
			toks, err := Lex(nil, sql, o)
			// U&'' is refused under standard_conforming_strings off.
			same := portable && !(o.StandardStringsOff && strings.Contains(strings.ToLower(sql), "u&'"))
			if same && ((err == nil) != (baseErr == nil) || err == nil && !cmp.Equal(kindsAndSpans(base), kindsAndSpans(toks))) {
				t.Fatalf("input %q reads differently with %+v: %v %v, default %v %v", sql, o, toks, err, base, baseErr)
			}
			if err != nil {
				continue
			}
			at := 0
			for _, tk := range toks {
				if tk.Start < at || tk.End <= tk.Start || tk.End > len(sql) {
					t.Fatalf("input %q with %+v: token %+v out of order", sql, o, tk)
				}
				if o.Encoding.class() == classClientOnly {
					for i := at; i < tk.Start; i += o.Encoding.charLen(sql, i) {
						if i > tk.Start {
							t.Fatalf("input %q with %+v: token %+v starts inside a character", sql, o, tk)
						}
					}
				}
				at = tk.End
				if _, err := AppendValue(nil, sql, tk, o); err != nil && !errors.Is(err, ErrValueUnknown) &&
					(tk.Kind == TokenString || tk.Kind == TokenUnicodeString || tk.Kind == TokenBitString || tk.Kind == TokenHexString) {
					t.Fatalf("input %q with %+v: no value for %+v: %v", sql, o, tk, err)
				}
			}
		}
	})
}
