package phi

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/novamind/phiproxy/rewrite"
)

// readAll reads data, fed in pieces of the given sizes (the rest at once
// after them), into rows of fields ("\N" standing for NULL when the value
// is not itself that text... rendered by renderField) and the error with
// PostgreSQL's line number.
func readAll(o *rewrite.CopyOptions, data string, pieces ...int) (rows [][]string, lineno int64, err error) {
	r := newCopyReader(o)
	rest := []byte(data)
	read := func(eof bool) error {
		for {
			line, res, err := r.next(eof)
			if err != nil {
				return err
			}
			if res == lineMore {
				return nil
			}
			if len(line) > 0 || res == lineFull {
				if err := r.split(line); err != nil {
					return err
				}
				var row []string
				for i, f := range r.fields {
					row = append(row, renderField(f, r.value(i)))
				}
				rows = append(rows, row)
			}
			if res == lineLast {
				return nil
			}
		}
	}
	for _, n := range pieces {
		n = min(n, len(rest))
		r.feed(rest[:n])
		rest = rest[n:]
		if err := read(false); err != nil {
			return rows, r.lineno, err
		}
	}
	r.feed(rest)
	err = read(true)
	return rows, r.lineno, err
}

// renderField shows a field for comparisons: NULL as ∅, quoted fields
// marked.
func renderField(f copyField, v []byte) string {
	switch {
	case f.null:
		return "∅"
	case f.quoted:
		return "q:" + string(v)
	}
	return string(v)
}

var (
	textOpts = rewrite.CopyOptions{Delimiter: '\t', Null: `\N`}
	csvOpts  = rewrite.CopyOptions{Format: rewrite.CopyCSV, Delimiter: ',', Quote: '"', Escape: '"'}
)

// TestCopyReader: lines, fields, escapes, quotes, NULL, markers and
// PostgreSQL's errors, each fed whole and one byte at a time.
func TestCopyReader(t *testing.T) {
	csvSemi := rewrite.CopyOptions{Format: rewrite.CopyCSV, Delimiter: ';', Quote: '\'', Escape: '\\', Null: "N"}
	cases := []struct {
		name string
		o    *rewrite.CopyOptions
		in   string
		want [][]string
		err  string
		line int64
	}{
		{"text", &textOpts, "a\tb\n\\N\t\n", [][]string{{"a", "b"}, {"∅", ""}}, "", 2},
		{"text escapes", &textOpts, `\b\f\n\r\t\v\\\x41\x4g\101\7\18\q` + "\n", [][]string{{"\b\f\n\r\t\v\\A\x04gA\a\x018q"}}, "", 1},
		{"text escaped delimiter and newline", &textOpts, "a\\\tb\\\nc\n", [][]string{{"a\tb\nc"}}, "", 1},
		{"text no final newline", &textOpts, "a\tb", [][]string{{"a", "b"}}, "", 1},
		{"text empty line", &textOpts, "\n", [][]string{{""}}, "", 1},
		{"text CRLF", &textOpts, "a\r\nb\r\n", [][]string{{"a"}, {"b"}}, "", 2},
		{"text CR", &textOpts, "a\rb\r", [][]string{{"a"}, {"b"}}, "", 2},
		{"text CR after CRLF", &textOpts, "a\r\nb\rc\r\n", [][]string{{"a"}}, "literal carriage return found in data", 2},
		{"text LF after CR", &textOpts, "a\rb\n", [][]string{{"a"}}, "literal newline found in data", 2},
		{"text marker", &textOpts, "a\n\\.\nb\n", [][]string{{"a"}}, "", 2},
		{"text marker ends a line", &textOpts, "a\tb\\.\nc\n", [][]string{{"a", "b"}}, "", 1},
		{"text marker at EOF", &textOpts, "a\n\\.", [][]string{{"a"}}, "end-of-copy marker corrupt", 2},
		{"text marker corrupt", &textOpts, "a\n\\.x\n", [][]string{{"a"}}, "end-of-copy marker corrupt", 2},
		{"text marker CRLF style", &textOpts, "a\r\n\\.\n", [][]string{{"a"}}, "end-of-copy marker does not match previous newline style", 2},
		{"text marker CR style", &textOpts, "a\r\\.\n", [][]string{{"a"}}, "end-of-copy marker does not match previous newline style", 2},
		{"text backslash at EOF", &textOpts, "a\\", [][]string{{"a"}}, "", 1},
		{"text NUL escape", &textOpts, "a\\0b\n", nil, `invalid byte sequence for encoding "UTF8"`, 1},
		{"text NUL escape as NULL string", &rewrite.CopyOptions{Delimiter: '\t', Null: `\0`}, "\\0\n", [][]string{{"∅"}}, "", 1},
		{"text invalid UTF-8 escape", &textOpts, "\\xc3\\x28\n", nil, `invalid byte sequence for encoding "UTF8"`, 1},
		{"text valid UTF-8 escapes", &textOpts, "\\xc3\\xa9\n", [][]string{{"é"}}, "", 1},
		{"raw NUL", &textOpts, "a\nb\x00\n", [][]string{{"a"}}, `invalid byte sequence for encoding "UTF8"`, 2},
		{"raw invalid UTF-8", &textOpts, "a\n\xe2\x82\n", [][]string{{"a"}}, `invalid byte sequence for encoding "UTF8"`, 2},
		{"raw UTF-8", &textOpts, "é😀\n", [][]string{{"é😀"}}, "", 1},
		{"csv", &csvOpts, "a,\"b,c\",\"\",,\"say \"\"hi\"\"\"\n", [][]string{{"a", "q:b,c", "q:", "∅", `q:say "hi"`}}, "", 1},
		{"csv quotes inside", &csvOpts, "x\"y\"z,\"a\"b\n", [][]string{{"q:xyz", "q:ab"}}, "", 1},
		{"csv quoted newlines", &csvOpts, "\"a\nb\",c\n\"d\r\ne\"\n", [][]string{{"q:a\nb", "c"}, {"q:d\r\ne"}}, "", 3},
		{"csv quoted CR lines with CR endings", &csvOpts, "a\r\"b\rc\"\r", [][]string{{"a"}, {"q:b\rc"}}, "", 3},
		{"csv unterminated", &csvOpts, "\"abc\n", nil, "unterminated CSV quoted field", 1},
		{"csv marker", &csvOpts, "a\n\\.\nb\n", [][]string{{"a"}}, "", 2},
		{"csv marker is data", &csvOpts, "\\.x\n\"\\.\"\na\\.\n", [][]string{{`\.x`}, {`q:\.`}, {`a\.`}}, "", 3},
		{"csv marker with CRLF", &csvOpts, "a\r\n\\.\r\n", [][]string{{"a"}}, "", 2},
		{"csv marker wrong ending is data", &csvOpts, "a\r\n\\.\n", [][]string{{"a"}}, "unquoted newline found in data", 2},
		{"csv unquoted CR", &csvOpts, "a\nb\rc\n", [][]string{{"a"}}, "unquoted carriage return found in data", 2},
		{"csv other quote and escape", &csvSemi, "'a;b';'it\\'s';'x''y';N;'N';'\\\\'\n", [][]string{{"q:a;b", "q:it's", "q:xy", "∅", "q:N", `q:\`}}, "", 1},
		{"csv escape outside quotes", &csvSemi, "a\\'b\n", nil, "unterminated CSV quoted field", 1},
		{"empty input", &textOpts, "", nil, "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, pieces := range [][]int{nil, ones(len(tc.in))} {
				rows, line, err := readAll(tc.o, tc.in, pieces...)
				got := ""
				if err != nil {
					got = err.Error()
				}
				if got != tc.err || (tc.err != "" && line != tc.line) {
					t.Fatalf("pieces %v: error %q on line %d, want %q on line %d", pieces, got, line, tc.err, tc.line)
				}
				if tc.err == "" || tc.want != nil {
					if diff := cmp.Diff(tc.want, rows); diff != "" && !(tc.err != "" && len(rows) <= len(tc.want)) {
						t.Fatalf("pieces %v: rows (-want +got):\n%s", pieces, diff)
					}
				}
			}
		})
	}
}

func ones(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// TestCopyWriterRoundTrip: values written by copyWriter read back as
// themselves, in text and CSV with various options (COPY TO's output is
// COPY FROM's input).
func TestCopyWriterRoundTrip(t *testing.T) {
	vals := []string{"", "plain", "a\tb", "a,b", `say "hi"`, "back\\slash", "nl\nnl", "cr\rcr", `\.`, `\N`, "NULL", "é😀", "'quote'", "semi;colon", "ctl\x01\x7f", " sp "}
	opts := []rewrite.CopyOptions{
		textOpts,
		{Delimiter: '|', Null: "NULL"},
		{Delimiter: '\x01', Null: ""},
		csvOpts,
		{Format: rewrite.CopyCSV, Delimiter: ';', Quote: '\'', Escape: '\\', Null: "NULL"},
		{Format: rewrite.CopyCSV, Delimiter: '\t', Quote: '"', Escape: '"', Null: `\N`},
	}
	for _, o := range opts {
		o := o
		for _, force := range []bool{false, true} {
			for _, single := range []bool{false, true} {
				n := 2
				if single {
					n = 1
				}
				w := newCopyWriter(&o, n)
				var data []byte
				var want [][]string
				for _, v := range vals {
					if o.Format == rewrite.CopyText && v == o.Null {
						continue // ambiguous in text format, in PostgreSQL too
					}
					row := []string{v, "∅"}[:n]
					data = w.field(data, []byte(v), false, true, force)
					if n == 2 {
						data = w.field(data, nil, true, false, force)
					}
					data = append(data, '\n')
					want = append(want, row)
				}
				rows, _, err := readAll(&o, string(data))
				if err != nil {
					t.Fatalf("%v force=%v: %v\n%q", o, force, err, data)
				}
				for i := range rows {
					for j := range rows[i] {
						rows[i][j] = strings.TrimPrefix(rows[i][j], "q:")
					}
				}
				if diff := cmp.Diff(want, rows); diff != "" {
					t.Fatalf("%v force=%v single=%v (-want +got):\n%s\n%q", o, force, single, diff, data)
				}
			}
		}
	}
}

// TestAppendCopyText: PostgreSQL's escapes (CopyAttributeOutText).
func TestAppendCopyText(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        "plain",
		"a\tb\\c":      `a\tb\\c`,
		"\b\f\n\r\v":   `\b\f\n\r\v`,
		"x\x01y\x7f":   "x\x01y\x7f",
		"é":            "é",
		"|pipe|":       `\|pipe\|`,
		"\x1f\x00tail": "\x1f\x00tail",
	} {
		if got := string(appendCopyText(nil, []byte(in), '|')); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	if got := string(appendCopyText(nil, []byte("a\x01b"), '\x01')); got != "a\\\x01b" {
		t.Errorf("control delimiter: %q", got)
	}
}

// FuzzCopyReader: any data, in any options, fed in any pieces, reads as it
// reads fed whole; what it reads, written back by copyWriter, reads the
// same again.
func FuzzCopyReader(f *testing.F) {
	for _, s := range []string{"a\tb\n", "\\N\t\\\\x\r\n\\.\r\n", "\"a\nb\",\"\"\"\"\n\\.\n", "x\\\ny\\", "é\t\\xc3\\xa9\n", "'a;b';N\r"} {
		for o := range byte(4) {
			f.Add([]byte(s), o, uint16(3))
		}
	}
	fuzzOpts := []rewrite.CopyOptions{
		textOpts,
		csvOpts,
		{Format: rewrite.CopyCSV, Delimiter: ';', Quote: '\'', Escape: '\\', Null: "N"},
		{Delimiter: ',', Null: ""},
	}
	f.Fuzz(func(t *testing.T, data []byte, which byte, piece uint16) {
		o := fuzzOpts[int(which)%len(fuzzOpts)]
		whole, wholeLine, wholeErr := readAll(&o, string(data))
		var pieces []int
		for n := 0; n < len(data); n += int(piece%64) + 1 {
			pieces = append(pieces, int(piece%64)+1)
		}
		split, splitLine, splitErr := readAll(&o, string(data), pieces...)
		if fmt.Sprint(wholeErr) != fmt.Sprint(splitErr) || wholeLine != splitLine || !cmp.Equal(whole, split) {
			t.Fatalf("fed whole: %v line %d %q\nin pieces: %v line %d %q", wholeErr, wholeLine, whole, splitErr, splitLine, split)
		}
		if wholeErr != nil {
			return
		}
		var out []byte
		for _, row := range whole {
			w := newCopyWriter(&o, len(row)) // PostgreSQL's rows all have its columns
			for i, v := range row {
				null := v == "∅"
				v = strings.TrimPrefix(v, "q:")
				if o.Format == rewrite.CopyText && !null && v == o.Null {
					null = true // reads as NULL in text format, as in PostgreSQL
				}
				out = w.field(out, []byte(v), null, i == 0, false)
			}
			out = append(out, '\n')
		}
		again, _, err := readAll(&o, string(out))
		if err != nil {
			t.Fatalf("written back: %v\n%q", err, out)
		}
		norm := func(rows [][]string) string {
			var b bytes.Buffer
			for _, r := range rows {
				for _, v := range r {
					if o.Format == rewrite.CopyText && v == o.Null {
						v = "∅"
					}
					b.WriteString(strings.TrimPrefix(v, "q:") + "\x00")
				}
				b.WriteString("\n")
			}
			return b.String()
		}
		if norm(whole) != norm(again) {
			t.Fatalf("round trip:\n%q\n%q", norm(whole), norm(again))
		}
	})
}
