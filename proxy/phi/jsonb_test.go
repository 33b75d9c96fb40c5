package phi

import (
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestJSONBPG15: jsonb_in and jsonb_out. The expectations are PostgreSQL
// 15.18's ('<in>'::jsonb::text, or the SQLSTATE of its error).
func TestJSONBPG15(t *testing.T) {
	tests := []struct{ in, want, code string }{
		{"true", "true", ""},
		{"false", "false", ""},
		{"null", "null", ""},
		{"[true,false,null]", "[true, false, null]", ""},
		{"{\"a\":null}", "{\"a\": null}", ""},
		{"\"\\b\\f\\n\\r\\t\\\"\\\\\"", "\"\\b\\f\\n\\r\\t\\\"\\\\\"", ""},
		{"\"\\u0041\\u00E9\\u00e9\"", "\"Aéé\"", ""},
		{"\"\\ude00\"", "", "22P02"},
		{"\"\\ud83d\\ud83d\"", "", "22P02"},
		{"\"\\ud83dx\"", "", "22P02"},
		{"\"\\u12\"", "", "22P02"},
		{"\"\\u12g4\"", "", "22P02"},
		{"\"\\x\"", "", "22P02"},
		{"\"a", "", "22P02"},
		{"\"a\tb\"", "", "22P02"},
		{"\"\\u0001\\u001F\"", "\"\\u0001\\u001f\"", ""},
		{"1.", "", "22P02"},
		{"-", "", "22P02"},
		{"01", "", "22P02"},
		{"1e", "", "22P02"},
		{"1e+", "", "22P02"},
		{"1ea", "", "22P02"},
		{"-0", "0", ""},
		{"1.5E+2", "150", ""},
		{"1.23e-2", "0.0123", ""},
		{"0.0e0", "0.0", ""},
		{"-1.0e-0", "-1.0", ""},
		{"1e-2", "0.01", ""},
		{"12e1", "120", ""},
		{"[1,]", "", "22P02"},
		{"[1 2]", "", "22P02"},
		{"{\"a\"}", "", "22P02"},
		{"{\"a\":1,}", "", "22P02"},
		{"{1:2}", "", "22P02"},
		{"{\"a\":1 \"b\":2}", "", "22P02"},
		{"{}", "{}", ""},
		{"[]", "[]", ""},
		{"[[]]", "[[]]", ""},
		{"{\"a\":{}}", "{\"a\": {}}", ""},
		{" [ 1 , 2 ] ", "[1, 2]", ""},
		{"1 2", "", "22P02"},
		{"tru", "", "22P02"},
		{"nul", "", "22P02"},
		{"truex", "", "22P02"},
		{"[1]x", "", "22P02"},
		{"{\"a\":1}}", "", "22P02"},
		{"[", "", "22P02"},
		{"{", "", "22P02"},
		{"{\"a\":", "", "22P02"},
		{"{\"a\"", "", "22P02"},
		{"[1", "", "22P02"},
		{"\"\\/\"", "\"/\"", ""},
		{"\"\\", "", "22P02"},
		{"\"\\u", "", "22P02"},
		{"\"\\uD83D\\uDE00\"", "\"😀\"", ""},
		{"{\"b\":[],\"a\":{\"d\":1,\"c\":[{\"f\":true,\"e\":null}]}}", "{\"a\": {\"c\": [{\"e\": null, \"f\": true}], \"d\": 1}, \"b\": []}", ""},
		{"\"é\\u00e9\"", "\"éé\"", ""},
		{"\"\x7f\"", "\"\x7f\"", ""},
	}
	c := testCodec("ISO, MDY", "UTC")
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, code := readCanonical(t, c, policy.TypeJSONB, tt.in)
			if got != tt.want || code != tt.code {
				t.Errorf("jsonb %q: %q (SQLSTATE %q), want %q (SQLSTATE %q)", tt.in, got, code, tt.want, tt.code)
			}
		})
	}
}

// TestJSONBDepth: PostgreSQL's nesting limit is its stack depth, which
// the proxy cannot know; it reads 1000 levels and refuses deeper.
func TestJSONBDepth(t *testing.T) {
	c := testCodec("ISO, MDY", "UTC")
	for _, tt := range []struct {
		in   string
		code string
	}{
		{strings.Repeat("[", 1000) + strings.Repeat("]", 1000), ""},
		{strings.Repeat("[", 1001) + strings.Repeat("]", 1001), "0A000"},
		{strings.Repeat(`{"a":`, 1001) + "1" + strings.Repeat("}", 1001), "0A000"},
	} {
		got, code := readCanonical(t, c, policy.TypeJSONB, tt.in)
		if code != tt.code || code == "" && got != tt.in {
			t.Errorf("jsonb nested %d deep: %.20q (SQLSTATE %q), want SQLSTATE %q", len(tt.in)/2, got, code, tt.code)
		}
	}
}
