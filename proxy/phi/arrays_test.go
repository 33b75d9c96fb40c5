package phi

import (
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// TestArrayInPG15: the elements of a text array bound for = ANY($n), as
// array_in reads them. The expectations are PostgreSQL 15.18's
// (json_agg(e) over unnest('<in>'::text[]) e, or the SQLSTATE).
func TestArrayInPG15(t *testing.T) {
	tests := []struct{ in, want, code string }{
		{"{a,b}", "[\"a\",\"b\"]", ""},
		{"{\"a b\",NULL}", "[\"a b\",null]", ""},
		{"{ a , b }", "[\"a\",\"b\"]", ""},
		{"{\"a\\\"b\"}", "[\"a\\\"b\"]", ""},
		{"{a\\,b}", "[\"a,b\"]", ""},
		{"{}", "[]", ""},
		{"  {}  ", "[]", ""},
		{"{{a,b},{c,d}}", "[\"a\",\"b\",\"c\",\"d\"]", ""},
		// PostgreSQL reads the elements (["a","b"]); the proxy refuses
		// dimension decorations.
		{"[1:2]={a,b}", "", "0A000"},
		{"{a,b", "", "22P02"},
		{"{\"a\"b}", "", "22P02"},
		{"{NULL}", "[null]", ""},
		{"{\"NULL\"}", "[\"NULL\"]", ""},
		{"{null , Null}", "[null,null]", ""},
		{"{a b, c }", "[\"a b\",\"c\"]", ""},
		{"{{a},{b,c}}", "", "22P02"},
		{"{{a},{b},{c}}", "[\"a\",\"b\",\"c\"]", ""},
		{"{{{a,b},{c,d}},{{e,f},{g,h}}}", "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\"]", ""},
		{"{{{a,b},{c,d}},{{e,f}}}", "", "22P02"},
		{"{{a,b} , { c , d } }", "[\"a\",\"b\",\"c\",\"d\"]", ""},
		{"{{\"a\",NULL},{\"\",d}}", "[\"a\",null,\"\",\"d\"]", ""},
		{"{{a},{}}", "", "22P02"},
		{"{{a,b},{c,{d}}}", "", "22P02"},
		// PostgreSQL 15 reads this one as no elements at all (its array_in
		// does not check that sub-arrays nest alike; 17's refuses it).
		{"{{{a}},{b}}", "", "22P02"},
		{"{{a},b}", "", "22P02"},
		{"{a,{b}}", "", "22P02"},
		{"{{}}", "", "22P02"},
		{"{,}", "", "22P02"},
		{"{a,}", "", "22P02"},
		{"{\"a\" \"b\"}", "", "22P02"},
		{"{\"a\"\\b}", "", "22P02"},
		{"{a\"b\"}", "", "22P02"},
		{"{a{b}", "", "22P02"},
		{"x{a}", "", "22P02"},
		{"{a} x", "", "22P02"},
		{"{\\N\\U\\L\\L}", "[\"NULL\"]", ""},
		{"{\"\",\"\"}", "[\"\",\"\"]", ""},
		{"{{{{{{{a}}}}}}}", "", "54000"},
		{"{{{{{{a}}}}}}", "[\"a\"]", ""},
		{"{\"a\\\\\"}", "[\"a\\\\\"]", ""},
		{"{a\\}", "", "22P02"},
		{"{\\", "", "22P02"},
		{"{\"a", "", "22P02"},
		{"{ }", "[]", ""},
		{"{ \"a\" , \"b\" }", "[\"a\",\"b\"]", ""},
		{"{a   b  }", "[\"a   b\"]", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			elems, err := arrayElems(formatText, []byte(tt.in), pgtype.TextOID, policy.TypeText)
			got, code := "", ""
			if err != nil {
				code = proxy.Classify(err).Code
			} else {
				strs := make([]*string, len(elems))
				for i, e := range elems {
					if e != nil {
						s := string(e)
						strs[i] = &s
					}
				}
				b, _ := json.Marshal(strs)
				got = string(b)
			}
			if got != tt.want || code != tt.code {
				t.Errorf("array %q: %s (SQLSTATE %q), want %s (SQLSTATE %q)", tt.in, got, code, tt.want, tt.code)
			}
		})
	}
}
