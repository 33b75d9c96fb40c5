package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/rewrite"
)

// The lexer of rewrite (rewrite.Lex) must find the string literals of a
// simple Query exactly where the server does, under the settings pg_query
// cannot be told: standard_conforming_strings off and client encodings
// other than UTF8. These tests ask the server itself: they send texts made
// of quotes, backslashes, dollar tags, comments and multibyte characters
// as raw bytes in the session's encoding, "SELECT <lit>, <lit>", and
// compare the columns and values the server returns with what the lexer
// predicts, and the errors.

// lexEncodings are the client encodings tried, with characters of each
// that convert to UTF8 and back unchanged; in SJIS and BIG5 many have
// ASCII second bytes (0x5c is a backslash, 0x60 a backtick, 0x7c a bar).
var lexEncodings = []struct {
	name  string
	chars []string
}{
	{"UTF8", []string{"é", "表", "😀", "\u00a0"}},
	{"LATIN1", []string{"\xe9", "\xfc", "\xa0", "\xff", "\x80"}},
	{"SJIS", []string{"\x95\x5c", "\x83\x5c", "\x94\x5c", "\x83\x41", "\x81\x5b", "\x83\x60", "\x83\x7c", "\x90\x7c", "\xb1", "\x82\xa0"}},
	{"BIG5", []string{"\xb3\x5c", "\xa5\x5c", "\xa4\x40", "\xa4\xa4", "\xa4\x5b", "\xa4\x60", "\xa4\x7c", "\xa4\x7b"}},
}

// lexFragments are the ASCII pieces literals are made of.
var lexFragments = []string{
	"a", "b", "'", "''", `\`, `\\`, `\'`, `\n`, `\t`, `\x41`, `\x4`, `\xe9`, `\xc3\xa9`, `\101`, `\0`, `\u0041`, `\u00e9`,
	`\U0001F600`, `\ud83d\ude00`, `\ud83d`, `\u12`, "$", "$$", "$a$", "$b$", "--", "-- c\n", "/*", "*/", "\n", "\r\n", " ",
	"\t", ",", ")", "(", `"`, ";", "!", `'||'`, "!0041", "\\0042", "\\+01F600", "U&'", "E'",
}

// lexSeparators continue a literal after its closing quote, or do not.
var lexSeparators = []string{"\n", " \n ", "\n\n", " -- c\n", "\n-- c\n  ", "\r", " ", "  -\n", "--\n", "/* c */\n", "\n--'\n"}

// lexCases are texts every setting must agree on, beside the random ones.
var lexCases = []string{
	"SELECT 'a' -- c\n'b', 'x'",
	"SELECT 'a'\n-- c\n'b', 'x'",
	"SELECT E'\\n'\n'\\t', $$--$$",
	`SELECT '\' || ' ), $$PHI$$) --', 'x'`,
	`SELECT 'a\'b', 'c'`,
	"SELECT U&'!0041' UESCAPE '!', U&'\\0042'",
	"SELECT $a$x$b$y$a$, $$$$",
	"SELECT 'a' /* c */\n'b', 'c'",
}

func TestLexerMatchesServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, directDSN(pgcluster.ScramUser, pgcluster.AppDatabase))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	r := rand.New(rand.NewPCG(13, 9))
	for _, enc := range lexEncodings {
		e, ok := rewrite.EncodingByName(enc.name)
		if !ok || !e.Exact() {
			t.Fatalf("encoding %s unknown to the lexer", enc.name)
		}
		for _, scs := range []string{"on", "off"} {
			name := enc.name + "/standard_conforming_strings=" + scs
			t.Run(name, func(t *testing.T) {
				if _, err := conn.Exec(ctx, fmt.Sprintf("SET client_encoding = '%s'; SET standard_conforming_strings = %s", enc.name, scs)).ReadAll(); err != nil {
					t.Fatal(err)
				}
				o := rewrite.LexOptions{Encoding: e, StandardStringsOff: scs == "off"}
				texts := append([]string(nil), lexCases...)
				for range 250 {
					texts = append(texts, "SELECT "+randomLiteral(r, enc.chars)+", "+randomLiteral(r, enc.chars))
				}
				counts := map[string]int{}
				for _, sql := range texts {
					outcome, err := compareWithServer(ctx, conn, sql, o)
					if err != nil {
						t.Errorf("%s: %q: %v", name, sql, err)
					}
					counts[outcome]++
				}
				if counts["columns"] < 30 || counts["error"] < 30 {
					t.Errorf("too few texts of each outcome to prove anything: %v", counts)
				}
				t.Logf("%v", counts)
			})
		}
	}
	if _, err := conn.Exec(ctx, "RESET client_encoding; RESET standard_conforming_strings").ReadAll(); err != nil {
		t.Fatal(err)
	}
}

// compareWithServer runs sql on conn and checks the server's answer
// against the lexer's reading under o: "error" when the lexer refuses the
// text (the server must too), "columns" when the lexer reads a list of
// string constants (the server must return them), "other" for texts the
// lexer reads as something else (the grammar decides; a scanner error
// from the server is then a disagreement).
func compareWithServer(ctx context.Context, conn *pgconn.PgConn, sql string, o rewrite.LexOptions) (string, error) {
	toks, lexErr := rewrite.Lex(nil, sql, o)
	results, srvErr := conn.Exec(ctx, sql).ReadAll()
	var pgErr *pgconn.PgError
	if srvErr != nil && !errors.As(srvErr, &pgErr) {
		return "", fmt.Errorf("server: %w", srvErr)
	}
	if lexErr != nil {
		if srvErr == nil {
			return "error", fmt.Errorf("the lexer refuses it (%v) but the server ran it", lexErr)
		}
		return "error", nil
	}
	// In an encoding other than UTF8, escapes that make non-ASCII bytes
	// put UTF8 next to converted text; whether the server accepts the
	// value (and can convert it back) is not the lexer's to know.
	unknown := false
	for _, t := range toks {
		if _, err := rewrite.AppendValue(nil, sql, t, o); errors.Is(err, rewrite.ErrValueUnknown) {
			unknown = true
		}
	}
	want, ok := constantList(sql, toks, o)
	if srvErr != nil && unknown && valueError(pgErr.Message) {
		return "unknown", nil
	}
	if !ok {
		if srvErr != nil && scannerError(pgErr.Message) {
			return "other", fmt.Errorf("the lexer reads it but the server's scanner refuses it: %s", pgErr.Message)
		}
		return "other", nil
	}
	if srvErr != nil {
		return "columns", fmt.Errorf("the lexer reads %d constants but the server refuses the text: %s", len(want), pgErr.Message)
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) != len(want) {
		return "columns", fmt.Errorf("the lexer reads %d constants, the server returned %v", len(want), results[0].Rows)
	}
	for i, w := range want {
		if got := results[0].Rows[0][i]; w != nil && !bytes.Equal(got, w) {
			return "columns", fmt.Errorf("column %d: the lexer reads %q, the server returned %q", i+1, w, got)
		}
	}
	return "columns", nil
}

// constantList returns the values of the string constants of a text that
// the lexer reads as SELECT and a comma-separated list of them (a U& one
// with its UESCAPE); a nil value where the lexer cannot know it.
func constantList(sql string, toks []rewrite.Token, o rewrite.LexOptions) ([][]byte, bool) {
	var code []rewrite.Token
	for _, t := range toks {
		if t.Kind != rewrite.TokenLineComment && t.Kind != rewrite.TokenBlockComment {
			code = append(code, t)
		}
	}
	if len(code) == 0 || !strings.EqualFold(sql[code[0].Start:code[0].End], "select") {
		return nil, false
	}
	var vals [][]byte
	for i := 1; i < len(code); {
		t := code[i]
		if t.Kind != rewrite.TokenString && t.Kind != rewrite.TokenUnicodeString {
			return nil, false
		}
		v, err := rewrite.AppendValue(nil, sql, t, o)
		if err != nil && !errors.Is(err, rewrite.ErrValueUnknown) {
			return nil, false
		}
		vals = append(vals, v)
		i++
		if t.Kind == rewrite.TokenUnicodeString && i+1 < len(code) && strings.EqualFold(sql[code[i].Start:code[i].End], "uescape") {
			i += 2
		}
		if i == len(code) {
			return vals, true
		}
		if code[i].Kind != rewrite.TokenChar || sql[code[i].Start] != ',' {
			return nil, false
		}
		i++
	}
	return nil, false
}

// valueError reports whether a server message is about a value's
// encoding: invalid bytes made by escapes, or a character the client's
// encoding has not.
func valueError(msg string) bool {
	return strings.HasPrefix(msg, "invalid byte sequence") || strings.HasPrefix(msg, "character with byte sequence")
}

// scannerError reports whether a server message is one the scanner (or
// the conversion before it) raises, as opposed to the grammar.
func scannerError(msg string) bool {
	for _, p := range []string{"unterminated", "invalid Unicode", "unsafe use of", "invalid byte sequence", "trailing junk",
		"zero-length delimited identifier", "UESCAPE", "invalid hexadecimal", "operator too long", "character with byte sequence"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// randomLiteral builds one literal attempt: a quoted, escaped, dollar- or
// Unicode-quoted string of random fragments, maybe continued, or loose
// fragments.
func randomLiteral(r *rand.Rand, chars []string) string {
	body := func() string {
		var b strings.Builder
		for range r.IntN(7) {
			if r.IntN(3) == 0 {
				b.WriteString(chars[r.IntN(len(chars))])
			} else {
				b.WriteString(lexFragments[r.IntN(len(lexFragments))])
			}
		}
		return b.String()
	}
	continued := func(s string) string {
		for r.IntN(3) == 0 {
			s += lexSeparators[r.IntN(len(lexSeparators))] + "'" + body() + "'"
		}
		return s
	}
	switch r.IntN(7) {
	case 0, 1:
		return continued("'" + body() + "'")
	case 2:
		return continued("E'" + body() + "'")
	case 3:
		tag := []string{"", "a", "tag", "q1", "_"}[r.IntN(5)]
		return "$" + tag + "$" + body() + "$" + tag + "$"
	case 4:
		if r.IntN(2) == 0 {
			return continued("U&'"+body()+"'") + " UESCAPE '!'"
		}
		return continued("U&'" + body() + "'")
	case 5:
		return "'" + strings.Repeat(chars[r.IntN(len(chars))], 1+r.IntN(3)) + "'"
	}
	return body()
}

// TestEncodingConversionAssumptions checks on the server what the lexer
// assumes of each client encoding it reads (rewrite/lex_encoding.go): no
// byte or character that is not ASCII converts to an ASCII character (it
// would be a quote or a backslash to the scanner), single-byte encodings
// convert injectively (dollar-quote tags compare after conversion), and
// SHIFT_JIS_2004, which the lexer refuses, breaks the first rule.
func TestEncodingConversionAssumptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgconn.Connect(ctx, directDSN(pgcluster.ScramUser, pgcluster.AppDatabase))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	const probe = `
CREATE FUNCTION pg_temp.to_ascii(enc text, prefix bytea, lo int, hi int, trail_lo int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text; b bytea; found text := '';
BEGIN
  FOR l IN lo..hi LOOP
    FOR t IN trail_lo..254 LOOP
      b := prefix || set_byte(set_byte('\x0000'::bytea, 0, l), 1, t);
      BEGIN
        s := convert_from(b, enc);
      EXCEPTION WHEN others THEN CONTINUE;
      END;
      IF length(s) = 1 AND ascii(s) < 128 THEN found := found || ' ' || encode(b, 'hex'); END IF;
    END LOOP;
  END LOOP;
  RETURN found;
END $$;
CREATE FUNCTION pg_temp.single_byte(enc text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text; seen text[] := '{}'; bad text := '';
BEGIN
  FOR c IN 1..255 LOOP
    BEGIN
      s := convert_from(set_byte('\x00'::bytea, 0, c), enc);
    EXCEPTION WHEN others THEN CONTINUE;
    END;
    IF (c < 128) <> (ascii(s) < 128) OR (c < 128 AND ascii(s) <> c) OR s = ANY(seen) THEN bad := bad || ' ' || to_hex(c); END IF;
    seen := seen || s;
  END LOOP;
  RETURN bad;
END $$`
	if _, err := conn.Exec(ctx, probe).ReadAll(); err != nil {
		t.Fatal(err)
	}
	query := func(sql string) string {
		res, err := conn.Exec(ctx, sql).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return string(res[0].Rows[0][0])
	}
	for _, tc := range []struct {
		enc, prefix string
		lo, hi      int
		trailLo     int
		want        string
	}{
		{"SJIS", "", 0x81, 0xfc, 0x40, ""}, {"BIG5", "", 0x81, 0xfe, 0x40, ""}, {"GBK", "", 0x81, 0xfe, 0x40, ""},
		{"UHC", "", 0x81, 0xfe, 0x41, ""}, {"GB18030", "", 0x81, 0xfe, 0x40, ""}, {"GB18030", `\x8130`, 0x81, 0x84, 0x30, ""},
		{"JOHAB", "", 0x84, 0xf9, 0x31, ""}, {"EUC_JP", "", 0x8e, 0xfe, 0xa1, ""}, {"EUC_JP", `\x8f`, 0xa1, 0xfe, 0xa1, ""},
		{"EUC_CN", "", 0xa1, 0xfe, 0xa1, ""}, {"EUC_KR", "", 0xa1, 0xfe, 0xa1, ""}, {"EUC_TW", "", 0xa1, 0xfe, 0xa1, ""},
		{"EUC_JIS_2004", "", 0x8e, 0xfe, 0xa1, ""}, {"SHIFT_JIS_2004", "", 0x81, 0x81, 0x40, " 815f 81b0"},
	} {
		t.Run(tc.enc+tc.prefix, func(t *testing.T) {
			got := query(fmt.Sprintf(`SELECT pg_temp.to_ascii('%s', '%s'::bytea, %d, %d, %d)`, tc.enc, tc.prefix, tc.lo, tc.hi, tc.trailLo))
			if got != tc.want {
				t.Errorf("%s characters converting to ASCII: %q, want %q", tc.enc, got, tc.want)
			}
		})
	}
	for e := rewrite.EncodingLATIN1; e <= rewrite.EncodingISO8859_8; e++ {
		t.Run(e.String(), func(t *testing.T) {
			if bad := query(fmt.Sprintf(`SELECT pg_temp.single_byte('%s')`, e)); bad != "" {
				t.Errorf("%s: bytes converting to ASCII, from ASCII to something else, or to a character another byte converts to: %s", e, bad)
			}
		})
	}
}
