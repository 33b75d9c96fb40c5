package rewrite

import (
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestNormalizedUses: a comparison through a normalized index is a search
// of the column (ColumnUse ActionIndex), whether the proxy normalizes the
// value or not, so that access rules that allow or deny searching apply
// to lower(email) = $1 as to email = $1.
func TestNormalizedUses(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	email := pol.Table("public", "patients").Column("email")
	cat := collCatalog{seedCatalog, Collation{CTypeC: true}}
	for _, sql := range []string{
		"SELECT id FROM patients WHERE lower(email) = $1",
		"SELECT id FROM patients WHERE UPPER(email::text) = UPPER($1)",
		"SELECT a.id FROM patients a JOIN patients b ON lower(a.email) = lower(b.email)",
		"SELECT id FROM patients WHERE lower(email) = ANY($1)",
		"SELECT id FROM patients WHERE email IN (SELECT email FROM patients WHERE id = 1)",
	} {
		p, err := Analyze(sql, pol, cat)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if u := p.Statements[0].Uses; len(u) != 1 || u[0].Column != email || u[0].Action != ActionIndex {
			t.Errorf("%s: uses %v, want one search of email", sql, u)
		}
	}
}
