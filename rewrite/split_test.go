package rewrite

import (
	"slices"
	"testing"
)

// separatorsOf lexes src under the default settings and returns its
// separators.
func separatorsOf(t testing.TB, src string) ([]int, bool) {
	t.Helper()
	toks, err := Lex(nil, src, LexOptions{})
	if err != nil {
		return nil, false
	}
	return Separators(nil, src, toks), true
}

func TestSeparators(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want []int // offsets of the separating semicolons
	}{
		{"SELECT 1", nil},
		{"SELECT 1;", nil},
		{"SELECT 1; -- done", nil},
		{"SELECT 1; SELECT 2", []int{8}},
		{"SELECT 1;; ; SELECT 2;", []int{11}},
		{";SELECT 1; SELECT 2", []int{9}},
		{"SELECT ';'; SELECT $$;$$; SELECT \";\" FROM t", []int{10, 24}},
		{"SELECT 1 /* ; */; SELECT 2 -- ;\n; SELECT 3", []int{16, 32}},
		{"SELECT E'\\';'; SELECT 2", []int{13}},
		{"CREATE RULE r AS ON INSERT TO a DO ALSO (INSERT INTO b VALUES (1); INSERT INTO b VALUES (2)); SELECT 1", []int{92}},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT f()", []int{105}},
		{"BEGIN; SELECT 1; END; SELECT 2", []int{5, 15, 20}},
		{"begin atomic; select 1", nil}, // not a body: a syntax error, nothing runs
	} {
		got, ok := separatorsOf(t, tc.src)
		if !ok {
			t.Fatalf("%q does not lex", tc.src)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %v, want %v", tc.src, got, tc.want)
		}
		if tc.src != "begin atomic; select 1" {
			if _, err := CheckSeparators(tc.src, got, EncodingUTF8); err != nil {
				t.Errorf("%q: %v", tc.src, err)
			}
		}
	}
}

func TestCheckSeparatorsDisagrees(t *testing.T) {
	for _, tc := range []struct {
		src  string
		seps []int
	}{
		{"SELECT 1; SELECT 2", []int{3}},
		{"SELECT 1; SELECT 2", nil},
		// A column begin with the label atomic is no body: the lexer
		// finds no separator, the parser two statements.
		{"SELECT begin atomic FROM (SELECT 1 AS begin) s; SELECT 2", nil},
	} {
		if _, err := CheckSeparators(tc.src, tc.seps, EncodingUTF8); err == nil {
			t.Errorf("%q, %v: passed", tc.src, tc.seps)
		}
	}
	if bare, err := CheckSeparators("SELECT 1; SELEC 2", []int{8}, EncodingUTF8); err != nil || bare != nil {
		t.Errorf("a text that does not parse: %v, %v", bare, err)
	}
}

// The statements a check in front of would take the snapshot of, and
// that need none.
func TestCheckSeparatorsBare(t *testing.T) {
	src := "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; LOCK TABLE t; SHOW x; SET CONSTRAINTS ALL DEFERRED; SELECT 1; SAVEPOINT a; INSERT INTO t VALUES (1); COMMIT"
	seps, _ := separatorsOf(t, src)
	bare, err := CheckSeparators(src, seps, EncodingUTF8)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, true, true, true, true, false, true, false, true}; !slices.Equal(bare, want) {
		t.Errorf("got %v, want %v", bare, want)
	}
}

// In SJIS the UTF-8 bytes of さ then a backslash are a kanji and 表
// (0x95 0x5C): the lexer under SJIS and the parser of the text the server
// reads agree on three statements.
func TestCheckSeparatorsShiftJIS(t *testing.T) {
	src := "SELECT E'さ\\'; SELECT 2; SELECT '-- '"
	toks, err := Lex(nil, src, LexOptions{Encoding: EncodingSJIS})
	if err != nil {
		t.Fatal(err)
	}
	seps := Separators(nil, src, toks)
	if len(seps) != 2 {
		t.Fatalf("separators %v", seps)
	}
	if _, err := CheckSeparators(src, seps, EncodingSJIS); err != nil {
		t.Error(err)
	}
	if _, err := CheckSeparators(src, seps, EncodingUTF8); err == nil {
		t.Error("read as UTF-8, the text holds one statement")
	}
}

// FuzzSeparators: wherever the parser reads a text, the lexer's
// separators are where it starts the statements after the first.
func FuzzSeparators(f *testing.F) {
	for _, s := range []string{
		"SELECT 1; SELECT 2",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 1",
		"CREATE RULE r AS ON INSERT TO a DO ALSO (NOTIFY a; NOTIFY b); SELECT 1",
		"SELECT 'a;' || $x$;$x$;;; /* ; /* ; */ */ VALUES (';')",
		"SELECT CASE WHEN x THEN 1 END; BEGIN; COMMIT",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		seps, ok := separatorsOf(t, src)
		if !ok {
			return
		}
		if _, err := CheckSeparators(src, seps, EncodingUTF8); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	})
}
