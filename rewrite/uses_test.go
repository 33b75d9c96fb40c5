package rewrite

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/novamind/phiproxy/policy"
)

// TestStatementUses: each statement lists the PHI columns it writes and
// searches, in the exact analysis and in plans made from a cached shape;
// the blind index added beside a written value is not a search.
func TestStatementUses(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sql  string
		want [][]string // per statement: "action column"
	}{
		{"INSERT INTO patients (email, city) VALUES ($1, $2)", [][]string{{"encrypt email", "encrypt city"}}},
		{"INSERT INTO patients (email, city) VALUES ('a@x', 'c'), ('b@x', NULL)", [][]string{{"encrypt email", "encrypt city"}}},
		{"SELECT id, email FROM patients WHERE email = $1", [][]string{{"index email"}}},
		{"SELECT id FROM patients WHERE ssn IN ('1', '2') OR phone = ANY($1)", [][]string{{"index ssn", "index phone"}}},
		{"UPDATE patients SET phone = $1 WHERE email = $2", [][]string{{"encrypt phone", "index email"}}},
		{"DELETE FROM patients WHERE id = 1", [][]string{nil}},
		{"SELECT p.id FROM patients p JOIN billing.accounts a ON a.holder_ssn = p.ssn", [][]string{{"index holder_ssn", "index ssn"}}},
		{"UPDATE patients SET city = 'x' WHERE id = 1; SELECT id FROM patients WHERE email = 'a@x'; SELECT 1",
			[][]string{{"encrypt city"}, {"index email"}, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			plans := map[string]func() (*Plan, error){
				"Analyze": func() (*Plan, error) { return Analyze(tt.sql, pol, seedCatalog) },
				"AnalyzeSimple": func() (*Plan, error) {
					c := NewCache(10, pol, seedCatalog)
					c.AnalyzeSimple(tt.sql)
					return c.AnalyzeSimple(tt.sql)
				},
			}
			for name, plan := range plans {
				p, err := plan()
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				var got [][]string
				for _, st := range p.Statements {
					var uses []string
					for _, u := range st.Uses {
						a := "encrypt"
						if u.Action == ActionIndex {
							a = "index"
						}
						uses = append(uses, a+" "+u.Column.Name)
					}
					got = append(got, uses)
				}
				if d := cmp.Diff(tt.want, got); d != "" {
					t.Errorf("%s: uses (-want +got):\n%s", name, d)
				}
				if fp := Fingerprint(tt.sql); fp == "" || (!p.Passthrough && fp != p.Fingerprint) {
					t.Errorf("%s: Fingerprint %q, plan's %q", name, fp, p.Fingerprint)
				}
			}
		})
	}
	if Fingerprint("SELECT 'unterminated") != "" {
		t.Error("Fingerprint of a text that does not parse")
	}
	if a, b := Fingerprint("SELECT * FROM patients WHERE email = 'a'"), Fingerprint("SELECT * FROM patients WHERE email = 'b'"); a != b || strings.Contains(a, "patients") {
		t.Errorf("fingerprints differ by value: %q %q", a, b)
	}
}
