package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const accessDoc = `
tables:
  - name: public.patients
    access:
      plaintext: [clinician]
      masked: [billing, Support]
      search: [intake]
    columns:
      email:         { type: text, blind_index: {}, access: { mask: { last: 4, pad: "…" } } }
      ssn:           { type: text, blind_index: {}, access: { plaintext: [], masked: [public], mask: { replace: "XXX-XX-XXXX" } } }
      date_of_birth: { type: date, access: { mask: year } }
      visits:        { type: int4, access: { mask: { replace: 0 } } }
      notes:         { type: text }
  - name: public.open
    columns:
      city: { type: text }
`

func TestAccessRules(t *testing.T) {
	p, err := Parse([]byte(accessDoc))
	if err != nil {
		t.Fatal(err)
	}
	pt := p.Table("public", "patients")
	got := map[string]*Access{}
	for _, c := range pt.Columns {
		got[c.Name] = c.Access
	}
	got["city"] = p.Table("public", "open").Column("city").Access
	roles := []string{"clinician"}
	masked := []string{"billing", "Support"}
	search := []string{"intake"}
	want := map[string]*Access{
		"email":         {Plaintext: roles, Masked: masked, Search: search, Mask: Mask{Kind: MaskLast, Last: 4, Pad: "…"}},
		"ssn":           {Plaintext: []string{}, Masked: []string{Public}, Search: search, Mask: Mask{Kind: MaskReplace, Replace: "XXX-XX-XXXX"}},
		"date_of_birth": {Plaintext: roles, Masked: masked, Search: search, Mask: Mask{Kind: MaskYear}},
		"visits":        {Plaintext: roles, Masked: masked, Search: search, Mask: Mask{Kind: MaskReplace, Replace: "0"}},
		"notes":         {Plaintext: roles, Masked: masked, Search: search, Mask: Mask{Kind: MaskNull}},
		"city":          nil,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("resolved access (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"Support", "billing", "clinician", "intake"}, p.AccessRoles()); d != "" {
		t.Errorf("AccessRoles (-want +got):\n%s", d)
	}
	if !p.HasAccessRules() {
		t.Error("HasAccessRules = false")
	}
	seed, _ := Parse([]byte(seed))
	if seed.HasAccessRules() || len(seed.AccessRoles()) != 0 {
		t.Error("a policy without access rules has some")
	}

	type result struct {
		Read   Read
		Search bool
	}
	for _, tt := range []struct {
		col   string
		roles []string
		want  result
	}{
		{"email", []string{"clinician"}, result{ReadPlaintext, true}},
		{"email", []string{"billing"}, result{ReadMasked, false}},
		{"email", []string{"support"}, result{ReadDenied, false}}, // role names are case-sensitive
		{"email", []string{"intake"}, result{ReadDenied, true}},
		{"email", []string{"billing", "intake"}, result{ReadMasked, true}},
		{"email", []string{"billing", "clinician"}, result{ReadPlaintext, true}}, // rights add up
		{"email", []string{"nobody"}, result{ReadDenied, false}},
		{"ssn", []string{"clinician"}, result{ReadMasked, false}}, // public masked, nobody plaintext
		{"ssn", []string{"nobody"}, result{ReadMasked, false}},
		{"notes", nil, result{ReadDenied, false}},
	} {
		set := map[string]bool{}
		for _, r := range tt.roles {
			set[r] = true
		}
		var got result
		got.Read, got.Search = pt.Column(tt.col).Access.For(set)
		if got != tt.want {
			t.Errorf("%s for %v = %+v, want %+v", tt.col, tt.roles, got, tt.want)
		}
	}
	var none *Access
	if r, s := none.For(nil); r != ReadPlaintext || !s {
		t.Error("no rule must read plaintext and search")
	}
}

func TestAccessValidation(t *testing.T) {
	doc := func(table, col string) string {
		return "tables:\n  - name: t\n" + table + "    columns:\n      a: { type: date" + col + " }\n      b: { type: text, access: { masked: [x] } }\n"
	}
	tests := []struct {
		name, doc string
		want      string
	}{
		{"unknown field", doc("", ", access: { readers: [x] }"), `line 4: unknown field "readers" in access of public.t.a`},
		{"mask last on a date", doc("", ", access: { mask: { last: 4 } }"), "line 4: access of public.t.a: mask last needs a text or varchar column, not date"},
		{"inherited mask does not fit", doc("    access: { mask: year }\n", ""), "access of public.t.b: mask year needs a date or timestamptz column, not text (inherited from the table's access: give the column its own mask)"},
		{"unknown mask", doc("", ", access: { mask: hash }"), `access of public.t.a: mask "hash": want null, year`},
		{"last out of range", "tables:\n  - name: t\n    columns:\n      a: { type: text, access: { mask: { last: 0 } } }\n", "mask last must be an integer from 1 to 64"},
		{"bad replacement", "tables:\n  - name: t\n    columns:\n      a: { type: int4, access: { mask: { replace: none } } }\n", "mask replace: the value is not a valid int4"},
		{"bad json replacement", "tables:\n  - name: t\n    columns:\n      a: { type: jsonb, access: { mask: { replace: \"{x\" } } }\n", "not a valid jsonb"},
		{"pad without last", "tables:\n  - name: t\n    columns:\n      a: { type: text, access: { mask: { replace: x, pad: y } } }\n", "pad goes with last"},
		{"role in both", doc("    access: { plaintext: [x], masked: [x] }\n", ""), `line 3: access of public.t: role "x" is in both plaintext and masked`},
		{"role in both after override", doc("    access: { plaintext: [x] }\n", ""), `access of public.t.b: role "x" is in both plaintext and masked`},
		{"roles not a list", doc("", ", access: { plaintext: x }"), "access of public.t.a: plaintext must be a list of role names"},
		{"duplicate role", doc("", ", access: { plaintext: [x, x] }"), `duplicate role "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}
