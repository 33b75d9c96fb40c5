package policy

import (
	"fmt"
	"strings"
)

// CreateOptions shape CreateTableSQL.
type CreateOptions struct {
	// Before and After are the table's own column definitions and table
	// constraints (SQL), placed before and after the PHI columns. With
	// neither, a comment asks for them.
	Before, After []string
	// IfNotExists makes the statements idempotent.
	IfNotExists bool
	// NoChecks leaves out the ciphertext CHECK constraints.
	NoChecks bool
}

// CreateTableSQL returns the statements that create t as phiproxy wants
// it: each PHI column in its storage type with its ciphertext CHECK
// constraint (named by CheckName; a new table holds no plaintext, so the
// constraint is there from the start), beside each searchable column a
// text column per blind index (Column.Indexes: the exact one, then the
// normalized ones), then a btree index on each blind-index column (named
// by IndexNameOf). A schema other than public is created too.
func CreateTableSQL(t *Table, o CreateOptions) []string {
	ine := ""
	if o.IfNotExists {
		ine = "IF NOT EXISTS "
	}
	table := QuoteQualified(t.Schema, t.Name)
	var out []string
	if t.Schema != "public" {
		out = append(out, fmt.Sprintf("CREATE SCHEMA IF NOT EXISTS %s;", QuoteIdent(t.Schema)))
	}
	cols := append([]string(nil), o.Before...)
	var indexes []string
	for _, c := range t.Columns {
		name := QuoteIdent(c.Name)
		def := fmt.Sprintf("%s %s", name, c.Storage)
		if !o.NoChecks {
			def += fmt.Sprintf(" CONSTRAINT %s CHECK (%s)", QuoteIdent(c.CheckName()), CiphertextCheck(name, c.Storage))
		}
		cols = append(cols, def)
		for _, bi := range c.Indexes() { // the exact index, then the normalized ones
			idx := QuoteIdent(bi.Column)
			cols = append(cols, idx+" text")
			indexes = append(indexes, fmt.Sprintf("CREATE INDEX %s%s ON %s (%s);", ine, QuoteIdent(c.IndexNameOf(bi)), table, idx))
		}
	}
	cols = append(cols, o.After...)
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s%s (\n", ine, table)
	if len(o.Before) == 0 && len(o.After) == 0 {
		b.WriteString("  -- the table's own columns and primary key go here\n")
	}
	b.WriteString("  " + strings.Join(cols, ",\n  ") + "\n);")
	out = append(out, b.String())
	return append(out, indexes...)
}
