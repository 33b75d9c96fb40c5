package rewrite

import (
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// FuzzAnalyze: arbitrary SQL never panics; every plan's SQL parses (with
// its literal slots filled), and on the rewritten parse tree no PHI column
// is compared with, assigned or inserted from a value the plan does not
// encrypt or index; AnalyzeSimple gives the same plan or error. Seeds: testdata/fuzz/FuzzAnalyze and the golden inputs.
func FuzzAnalyze(f *testing.F) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"INSERT INTO patients (email) VALUES ($1)",
		"SELECT * FROM patients WHERE email = 'a' OR ssn IN ($1, '2')",
		"UPDATE patients SET email = $1 WHERE email = $2 RETURNING *",
		"INSERT INTO patients (id, email) VALUES (1, 'x') ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email",
		"SELECT id FROM patients p WHERE lower(p.email) = lower($1) OR upper(email::text) NOT IN (upper('a'), NULL)",
		"DELETE FROM patients WHERE regexp_replace(ssn, '[^0-9]', '', 'g') = '1' AND lower(trim(email)) = $1",
		"SELECT a.id FROM patients a JOIN patients b ON lower(a.email) = lower(b.email) WHERE lower(a.email) = ANY($1::text[])",
	} {
		f.Add(s)
	}
	// A catalog whose collations have ctype C, so that normalized
	// matching is analyzed, not refused.
	cat := collCatalog{seedCatalog, Collation{CTypeC: true}}
	f.Fuzz(func(t *testing.T, sql string) {
		plan, err := Analyze(sql, pol, cat)
		// The simple-protocol path, from a cached shape, must agree.
		cache := NewCache(4, pol, cat)
		cache.AnalyzeSimple(sql)
		simple, simpleErr := cache.AnalyzeSimple(sql)
		if (err == nil) != (simpleErr == nil) || (err != nil && err.Error() != simpleErr.Error()) {
			t.Fatalf("Analyze error %v, AnalyzeSimple error %v\ninput: %s", err, simpleErr, sql)
		}
		if err == nil && renderPlan(plan) != renderPlan(simple) {
			t.Fatalf("AnalyzeSimple differs\ninput: %s\nAnalyze:\n%s\nAnalyzeSimple:\n%s", sql, renderPlan(plan), renderPlan(simple))
		}
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if plan.Passthrough {
			if plan.SQL != sql {
				t.Fatal("passthrough changed the text")
			}
			return
		}
		filled, err := fillTemplate(plan, func(Literal) string { return "'x'" })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pg.Parse(filled); err != nil {
			t.Fatalf("rewritten SQL does not parse: %v\n%s", err, filled)
		}
		if v := violations(filled, plan, pol); v != "" && !strings.Contains(v, "does not parse") {
			t.Fatalf("%s\ninput: %s\noutput: %s", v, sql, plan.SQL)
		}
	})
}
