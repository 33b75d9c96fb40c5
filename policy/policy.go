package policy

// This file is the contract between policy, rewrite, proxy and cmd. The
// loading and validation code lives beside it (load.go).

// LogicalType is the type an application sees for a PHI column. The database
// stores the column as Storage; the proxy converts at the wire.
type LogicalType string

// The logical types a policy may name.
const (
	TypeText        LogicalType = "text"
	TypeVarchar     LogicalType = "varchar"
	TypeInt4        LogicalType = "int4"
	TypeInt8        LogicalType = "int8"
	TypeNumeric     LogicalType = "numeric"
	TypeBool        LogicalType = "bool"
	TypeDate        LogicalType = "date"
	TypeTimestamptz LogicalType = "timestamptz"
	TypeUUID        LogicalType = "uuid"
	TypeJSONB       LogicalType = "jsonb"
	TypeBytea       LogicalType = "bytea"
)

// Storage is the PostgreSQL type that holds the ciphertext of a PHI column.
type Storage string

// The storage types: text holds the printable envelope, bytea the raw one.
const (
	StorageText  Storage = "text"
	StorageBytea Storage = "bytea"
)

// Policy is the validated, immutable PHI policy. The zero value protects
// nothing. Safe for concurrent use.
type Policy struct {
	// databases are the databases the policy governs (policy.databases),
	// in order; nil when the policy does not say.
	databases []string
	tables    []*Table
	byName    map[string]*Table // "schema.table" -> table
}

// Table is one table with PHI columns.
type Table struct {
	Schema  string    // e.g. "public"
	Name    string    // e.g. "patients"
	Columns []*Column // in policy order
	byName  map[string]*Column
	// Access is the table's `access:` default as written (access.go); nil
	// when it has none. Columns carry their resolved rule.
	Access *Access
}

// Column is one PHI column.
type Column struct {
	Table   *Table // back pointer, never nil for a loaded policy
	Name    string
	Type    LogicalType
	Storage Storage
	// AssociatedData is the identity the ciphertext is bound to:
	// "schema.table.column" unless the policy overrides it (a renamed column
	// keeps its old binding).
	AssociatedData string
	// BlindIndex is nil when the column cannot be searched.
	BlindIndex *BlindIndex
	// Access is who reads the column how (access.go); nil: no rule, every
	// role reads plaintext.
	Access *Access
}

// BlindIndex describes the sibling column that holds an HMAC of the value.
type BlindIndex struct {
	Column    string   // sibling column name, default "<column>_bidx"
	Normalize []string // normalizer names in order: trim, lower, digits, nfc
	Bits      int      // kept output bits, default 128, a multiple of 8
	// Group names the index key. Columns in one group share a key, so their
	// indexes can be joined; the default is the column's "schema.table.column",
	// which no other column shares.
	Group string
}

// Tables returns the tables in policy order.
func (p *Policy) Tables() []*Table {
	if p == nil {
		return nil
	}
	return p.tables
}

// Databases returns the databases the policy governs (policy.databases),
// or nil when it does not name them: then the commands that read the
// catalog (check, schema, keys usage) use the database of their connection
// settings.
func (p *Policy) Databases() []string {
	if p == nil {
		return nil
	}
	return p.databases
}

// Table returns the policy table schema.name, or nil.
func (p *Policy) Table(schema, name string) *Table {
	if p == nil {
		return nil
	}
	return p.byName[schema+"."+name]
}

// Column returns the PHI column of that name, or nil.
func (t *Table) Column(name string) *Column {
	if t == nil {
		return nil
	}
	return t.byName[name]
}

// QualifiedName returns "schema.table".
func (t *Table) QualifiedName() string { return t.Schema + "." + t.Name }

// QualifiedName returns "schema.table.column".
func (c *Column) QualifiedName() string { return c.Table.QualifiedName() + "." + c.Name }
