package rewrite

import (
	"errors"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestMigratingRefusesIndexComparisons: while a table is in migration
// (policy migrating: true), every comparison through one of its blind
// indexes is refused (0A000): rows not yet encrypted have none, so the
// comparison would miss them. Writes, reads and IS NULL go on, and other
// tables are unaffected. Each refused statement is accepted without the
// flag.
func TestMigratingRefusesIndexComparisons(t *testing.T) {
	base, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	migrating, err := policy.Parse([]byte(strings.Replace(seedPolicy, "  - name: public.patients\n", "  - name: public.patients\n    migrating: true\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !migrating.Table("public", "patients").Migrating || base.Table("public", "patients").Migrating {
		t.Fatal("migrating: true not read")
	}
	cat := collCatalog{seedCatalog, Collation{CTypeC: true}}
	refused := []string{
		"SELECT id FROM patients WHERE email = $1",
		"SELECT id FROM patients WHERE email <> 'a@x.org'",
		"SELECT id FROM patients WHERE email IS NOT DISTINCT FROM $1",
		"SELECT id FROM patients WHERE ssn IN ('1', '2')",
		"SELECT id FROM patients WHERE phone = ANY($1)",
		"SELECT id FROM patients WHERE lower(email) = lower($1)",
		"SELECT id FROM patients WHERE regexp_replace(phone, '[^0-9]', '', 'g') = $1",
		"UPDATE patients SET city = $1 WHERE email = $2",
		"DELETE FROM patients WHERE ssn = $1",
		"SELECT p.id FROM patients p JOIN billing.accounts a ON a.holder_ssn = p.ssn",
		"SELECT id FROM billing.accounts WHERE holder_ssn IN (SELECT ssn FROM patients)",
		"INSERT INTO patients (id, email) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING",
	}
	allowed := []string{
		"SELECT id, email, ssn, date_of_birth FROM patients WHERE id = $1",
		"SELECT * FROM patients",
		"SELECT count(email) FROM patients WHERE email IS NULL",
		"INSERT INTO patients (email, ssn, phone) VALUES ($1, $2, '555-0100')",
		"UPDATE patients SET email = $1, phone = $2 WHERE id = $3 RETURNING email",
		"DELETE FROM patients WHERE id = 1",
		"SELECT id FROM billing.accounts WHERE holder_ssn = $1",
	}
	analyze := map[string]func(pol *policy.Policy, sql string) error{
		"Analyze": func(pol *policy.Policy, sql string) error { _, err := Analyze(sql, pol, cat); return err },
		"AnalyzeSimple": func(pol *policy.Policy, sql string) error {
			c := NewCache(10, pol, cat)
			_, err := c.AnalyzeSimple(sql)
			return err
		},
	}
	for name, run := range analyze {
		for _, sql := range refused {
			if err := run(base, sql); err != nil {
				t.Errorf("%s without the flag: %q: %v", name, sql, err)
			}
			err := run(migrating, sql)
			var re *Error
			if !errors.As(err, &re) || re.Code != CodeFeatureNotSupported || !strings.Contains(re.Message, "is being migrated (policy migrating: true)") {
				t.Errorf("%s migrating: %q: %v, want 0A000 naming the migration", name, sql, err)
			}
		}
		for _, sql := range allowed {
			if err := run(migrating, sql); err != nil {
				t.Errorf("%s migrating: %q: %v", name, sql, err)
			}
		}
	}
}
