// Package seed is the seed schema of phiproxy's first customer: the PHI
// policy of config.example.yaml (policy.yaml, kept identical to it by a
// test) and the tables phiproxy wants for it. The demo and the benchmark
// build on it; it holds no data.
package seed

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/novamind/phiproxy/policy"
)

// PolicyYAML is the `policy:` section of config.example.yaml, dedented.
//
//go:embed policy.yaml
var PolicyYAML []byte

// Policy parses PolicyYAML.
func Policy() (*policy.Policy, error) { return policy.Parse(PolicyYAML) }

// tableColumns are the columns of the seed tables that the policy does
// not protect, before and after the PHI columns.
var tableColumns = map[string][2][]string{
	"public.patients": {
		{"id bigserial PRIMARY KEY"},
		{"created_at timestamptz NOT NULL DEFAULT now()"},
	},
	"public.clinical_notes": {
		{"id bigserial PRIMARY KEY", "patient_id bigint NOT NULL REFERENCES public.patients (id)"},
		{"created_at timestamptz NOT NULL DEFAULT now()"},
	},
}

// SchemaSQL returns the DDL of the policy's tables as phiproxy wants
// them (policy.CreateTableSQL, with the seed's own columns): each PHI
// column in its storage type with a CHECK constraint that only accepts
// ciphertext (the database itself refuses a plaintext write that bypasses
// the proxy), and after each searchable column a text blind-index column
// with a btree index per blind index, exact first (policy.Column.Indexes).
// IF NOT EXISTS makes it idempotent.
//
// checks adds the CHECK constraints; the benchmark leaves them out, as its
// plaintext twin has none (they cost about 1 µs per PHI column per write).
func SchemaSQL(pol *policy.Policy, checks bool) string {
	var b strings.Builder
	for _, t := range pol.Tables() {
		extra := tableColumns[t.QualifiedName()]
		for _, s := range policy.CreateTableSQL(t, policy.CreateOptions{
			Before: extra[0], After: extra[1], IfNotExists: true, NoChecks: !checks,
		}) {
			b.WriteString(s + "\n")
		}
	}
	return b.String()
}

// PlainSchemaSQL returns the DDL of the policy's tables in plaintext: the
// twin that differential tests and benchmarks compare phiproxy with. It has
// the columns of SchemaSQL in the same order, each PHI column in its
// logical type, no blind-index columns, and a btree index on each column
// that has a blind index. IF NOT EXISTS makes it idempotent.
func PlainSchemaSQL(pol *policy.Policy) string {
	var b strings.Builder
	for _, t := range pol.Tables() {
		table := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		extra := tableColumns[t.QualifiedName()]
		cols := append([]string(nil), extra[0]...)
		var indexes []string
		for _, c := range t.Columns {
			name := pgx.Identifier{c.Name}.Sanitize()
			cols = append(cols, fmt.Sprintf("%s %s", name, c.Type))
			if c.Indexed() {
				indexes = append(indexes, fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%s);\n",
					pgx.Identifier{t.Name + "_" + c.Name + "_idx"}.Sanitize(), table, name))
			}
		}
		cols = append(cols, extra[1]...)
		fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s (\n  %s);\n", table, strings.Join(cols, ",\n  "))
		for _, s := range indexes {
			b.WriteString(s)
		}
	}
	return b.String()
}

// PolicyFor is the seed policy governing only the given databases (the
// example's governs every one: see config.example.yaml).
func PolicyFor(databases ...string) (*policy.Policy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(PolicyYAML, &doc); err != nil {
		return nil, err
	}
	root := doc.Content[0]
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, db := range databases {
		seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: db})
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "databases" {
			root.Content = append(root.Content[:i], root.Content[i+2:]...)
			break
		}
	}
	root.Content = append([]*yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: "databases"}, seq}, root.Content...)
	return policy.Load(root)
}
