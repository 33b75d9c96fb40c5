package rewrite

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/novamind/phiproxy/policy"
)

// TestValueTypes: each PHI value says the type it has before it meets the
// column (a cast, a number, a boolean, or none) and whether it is stored
// or compared, on both the literal and the parameter paths, and through
// the simple protocol's shapes.
func TestValueTypes(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(64, pol, seedCatalog)
	type use struct {
		Action Action
		Type   string
		Assign bool
	}
	tests := []struct {
		sql    string
		simple bool
		want   []use
	}{
		{"INSERT INTO patients (email) VALUES ($1)", false, // the exact index, then email_bidx_ci
			[]use{{ActionEncrypt, "", true}, {ActionIndex, "", true}, {ActionIndex, "", true}}},
		{"INSERT INTO patients (date_of_birth) VALUES ($1::timestamp)", false,
			[]use{{ActionEncrypt, "timestamp", true}}},
		{"SELECT 1 FROM patients WHERE email = $1::pg_catalog.varchar", false,
			[]use{{ActionIndex, "varchar", false}}},
		{"SELECT 1 FROM patients WHERE email = ANY($1::text[])", false,
			[]use{{ActionIndex, "text[]", false}}},
		{"SELECT 1 FROM patients WHERE email = $1::varchar(3)", false,
			[]use{{ActionIndex, TypeUnknown, false}}},
		{"SELECT 1 FROM patients WHERE email = $1::text::varchar", false,
			[]use{{ActionIndex, TypeUnknown, false}}},
		{"UPDATE patients SET email = $1 WHERE email = $1", false,
			[]use{{ActionEncrypt, "", true}, {ActionIndex, "", false}, {ActionIndex, "", true}, {ActionIndex, "", true}}},
		// Literals.
		{"INSERT INTO patients (email, date_of_birth) VALUES ('a', date '2020-01-02')", true,
			[]use{{ActionEncrypt, "", true}, {ActionIndex, "", true}, {ActionIndex, "", true}, {ActionEncrypt, "date", true}}},
		{"SELECT 1 FROM patients WHERE email = 42 OR email = TRUE OR email = 4::text", false,
			[]use{{ActionIndex, LiteralNumber, false}, {ActionIndex, LiteralBool, false}, {ActionIndex, TypeUnknown, false}}},
		{"SELECT 1 FROM patients WHERE email = 'x'::timestamptz", true,
			[]use{{ActionIndex, "timestamptz", false}}},
	}
	for _, tt := range tests {
		var p *Plan
		var err error
		if tt.simple {
			p, err = c.AnalyzeSimple(tt.sql)
		} else {
			p, err = c.Analyze(tt.sql)
		}
		if err != nil {
			t.Errorf("%s: %v", tt.sql, err)
			continue
		}
		var got []use
		for _, prm := range p.Params {
			if prm.Action != ActionNone {
				got = append(got, use{prm.Action, prm.Type, prm.Assign})
			}
		}
		for _, l := range p.Literals {
			got = append(got, use{l.Action, l.Type, l.Assign})
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.sql, d)
		}
	}
}
