package differential

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/novamind/phiproxy/internal/seed"
	"github.com/novamind/phiproxy/policy"
)

// The schema under test is the seed schema (internal/seed: patients and
// clinical_notes) plus phi_types, one column of every logical type the
// policy offers, so that every type's odd inputs are exercised. The seed
// tables come from seed.SchemaSQL and seed.PlainSchemaSQL; phi_types is
// built here in the same way.

// typesPolicyYAML is the phi_types entry appended to the seed policy. Its
// indexed columns have no normalizers: they are exact.
const typesPolicyYAML = `  - name: public.phi_types
    columns:
      v_text:        { type: text, blind_index: {} }
      v_varchar:     { type: varchar }
      v_int4:        { type: int4, blind_index: {} }
      v_int8:        { type: int8 }
      v_numeric:     { type: numeric }
      v_bool:        { type: bool }
      v_date:        { type: date, blind_index: {} }
      v_timestamptz: { type: timestamptz }
      v_uuid:        { type: uuid, blind_index: {} }
      v_jsonb:       { type: jsonb }
      v_bytea:       { type: bytea, storage: bytea }
`

// createdAtDefault replaces now() as the default of the seed tables'
// created_at, so that SELECT * agrees on both sides.
const createdAtDefault = "2000-01-01 00:00:00+00"

// policies returns the seed policy alone and the policy the proxy
// enforces: the seed policy plus phi_types.
func policies() (seedPol, full *policy.Policy, err error) {
	if seedPol, err = seed.Policy(); err != nil {
		return nil, nil, err
	}
	// The enc database is the one the proxy governs.
	yaml := strings.Replace(strings.TrimRight(string(seed.PolicyYAML), "\n"), "databases: [app]", "databases: [enc]", 1) + "\n" + typesPolicyYAML
	if full, err = policy.Parse([]byte(yaml)); err != nil {
		return nil, nil, fmt.Errorf("differential policy: %w", err)
	}
	return seedPol, full, nil
}

// schemaSQL returns the DDL of one side: encrypted (ciphertext columns with
// their CHECK constraints and blind-index columns) or plaintext.
func schemaSQL(seedPol, full *policy.Policy, encrypted bool) string {
	var b strings.Builder
	if encrypted {
		b.WriteString(seed.SchemaSQL(seedPol, true))
	} else {
		b.WriteString(seed.PlainSchemaSQL(seedPol))
	}
	b.WriteString(typesTableSQL(full.Table("public", "phi_types"), encrypted))
	for _, t := range []string{"patients", "clinical_notes"} {
		fmt.Fprintf(&b, "ALTER TABLE %s ALTER COLUMN created_at SET DEFAULT '%s';\n", t, createdAtDefault)
	}
	return b.String()
}

// typesTableSQL is phi_types: an integer primary key, then the policy's
// columns.
func typesTableSQL(t *policy.Table, encrypted bool) string {
	cols := []string{"id integer PRIMARY KEY"}
	var indexes []string
	for _, c := range t.Columns {
		name := pgx.Identifier{c.Name}.Sanitize()
		if !encrypted {
			cols = append(cols, fmt.Sprintf("%s %s", name, c.Type))
			if c.Indexed() {
				indexes = append(indexes, fmt.Sprintf("CREATE INDEX ON %s (%s);\n", t.Name, name))
			}
			continue
		}
		cols = append(cols, fmt.Sprintf("%s %s CHECK (%s)", name, c.Storage, policy.CiphertextCheck(name, c.Storage)))
		if c.Indexed() {
			idx := pgx.Identifier{c.BlindIndex.Column}.Sanitize()
			cols = append(cols, idx+" text")
			indexes = append(indexes, fmt.Sprintf("CREATE INDEX ON %s (%s);\n", t.Name, idx))
		}
	}
	return fmt.Sprintf("CREATE TABLE %s (\n  %s);\n%s", t.Name, strings.Join(cols, ",\n  "), strings.Join(indexes, ""))
}

// class is how the proxy can compare a column, which decides what the
// generator expects of it.
type class string

const (
	classNonPHI class = "nonphi" // not in the policy: PostgreSQL sees it as is
	classPlain  class = "plain"  // PHI without a blind index: not searchable
	classExact  class = "exact"  // PHI with a blind index of the exact value
	classNorm   class = "norm"   // PHI with normalized indexes too (search:, or a v1-form blind_index): values equal only after normalization abound
)

// column is one column of the logical schema, as the application sees it.
type column struct {
	table *table
	name  string
	typ   string // logical SQL type name
	oid   uint32 // its type OID
	class class
	pool  string // the value pool its values come from (values_test.go)
}

func (c *column) phi() bool { return c.class != classNonPHI }

// table is one table of the logical schema. Its first column is id.
type table struct {
	name string
	cols []*column
}

// phiCols returns the table's PHI columns.
func (t *table) phiCols() []*column {
	var out []*column
	for _, c := range t.cols {
		if c.phi() {
			out = append(out, c)
		}
	}
	return out
}

// col returns the named column; it panics on a name the model lacks.
func (t *table) col(name string) *column {
	for _, c := range t.cols {
		if c.name == name {
			return c
		}
	}
	panic("differential: no column " + t.name + "." + name)
}

// schema is the logical schema the generator writes statements against.
type schema struct {
	patients, notes, types *table
	tables                 []*table
}

// typeOIDs are the OIDs of the logical types (and of the non-PHI columns).
var typeOIDs = map[string]uint32{
	"text": pgtype.TextOID, "varchar": pgtype.VarcharOID, "int4": pgtype.Int4OID, "integer": pgtype.Int4OID,
	"int8": pgtype.Int8OID, "bigint": pgtype.Int8OID, "numeric": pgtype.NumericOID, "bool": pgtype.BoolOID,
	"date": pgtype.DateOID, "timestamptz": pgtype.TimestamptzOID, "uuid": pgtype.UUIDOID,
	"jsonb": pgtype.JSONBOID, "bytea": pgtype.ByteaOID,
}

// columnPools names the value pool of each column; other text columns
// draw from "name".
var columnPools = map[string]string{
	"email": "email", "phone": "phone", "ssn": "ssn",
	"address_line1": "address", "address_line2": "address", "city": "address", "state": "address",
	"postal_code": "address", "country": "address",
	"diagnosis": "note", "medication": "note", "treatment_notes": "note",
	"v_text": "text", "v_varchar": "text",
}

// newSchema builds the logical schema from the policy: the PHI columns in
// policy order between the non-PHI columns of seed.SchemaSQL.
func newSchema(pol *policy.Policy) *schema {
	nonPHI := map[string][2][][2]string{
		"patients":       {{{"id", "bigint"}}, {{"created_at", "timestamptz"}}},
		"clinical_notes": {{{"id", "bigint"}, {"patient_id", "bigint"}}, {{"created_at", "timestamptz"}}},
		"phi_types":      {{{"id", "integer"}}, nil},
	}
	s := &schema{}
	for _, pt := range pol.Tables() {
		t := &table{name: pt.Name}
		add := func(name, typ string, cl class) {
			pool := columnPools[name]
			if pool == "" {
				pool = typ
				if typ == "text" || typ == "varchar" {
					pool = "name"
				}
			}
			t.cols = append(t.cols, &column{table: t, name: name, typ: typ, oid: typeOIDs[typ], class: cl, pool: pool})
		}
		for _, nc := range nonPHI[pt.Name][0] {
			add(nc[0], nc[1], classNonPHI)
		}
		for _, c := range pt.Columns {
			cl := classPlain
			if c.Indexed() {
				cl = classExact
			}
			if len(c.Search) > 0 {
				cl = classNorm
			}
			add(c.Name, string(c.Type), cl)
		}
		for _, nc := range nonPHI[pt.Name][1] {
			add(nc[0], nc[1], classNonPHI)
		}
		s.tables = append(s.tables, t)
		switch t.name {
		case "patients":
			s.patients = t
		case "clinical_notes":
			s.notes = t
		case "phi_types":
			s.types = t
		}
	}
	return s
}
