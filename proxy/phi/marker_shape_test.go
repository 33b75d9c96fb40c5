package phi

import (
	"regexp"
	"testing"

	"github.com/novamind/phiproxy/rewrite"
)

// TestRenderMarkedFromShape: a simple Query made from its cached shape in
// the session's scratch (rewrite.SimpleScratch) is sent as the plan
// AnalyzeSimple makes of it: the same text, markers included, the same
// client position for every character sent and the same positions of the
// markers' errors, literals forwarded as written among them.
func TestRenderMarkedFromShape(t *testing.T) {
	pol, cols := testColumns(t)
	texts := []string{
		`UPDATE patients SET date_of_birth = 'nope' WHERE id = 'abc'`,
		`UPDATE patients SET date_of_birth = 'nope'::date, id = 'abc'`,
		`SELECT id FROM patients WHERE email IN ('a', 'b') AND id = 'x'`,
		`SELECT  'é', id FROM patients WHERE id = 'x' AND email = 'ab' AND id <> 'zz'`,
		`INSERT INTO patients (id, date_of_birth, email) VALUES ('1', 'nope', 'e')`,
		`INSERT INTO patients (id, email, date_of_birth) VALUES ('1', 'a', '2020-01-01'), ('2', 'b', 'nope') RETURNING id`,
		`INSERT INTO patients (id, email, date_of_birth) VALUES ('1', 'a', 'nope'), ('2', 'b', 'nope'), ('3', 'c', '2020-01-01')`,
		`INSERT INTO patients (id, photo) VALUES ('1', '\x0')`,
		`UPDATE patients SET email = 'x' WHERE id = 'y' RETURNING id`,
	}
	nonce := regexp.MustCompile(`phiproxy_(invalid|rows)_[0-9a-f]{16}`)
	for _, sql := range texts {
		c := rewrite.NewCache(100, pol, nil)
		want, err := c.AnalyzeSimple(sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		var sc rewrite.SimpleScratch
		got, err := c.AnalyzeSimpleScratch(&sc, sql, rewrite.LexOptions{})
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		render := sc.Render(got, sql)
		if render == got {
			t.Fatalf("%s: not made from its shape", sql)
		}
		wantText, wantR, err := newWriter(cols, nil).renderMarked(nil, want, sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		gotText, gotR, err := newWriter(cols, nil).renderMarked(nil, render, sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		w, g := nonce.ReplaceAllString(string(wantText), "N"), nonce.ReplaceAllString(string(gotText), "N")
		if w != g {
			t.Errorf("%s:\n from the shape %s\n AnalyzeSimple %s", sql, g, w)
			continue
		}
		wantPos := sentPositionOf(sql, string(wantText), want, wantR)
		gotPos := sentPositionOf(sql, string(gotText), render, gotR)
		if gotPos.runs == nil {
			t.Errorf("%s: no runs from the shape", sql)
		}
		for i := int32(1); i <= int32(len(wantText))+1; i++ {
			if wp, gp := wantPos.position(i), gotPos.position(i); wp != gp {
				t.Errorf("%s: position %d of %q is %d from the shape, %d by AnalyzeSimple", sql, i, g, gp, wp)
				break
			}
		}
		if (wantR.marks == nil) != (gotR.marks == nil) {
			t.Fatalf("%s: markers %v, want %v", sql, gotR.marks, wantR.marks)
		}
		if wantR.marks == nil {
			continue
		}
		if len(wantR.marks.markers) != len(gotR.marks.markers) {
			t.Fatalf("%s: %d markers, want %d", sql, len(gotR.marks.markers), len(wantR.marks.markers))
		}
		for k, m := range wantR.marks.markers {
			if gm := gotR.marks.markers[k]; gm.info.Position != m.info.Position || gm.info.Code != m.info.Code {
				t.Errorf("%s: marker %d: %+v, want %+v", sql, k, gm.info, m.info)
			}
		}
	}
}
