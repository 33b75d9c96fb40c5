package seed

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
)

// TestPolicyMatchesExample keeps the embedded seed policy identical to
// the policy: section of config.example.yaml, its one source of truth.
func TestPolicyMatchesExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var section strings.Builder
	in := false
	for _, line := range strings.SplitAfter(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "policy:"):
			in = true
			continue
		case in && line != "" && line[0] != ' ' && line[0] != '#' && line[0] != '\n':
			in = false
		}
		if in {
			section.WriteString(strings.TrimPrefix(line, "  "))
		}
	}
	if section.Len() == 0 {
		t.Fatal("config.example.yaml has no policy: section")
	}
	if diff := cmp.Diff(section.String(), string(PolicyYAML)); diff != "" {
		t.Errorf("internal/seed/policy.yaml differs from the policy: section of config.example.yaml (-example +seed):\n%s", diff)
	}
	pol, err := Policy()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"public.patients", "public.clinical_notes"} {
		if _, ok := tableColumns[name]; !ok || pol.Table("public", strings.TrimPrefix(name, "public.")) == nil {
			t.Errorf("seed policy and tableColumns disagree about %s", name)
		}
	}
	if len(pol.Tables()) != len(tableColumns) {
		t.Errorf("seed policy has %d tables, tableColumns %d", len(pol.Tables()), len(tableColumns))
	}
}

func TestSchemaSQL(t *testing.T) {
	pol, err := Policy()
	if err != nil {
		t.Fatal(err)
	}
	sql := SchemaSQL(pol, true)
	for _, want := range []string{
		`CREATE TABLE IF NOT EXISTS public.patients (`,
		`email_bidx text`,
		`CREATE INDEX IF NOT EXISTS patients_email_bidx_idx ON public.patients (email_bidx);`,
		`email_bidx_ci text`,
		`CREATE INDEX IF NOT EXISTS patients_email_bidx_ci_idx ON public.patients (email_bidx_ci);`,
		`phone_bidx_digits text`,
		`ssn_bidx_digits text`,
		`first_name text CONSTRAINT patients_first_name_ciphertext CHECK (first_name IS NULL OR (starts_with(first_name, 'phi1:') AND length(first_name) >= 49`,
		`patient_id bigint NOT NULL REFERENCES public.patients (id)`,
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("SchemaSQL lacks %s\n%s", want, sql)
		}
	}
}

// TestCiphertextConstants holds policy's copy of the envelope constants
// (policy imports nothing of phiproxy) equal to crypto's, the source.
func TestCiphertextConstants(t *testing.T) {
	if policy.CiphertextPrefix != crypto.TextPrefix || policy.CiphertextVersion != crypto.Version1 || policy.CiphertextOverhead != crypto.Overhead {
		t.Fatalf("policy's envelope constants (%q, %d, %d) differ from crypto's (%q, %d, %d)",
			policy.CiphertextPrefix, policy.CiphertextVersion, policy.CiphertextOverhead, crypto.TextPrefix, crypto.Version1, crypto.Overhead)
	}
	if want := len(crypto.TextPrefix) + base64.RawStdEncoding.EncodedLen(crypto.Overhead); policy.MinCiphertextText != want {
		t.Fatalf("MinCiphertextText = %d, want %d", policy.MinCiphertextText, want)
	}
}

// TestCiphertextCheckDocumented keeps crypto/FORMAT.md's CHECK expressions
// those that policy.CiphertextCheck writes.
func TestCiphertextCheckDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "crypto", "FORMAT.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []policy.Storage{policy.StorageText, policy.StorageBytea} {
		if want := "CHECK (" + policy.CiphertextCheck("col", s) + ")"; !strings.Contains(string(doc), want) {
			t.Errorf("crypto/FORMAT.md lacks %s", want)
		}
	}
}

func TestPlainSchemaSQL(t *testing.T) {
	pol, err := Policy()
	if err != nil {
		t.Fatal(err)
	}
	sql := PlainSchemaSQL(pol)
	for _, want := range []string{
		`CREATE TABLE IF NOT EXISTS "public"."patients" (`,
		`"date_of_birth" date`,
		`"additional_info" jsonb`,
		`CREATE INDEX IF NOT EXISTS "patients_email_idx" ON "public"."patients" ("email");`,
		`patient_id bigint NOT NULL REFERENCES public.patients (id)`,
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("PlainSchemaSQL lacks %s\n%s", want, sql)
		}
	}
	for _, bad := range []string{"_bidx", "CHECK", "phi1:"} {
		if strings.Contains(sql, bad) {
			t.Errorf("PlainSchemaSQL holds %q:\n%s", bad, sql)
		}
	}
}

func TestPolicyFor(t *testing.T) {
	pol, err := Policy()
	if err != nil {
		t.Fatal(err)
	}
	if pol.Databases() != nil || !pol.Governs("app") || !pol.Governs("any") {
		t.Errorf("the example policy governs %v, want every database", pol.Databases())
	}
	other, err := PolicyFor("phi_encrypted", "x")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"phi_encrypted", "x"}, other.Databases()); d != "" {
		t.Errorf("PolicyFor databases (-want +got):\n%s", d)
	}
	if len(other.Tables()) != len(pol.Tables()) || !other.Governs("x") || other.Governs("app") {
		t.Error("PolicyFor changed more than the databases")
	}
}
