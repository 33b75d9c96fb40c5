package policy

// This file is the contract between policy, rewrite, proxy and cmd. The
// loading and validation code lives beside it (load*.go).

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
	tables []*Table
	byName map[string]*Table // "schema.table" -> table
	// databases are the databases the policy governs, as clients name them
	// in their startup message; nil governs every database (see Governs).
	databases []string
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
	// Migrating (`migrating: true`) marks a table that `phiproxy migrate
	// encrypt` is adopting online: rows it has not reached yet still hold
	// plaintext. The proxy then returns a stored PHI value that is not an
	// envelope as the value it is (validated against the logical type,
	// canonicalized as migrate encrypt will encrypt it, counted, never
	// logged) instead of failing, refuses every comparison through the
	// table's blind indexes (those rows have none, so a lookup would miss
	// them: 0A000), and writes as always (encrypted, indexed). Remove it,
	// and reload, once migrate encrypt has finished and the ciphertext
	// CHECK constraints are validated.
	Migrating bool
	// View marks a view over policy tables added by WithViews (view.go):
	// read-only, its columns without blind indexes.
	View bool
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
	// BlindIndex is the column's exact blind index: an HMAC of the
	// canonical value itself, with no normalizer. It is what =, <>, IN,
	// = ANY, <> ALL, IS [NOT] DISTINCT FROM, joins and ON CONFLICT compare.
	// nil when the column has none: those are then refused.
	BlindIndex *BlindIndex
	// Search are the column's normalized blind indexes, in policy order:
	// the `search:` mapping, or the single index of a v1-form
	// `blind_index: {normalize: [...]}` (see BlindIndex.V1). SQL that asks
	// for normalized matching, such as lower(email) = lower($1), compares
	// one of them when its normalizers compute exactly that SQL.
	Search []*BlindIndex
	// Access is who reads the column how (access.go); nil: no rule, every
	// role reads plaintext.
	Access *Access
	// Base is, for a column of a view (Table.View), the policy table's
	// column it copies; nil for a policy table's own columns.
	Base *Column

	indexes []*BlindIndex // BlindIndex (if any), then Search
}

// BlindIndex describes one sibling column that holds an HMAC of the value
// (exact) or of its normalized form.
//
// Storage naming: the exact index is stored in "<column>_bidx", a
// normalized index named n (the key under `search:`) in
// "<column>_bidx_<n>", unless the policy sets `column:`. A v1-form
// normalized index keeps "<column>_bidx", where its values already are.
// Every column of Column.Indexes is written on INSERT, UPDATE and upsert;
// DDL tools must create each of them (text, with a btree index).
type BlindIndex struct {
	// Name is "" for the exact index, the key under `search:` for a
	// normalized one, and "v1" for the normalized index of a v1-form
	// blind_index.
	Name      string
	Column    string   // sibling column name, see above
	Normalize []string // normalizer names in order: empty for the exact index
	Bits      int      // kept output bits, default 128, a multiple of 8
	// Group names the index key. Columns in one group share a key, so their
	// indexes can be joined; the default is the column's "schema.table.column",
	// which no other column shares. A column's normalized indexes take the
	// group of its exact index.
	Group string
	// V1 marks the normalized index of a v1-form `blind_index: {normalize:
	// [...]}`. It is keyed like an exact index (by its group alone), as
	// every index was in v1, so the values already stored stay valid;
	// normalized indexes declared under `search:` are keyed by group and
	// normalizers, so no two kinds of index ever share a key.
	V1 bool
}

// Exact reports whether the index is of the value itself (no normalizer).
func (b *BlindIndex) Exact() bool { return b != nil && len(b.Normalize) == 0 }

// GroupKeyed reports whether the index is keyed by its group alone (the
// exact index and a v1-form normalized index); otherwise by its group and
// its normalizers.
func (b *BlindIndex) GroupKeyed() bool { return b.Exact() || b.V1 }

// MinExactBits is the shortest index that equality may trust: at 128 bits
// two distinct values share an index with probability 2^-128 (about 2^-64
// for some pair among 2^32 values), so a match is a match. A shorter index
// has false positives by design; phiproxy refuses to compare through it
// rather than return or change rows PostgreSQL would not.
const MinExactBits = 128

// Tables returns the tables in policy order.
func (p *Policy) Tables() []*Table {
	if p == nil {
		return nil
	}
	return p.tables
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
