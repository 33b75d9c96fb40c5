package rewrite

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzShapeDefault: with the default settings, the shape build makes
// for a text (buildDefault, the simple-protocol fast path) is the one
// buildSettings makes: the same key, the same literals and values. The
// seeds are FuzzLexMatchesScan's corpus and the golden inputs, as written
// and with their $n turned into literals.
func FuzzShapeDefault(f *testing.F) {
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
	golden, _ := filepath.Glob("testdata/*.txt")
	for _, file := range golden {
		cases, _ := readGolden(f, file)
		for _, c := range cases {
			f.Add(c.input)
			f.Add(paramsToLiterals(c.input))
		}
	}
	f.Add("SELECT * FROM p WHERE a = 'O''Brien' AND b <> '''' AND c != 'x''' AND d IN ('', 'y')")
	type shaped struct {
		Sh     simpleShape
		Key    string
		Values []literal
	}
	exported := cmp.AllowUnexported(simpleShape{}, literal{})
	f.Fuzz(func(t *testing.T, sql string) {
		var fast, ref shapeBuf
		var err error
		if fast.toks, err = Lex(nil, sql, LexOptions{}); err != nil {
			return
		}
		ref.toks = fast.toks
		got := shaped{Sh: fast.buildDefault(sql)}
		got.Key, got.Values = string(fast.key), fast.values
		want := shaped{Sh: ref.buildSettings(sql, LexOptions{})}
		want.Key, want.Values = string(ref.key), ref.values
		if diff := cmp.Diff(want, got, exported, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("input %q: shape (-buildSettings +buildDefault):\n%s", sql, diff)
		}
		for _, tk := range fast.toks {
			if tk.Kind == TokenString && tk.form == formStandard && !tk.Continued() {
				doubled := strings.Contains(sql[tk.Start+1:tk.End-1], "''")
				if doubled != (tk.flags&tokDoubledQuote != 0) {
					t.Fatalf("input %q: token %+v: doubled quote flag %v, want %v", sql, tk, !doubled, doubled)
				}
			}
		}
	})
}
