package policy

import (
	"strings"
	"testing"
)

func TestWithViews(t *testing.T) {
	p, err := Parse([]byte(`
tables:
  - name: public.patients
    columns:
      email: { type: text, blind_index: {} }
      dob: { type: date }
`))
	if err != nil {
		t.Fatal(err)
	}
	email, dob := p.Table("public", "patients").Column("email"), p.Table("public", "patients").Column("dob")
	if same, err := p.WithViews(nil); err != nil || same != p {
		t.Fatalf("no views: %p, %v; want the policy itself", same, err)
	}
	v, err := p.WithViews([]View{{Schema: "app", Name: "contacts", Columns: []ViewColumn{{Name: "mail", Base: email}, {Name: "born", Base: dob}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tables()) != 1 {
		t.Errorf("the policy was modified: %d tables", len(p.Tables()))
	}
	vt := v.Table("app", "contacts")
	if vt == nil || !vt.View || v.Table("public", "patients") != p.Table("public", "patients") {
		t.Fatalf("view table %+v", vt)
	}
	if ts := v.TablesNamed("contacts"); len(ts) != 1 || ts[0] != vt {
		t.Errorf("TablesNamed: %v", ts)
	}
	mail := vt.Column("mail")
	if mail == nil || mail.Base != email || mail.Root() != email || email.Root() != email || mail.Type != TypeText ||
		mail.Storage != email.Storage || mail.AssociatedData != email.AssociatedData || mail.Indexed() || len(mail.Indexes()) != 0 {
		t.Errorf("view column %+v", mail)
	}
	if mail.QualifiedName() != "app.contacts.mail" {
		t.Errorf("QualifiedName %q", mail.QualifiedName())
	}
	if vt.IndexColumn("email_bidx") != nil || vt.Column("email") != nil {
		t.Error("the view has the base table's names")
	}

	for _, tc := range []struct {
		name string
		view View
		want string
	}{
		{"named like a policy table", View{Schema: "public", Name: "patients"}, "already has a table"},
		{"duplicate column", View{Schema: "app", Name: "v", Columns: []ViewColumn{{Name: "a", Base: email}, {Name: "a", Base: dob}}}, "duplicate column"},
		{"no base", View{Schema: "app", Name: "v", Columns: []ViewColumn{{Name: "a"}}}, "base"},
		{"a view's column as base", View{Schema: "app", Name: "v", Columns: []ViewColumn{{Name: "a", Base: mail}}}, "base"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.WithViews([]View{tc.view}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
