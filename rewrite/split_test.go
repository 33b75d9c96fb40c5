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
			if err := CheckSeparators(tc.src, got); err != nil {
				t.Errorf("%q: %v", tc.src, err)
			}
		}
	}
}

func TestCheckSeparatorsDisagrees(t *testing.T) {
	if err := CheckSeparators("SELECT 1; SELECT 2", []int{3}); err == nil {
		t.Error("a wrong separator passed")
	}
	if err := CheckSeparators("SELECT 1; SELECT 2", nil); err == nil {
		t.Error("a missing separator passed")
	}
	if err := CheckSeparators("SELECT 1; SELEC 2", []int{8}); err != nil {
		t.Errorf("a text that does not parse: %v", err)
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
		if err := CheckSeparators(src, seps); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	})
}
