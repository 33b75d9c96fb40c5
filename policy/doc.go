// Package policy is the PHI policy: which tables and columns hold protected
// health information, their logical types, how they are stored, which of
// them carry blind indexes for equality search, and which PostgreSQL roles
// read them in plaintext, masked, or not at all (access.go).
//
// A Policy is loaded from the `policy:` section of the configuration (Load)
// or from a document whose top level is that section (Parse), validated with
// YAML line numbers, filled with defaults (storage text, 128 bits, index
// group and associated data `schema.table.column`), and never modified
// afterwards: it is safe for concurrent use and callers must not modify
// what it returns.
//
// # Blind indexes
//
// A column may carry an exact index and named normalized ones:
//
//	email: { type: text, blind_index: {}, search: { ci: { normalize: [ascii_lower] } } }
//
// blind_index is the exact index (Column.BlindIndex), stored in
// `<column>_bidx`: an HMAC of the value itself, which =, <>, IN, = ANY, IS
// [NOT] DISTINCT FROM, joins and ON CONFLICT compare. Each entry of search
// is a normalized index (Column.Search), stored in `<column>_bidx_<name>`,
// limited to the normalizers that compute a PostgreSQL function exactly
// (SearchNormalizers). Column.Indexes lists them all: each is written with
// every value, and DDL tools must create each (text, btree index).
//
// # Backwards compatibility
//
// The v1 form `blind_index: {normalize: [...]}` still loads, unchanged in
// storage (`<column>_bidx`) and key: it becomes the column's one normalized
// index, named "v1" (BlindIndex.V1), and the column has no exact index, so
// the rewriter refuses = on it, pointing at the fix (README, "Exact
// equality"). An empty normalize list is the exact index.
//
// # What it refuses
//
// # Databases
//
// policy.databases lists the databases the policy governs, by the name a
// client gives in its startup message. Sessions on other databases are not
// touched at all. A policy without the list governs every database: that
// costs a catalog read per session everywhere, and in a database that lacks
// a policy table, statements naming it are refused, but a forgotten list
// can never let PHI through in plaintext. An empty list is refused, as it
// would govern nothing.
//
// The package does no I/O and imports nothing of phiproxy. It refuses
// policies that would make the proxy ambiguous or unsafe: unknown fields,
// duplicate tables or columns, a blind-index column that collides with a PHI
// column or another index column, two columns bound to the same associated
// data (a ciphertext could be moved between them undetected), index groups
// whose members disagree on normalizers or bits, normalized indexes under
// search with normalizers no PostgreSQL function computes, and a v1-form
// blind_index beside search.
//
// # Schema
//
// The package also says what a database must hold for the policy (a pure
// function of the policy and a description of the live catalog): Diff
// compares a LiveCatalog, read by the one query CatalogSQL returns and
// parsed by ParseCatalog, with the policy and returns each Problem with the
// DDL that fixes it; Script renders them for psql; CreateTableSQL is the
// DDL of a new table; CiphertextCheck is the CHECK expression that makes
// PostgreSQL refuse anything but an envelope. Identifiers are quoted as
// quote_ident does (QuoteIdent).
package policy
