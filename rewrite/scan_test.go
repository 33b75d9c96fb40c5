package rewrite

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestMentionsPolicy checks the one-pass scan against a plain search for
// each needle in the ASCII-lowered text.
func TestMentionsPolicy(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	asciiLower := func(s string) string {
		b := []byte(s)
		for i := range b {
			b[i] = lower(b[i])
		}
		return string(b)
	}
	reference := func(sql string) bool {
		l := asciiLower(sql)
		for _, t := range pol.Tables() {
			if strings.Contains(l, asciiLower(t.Name)) {
				return true
			}
		}
		return strings.Contains(l, `u&"`) || strings.Contains(l, "execute")
	}
	cases := []string{"", "SELECT 1", "SELECT * FROM PATIENTS", "select * from pAtIeNtS p", "patient", "EXECUTE s(1)",
		`SELECT U&"\\0070atients"`, "SELECT bbalance FROM pgbench_branches", "xpatientsx", "patients"}
	words := []string{"pat", "ients", "PATIENTS", "exe", "cute", "U&", `"`, " ", "clinical_notes", "Ω", "accounts", "acc"}
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		var b strings.Builder
		for range r.IntN(8) {
			b.WriteString(words[r.IntN(len(words))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		if got, want := mentionsPolicy(c, pol), reference(c); got != want {
			t.Fatalf("mentionsPolicy(%q) = %v, want %v", c, got, want)
		}
	}
}
