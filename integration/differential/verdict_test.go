package differential

import (
	"slices"
	"testing"
)

// TestCompare checks the comparator on each kind of difference, so that
// the self-check's 0 differences cannot come from a comparator that never
// finds one.
func TestCompare(t *testing.T) {
	ok := result{
		fields: []field{{name: "id", oid: 20}, {name: "email", oid: 25}},
		rows:   [][]string{{"1", "a@x"}, {"2", nullText}},
		tag:    "SELECT 2",
	}
	with := func(f func(*result)) result {
		r := ok
		r.fields = slices.Clone(ok.fields)
		r.rows = slices.Clone(ok.rows)
		f(&r)
		return r
	}
	num := func(v string) result {
		return result{fields: []field{{name: "n", oid: 1700}}, rows: [][]string{{v}}, tag: "SELECT 1"}
	}
	setop := &statement{tags: []string{"setop.union.phi"}}
	for _, tc := range []struct {
		name    string
		st      *statement
		a, b    result
		outcome outcome
		kinds   []string
	}{
		{"same", nil, ok, ok, matched, nil},
		{"same rows in another order", nil, with(func(r *result) { r.rows[0], r.rows[1] = r.rows[1], r.rows[0] }), ok, matched, nil},
		{"same error", nil, result{code: "22P02", msg: "phiproxy: invalid"}, result{code: "22P02", msg: "invalid input"}, matched, nil},
		{"refused 0A000", nil, result{code: "0A000", msg: "phiproxy: LIKE on a PHI column"}, ok, refused, nil},
		{"refused 42601", nil, result{code: "42601", msg: "phiproxy: syntax error"}, ok, refused, nil},
		{"refused 55000", nil, result{code: "55000", msg: "phiproxy: catalog"}, ok, refused, nil},
		{"0A000 not from the proxy", nil, result{code: "0A000", msg: "not supported"}, ok, different, []string{kindSQLSTATE}},
		{"22P02 from the proxy is no refusal", nil, result{code: "22P02", msg: "phiproxy: invalid input"}, ok, different, []string{kindSQLSTATE}},
		{"other SQLSTATE", nil, result{code: "22P02"}, result{code: "22007"}, different, []string{kindSQLSTATE}},
		{"type", nil, with(func(r *result) { r.fields[1].oid = 1043 }), ok, different, []string{kindTypes}},
		{"format", nil, with(func(r *result) { r.fields[1].format = 1 }), ok, different, []string{kindTypes}},
		{"tag", nil, with(func(r *result) { r.tag = "SELECT 3" }), ok, different, []string{kindTag}},
		{"NULL vs empty", nil, with(func(r *result) { r.rows[1] = []string{"2", ""} }), ok, different, []string{kindRows}},
		{"extra row", nil, with(func(r *result) { r.rows = append(r.rows, []string{"3", "c"}); r.tag = "SELECT 3" }), ok, different, []string{kindTag, kindRows}},
		{"numeric scale", nil, num("1.50"), num("1.5"), different, []string{kindRows}},
		{"numeric scale after a set operation", setop, num("1.50"), num("1.5"), matched, nil},
		{"numeric value after a set operation", setop, num("1.51"), num("1.5"), different, []string{kindRows}},
		{"duplicate row", nil, with(func(r *result) { r.rows[1] = r.rows[0] }), ok, different, []string{kindRows}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := compare(tc.st, tc.a, tc.b)
			if v.outcome != tc.outcome || !slices.Equal(v.kinds, tc.kinds) {
				t.Errorf("compare = %v %v (%s), want %v %v", v.outcome, v.kinds, v.detail, tc.outcome, tc.kinds)
			}
		})
	}
}
