package rewrite

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/novamind/phiproxy/policy"
)

// TestAnalyzeSimpleWith: plans made under session settings other than the
// defaults, by rendering (the literal slots show the values the proxy will
// encrypt or index, in the client's encoding).
func TestAnalyzeSimpleWith(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	off := LexOptions{StandardStringsOff: true}
	latin1 := LexOptions{Encoding: EncodingLATIN1}
	sjis := LexOptions{Encoding: EncodingSJIS}
	for _, tc := range []struct {
		name string
		sql  string
		o    LexOptions
		want string // rendered plan, or "error CODE"
	}{
		{"off: escapes in a value", `INSERT INTO patients (id, email) VALUES (1, 'a\'b\\c')`, off,
			`sql: INSERT INTO patients (id, email, email_bidx, email_bidx_ci) VALUES (1, «encrypt email "a'b\\c"», «index email "a'b\\c"», «index email.ci "a'b\\c"»)` + "\nstatement: insert tables=public.patients"},
		{"off: a plain value keeps its text", `UPDATE patients SET city = 'x', state = 'I\'L' WHERE id = '7\\'`, off,
			`sql: UPDATE patients SET city = «encrypt city "x"», state = «encrypt state "I'L"» WHERE id = '7\\'` + "\nstatement: update tables=public.patients"},
		{"off: a backslash kept in the key", `SELECT id FROM patients WHERE last_name = 'x' AND id::text LIKE '1\%'`, off, "error 0A000"},
		{"off: E'' kept in the key is portable", `SELECT id FROM patients WHERE email = 'x' AND id::text LIKE E'1\\%'`, off,
			`sql: SELECT id FROM patients WHERE email_bidx = «index email "x"» AND id::text LIKE E'1\\%'` + "\nstatement: select tables=public.patients"},
		{"off: U& refused as the server does", `SELECT id FROM patients WHERE email = U&'x'`, off, "error 0A000"},
		{"off: no backslash reads the same", `SELECT id FROM patients WHERE id::text LIKE '1%'`, off,
			"sql: SELECT id FROM patients WHERE id::text LIKE '1%'\nstatement: select tables=public.patients"},
		{"LATIN1: a value in the client's encoding", "INSERT INTO patients (id, city) VALUES (1, 'M\xfcnster')", latin1,
			"sql: INSERT INTO patients (id, city) VALUES (1, «encrypt city \"M\\xfcnster\"»)\nstatement: insert tables=public.patients"},
		{"LATIN1: non-ASCII outside values", "SELECT id FROM patients WHERE email = 'x' -- M\xfcnster", latin1, "error 0A000"},
		{"LATIN1: an escape's value is UTF8, not LATIN1", `SELECT id FROM patients WHERE email = 'x' AND id::text = E'\xc3\xbc'`, latin1,
			"error 0A000"},
		{"LATIN1: ASCII escapes are the same", `SELECT id FROM patients WHERE email = 'x' AND id::text = E'\x41'`, latin1,
			`sql: SELECT id FROM patients WHERE email_bidx = «index email "x"» AND id::text = E'\x41'` + "\nstatement: select tables=public.patients"},
		{"SJIS: a 0x5c second byte in a value", "SELECT id FROM patients WHERE email = '\x95\x5c'", sjis,
			"sql: SELECT id FROM patients WHERE email_bidx = «index email \"\\x95\\\\\"»\nstatement: select tables=public.patients"},
		{"SJIS: \\' refused by backslash_quote", `SELECT id FROM patients WHERE email = E'\''`, sjis, "error 22P06"},
		{"syntax error under the settings", `SELECT id FROM patients WHERE email = 'x`, off, "error 42601"},
		{"no policy table: passthrough unread", "SELECT '\xff'", latin1, "passthrough"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCache(16, pol, seedCatalog)
			c.AnalyzeSimpleWith(tc.sql, tc.o)
			p, err := c.AnalyzeSimpleWith(tc.sql, tc.o)
			got := ""
			if err != nil {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("error of type %T: %v", err, err)
				}
				got = "error " + e.Code
			} else {
				got = renderPlan(p)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("AnalyzeSimpleWith(%q, %+v) (-want +got):\n%s", tc.sql, tc.o, diff)
			}
		})
	}
}

// TestAnalyzeSimpleWithMatchesAnalyze: a golden input that reads the same
// under every setting (ASCII, no backslash) gets Analyze's plan under
// standard_conforming_strings off and LATIN1 too, and the cache entries
// made by one session serve the others.
func TestAnalyzeSimpleWithMatchesAnalyze(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, f := range files {
		cases, _ := readGolden(t, f)
		for _, c := range cases {
			if !strings.HasPrefix(c.cmd, "analyze") || strings.Contains(c.cmd, "policy=") || strings.Contains(c.cmd, "catalog=") {
				continue
			}
			for _, in := range []string{c.input, paramsToLiterals(c.input)} {
				if strings.Contains(in, `\`) || !isASCII(in) {
					continue
				}
				want, wantErr := Analyze(in, pol, seedCatalog)
				cache := NewCache(100, pol, seedCatalog)
				for _, o := range []LexOptions{{StandardStringsOff: true}, {Encoding: EncodingLATIN1}, {Encoding: EncodingSJIS, StandardStringsOff: true}, {}} {
					got, gotErr := cache.AnalyzeSimpleWith(in, o)
					if fmt.Sprint(wantErr) != fmt.Sprint(gotErr) {
						t.Errorf("%s:%d: %s with %+v\nAnalyze error: %v\nAnalyzeSimpleWith error: %v", f, c.line, in, o, wantErr, gotErr)
						continue
					}
					if wantErr == nil && renderPlan(want) != renderPlan(got) {
						t.Errorf("%s:%d: %s with %+v\nAnalyze:\n%s\nAnalyzeSimpleWith:\n%s", f, c.line, in, o, renderPlan(want), renderPlan(got))
					}
					compared++
				}
			}
		}
	}
	if compared < 400 {
		t.Errorf("only %d comparisons", compared)
	}
}

// TestAnalyzeSimpleWithKeyError: a text analysed through its shape key
// (the text itself does not read the same to pg_query under the
// session's settings) is refused with the position and message
// PostgreSQL gives the text: the key's $n are the text's literals.
func TestAnalyzeSimpleWithKeyError(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	latin1 := LexOptions{Encoding: EncodingLATIN1}
	off := LexOptions{StandardStringsOff: true}
	for _, tc := range []struct {
		name     string
		sql      string
		o        LexOptions
		code     string
		exact    string
		position int
	}{
		{"after a replaced literal", "SELECT id FROM patients WHERE city = 'M\xfcnster' AND AND", latin1,
			"42601", `syntax error at or near "AND"`, 52},
		{"before it", "SELECT id FROM FROM patients WHERE city = 'M\xfcnster'", latin1,
			"42601", `syntax error at or near "FROM"`, 16},
		{"at it", "CREATE TABLE patients ('M\xfcnster' text)", latin1,
			"42601", "syntax error at or near \"'M\xfcnster'\"", 24},
		{"two literals, é counted once", "SELECT id FROM patients WHERE city = 'a\\'b' AND state = 'é' AND AND", off,
			"42601", `syntax error at or near "AND"`, 65},
		{"a refusal", "SELECT id FROM patients WHERE email = 'M\xfcnster' AND city LIKE 'x'", latin1,
			"0A000", "", 53},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCache(16, pol, seedCatalog).AnalyzeSimpleWith(tc.sql, tc.o)
			e, ok := err.(*Error)
			if !ok {
				t.Fatalf("got %v, want an *Error", err)
			}
			if e.Code != tc.code || e.Exact != tc.exact || e.Position != tc.position {
				t.Fatalf("got %s %q position %d, want %s %q position %d", e.Code, e.Exact, e.Position, tc.code, tc.exact, tc.position)
			}
		})
	}
}
