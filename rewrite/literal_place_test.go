package rewrite

import (
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestLiteralPlaces checks what a plan says of where each literal is: its
// constant in the client's text (Loc), the column name it is stored into
// (Target, in the plan's SQL) and its VALUES row, on the direct path and
// on the path through a cached shape.
func TestLiteralPlaces(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	type place struct {
		lit    string // the literal as written (its Loc points at it)
		target string // the text of the plan's SQL that ends at Target, "" for none
		row    int
	}
	cases := []struct {
		sql  string
		want []place // the encrypted and compared literals, in order
	}{
		{`UPDATE patients SET email = 'a@b.c', city = E'x' WHERE ssn = '1' AND id = 7`,
			[]place{{`'a@b.c'`, "SET email", 0}, {`E'x'`, ", city", 0}, {`'1'`, "", 0}}},
		{`INSERT INTO patients (id, email, city) VALUES (1, 'a', 'b'), (2, 'c', 'd'::text)`,
			[]place{{`'a'`, "(id, email", 0}, {`'b'`, "email_bidx_ci, city", 0}, {`'c'`, "(id, email", 1}, {`'d'::text`, "email_bidx_ci, city", 1}}},
		{`INSERT INTO patients VALUES (1, 'Ann', 'Lee', '1980-01-02')`,
			[]place{{`'Ann'`, "(id, first_name", 0}, {`'Lee'`, "first_name, last_name", 0}, {`'1980-01-02'`, "last_name, date_of_birth", 0}}},
		{`SELECT id FROM patients WHERE email IN ('x', 'y')`,
			[]place{{`'x'`, "", 0}, {`'y'`, "", 0}}},
		{`INSERT INTO patients (id, city) VALUES (3, 'c') ON CONFLICT (id) DO UPDATE SET city = 'e'`,
			[]place{{`'c'`, "(id, city", 0}, {`'e'`, "UPDATE SET city", 0}}},
	}
	for _, tc := range cases {
		direct, err := Analyze(tc.sql, pol, seedCatalog)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		cache := NewCache(10, pol, seedCatalog)
		cache.AnalyzeSimple(tc.sql)
		shaped, err := cache.AnalyzeSimple(tc.sql)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		for _, plan := range []*Plan{direct, shaped} {
			var got []place
			for _, l := range plan.Literals {
				if l.Action == ActionIndex && l.Assign {
					continue // the index added beside a stored value
				}
				p := place{row: l.Row}
				for _, want := range tc.want {
					if strings.HasPrefix(tc.sql[l.Loc:], want.lit) {
						p.lit = want.lit
					}
				}
				if l.Target > 0 {
					for _, want := range tc.want {
						if want.target != "" && strings.HasSuffix(plan.SQL[:l.Target], want.target) {
							p.target = want.target
						}
					}
					if p.target == "" {
						p.target = "?" + plan.SQL[max(0, l.Target-20):l.Target]
					}
				}
				got = append(got, p)
			}
			if len(got) != len(tc.want) {
				t.Errorf("%s: %d literals %+v, want %+v", tc.sql, len(got), got, tc.want)
				continue
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("%s: literal %d: got %+v, want %+v\n%s", tc.sql, i, got[i], tc.want[i], plan.SQL)
				}
			}
		}
	}
}

// TestInsertValuesLayout checks the layout of a multi-row INSERT on both
// paths: each part of the plan's SQL it points at.
func TestInsertValuesLayout(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`SELECT 1; INSERT INTO patients (id, email) VALUES (1, 'a'), (2, 'b') RETURNING id`,
		`WITH x AS (SELECT 1) INSERT INTO patients (id, email) VALUES (1, 'a'), ((2), 'b'), (3, E'c');`,
		`INSERT INTO patients VALUES (1, 'a'), (2, 'b')`,
		`INSERT INTO patients (id, city) VALUES (1, 'a'), (2, 'b') ON CONFLICT (id) DO UPDATE SET email = 'c'`,
	} {
		direct, err := Analyze(sql, pol, seedCatalog)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		cache := NewCache(10, pol, seedCatalog)
		cache.AnalyzeSimple(sql)
		shaped, err := cache.AnalyzeSimple(sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		for _, plan := range []*Plan{direct, shaped} {
			st := plan.Statements[len(plan.Statements)-1]
			v := st.Values
			if v == nil {
				t.Fatalf("%s: no layout", sql)
			}
			q := plan.SQL
			stmt := strings.TrimSpace(strings.TrimSuffix(q[v.Start:v.End], ";"))
			if last := strings.TrimSpace(strings.TrimSuffix(q[v.End:], ";")); last != "" {
				t.Errorf("%s: after the statement's end: %q", sql, last)
			}
			if !strings.HasPrefix(q[v.Insert:], "INSERT INTO patients") || !strings.HasSuffix(q[:v.Values], "VALUES") ||
				(strings.HasPrefix(sql, "WITH") != strings.HasPrefix(stmt, "WITH")) || strings.HasPrefix(stmt, "SELECT") {
				t.Errorf("%s: layout %+v of %q", sql, v, q)
			}
			for i, r := range v.Rows {
				row := q[r[0]:r[1]]
				if !strings.HasPrefix(row, "(") || !strings.HasSuffix(row, ")") || !strings.Contains(row, "$0") {
					t.Errorf("%s: row %d is %q", sql, i, row)
				}
			}
			if len(v.Rows) < 2 {
				t.Errorf("%s: %d rows", sql, len(v.Rows))
			}
		}
	}
}

// TestRuns: each run of a plan is a copy of the input, on both paths, and
// the runs cover the plain values the server may report an error at.
func TestRuns(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sql, covered string }{
		{`UPDATE patients SET email = 'a@b.c', city = E'x' WHERE ssn = '1' AND id = 'abc'`, `'abc'`},
		{`INSERT INTO patients (id, email, city) VALUES ('abc', 'a', 'b'), (2, 'c', 'd'::text)`, `'abc'`},
		{`INSERT INTO patients VALUES ('abc', 'Ann', 'Lee', '1980-01-02')`, `'abc'`},
		{`SELECT 'é', id FROM patients WHERE email IN ('x', 'y') AND created_at = 'nope' ORDER BY 1`, `'nope'`},
		{`SELECT 1; DELETE FROM patients WHERE phone = '1' AND id = '1.5'`, `'1.5'`},
	} {
		direct, err := Analyze(tc.sql, pol, seedCatalog)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		cache := NewCache(10, pol, seedCatalog)
		cache.AnalyzeSimple(tc.sql)
		shaped, err := cache.AnalyzeSimple(tc.sql)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		for _, plan := range []*Plan{direct, shaped} {
			covered := false
			at := strings.Index(tc.sql, tc.covered)
			for i, r := range plan.Runs {
				if plan.SQL[r.SQL:r.SQL+r.Len] != tc.sql[r.Text:r.Text+r.Len] {
					t.Errorf("%s: run %d %+v: %q is not %q", tc.sql, i, r, plan.SQL[r.SQL:r.SQL+r.Len], tc.sql[r.Text:r.Text+r.Len])
				}
				if i > 0 && (r.SQL < plan.Runs[i-1].SQL+plan.Runs[i-1].Len || r.Text < plan.Runs[i-1].Text+plan.Runs[i-1].Len) {
					t.Errorf("%s: run %d %+v overlaps the one before", tc.sql, i, r)
				}
				covered = covered || r.Text <= at && at+len(tc.covered) <= r.Text+r.Len
			}
			if !covered {
				t.Errorf("%s: %s is in no run: %+v\n%s", tc.sql, tc.covered, plan.Runs, plan.SQL)
			}
		}
	}
}
