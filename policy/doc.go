// Package policy is the PHI policy: which tables and columns hold protected
// health information, their logical types, how they are stored, which of
// them carry a blind index for equality search, and which PostgreSQL roles
// read them in plaintext, masked, or not at all (access.go).
//
// A Policy is loaded from the `policy:` section of the configuration (Load)
// or from a document whose top level is that section (Parse), validated with
// YAML line numbers, filled with defaults (storage text, blind-index column
// `<column>_bidx`, 128 bits, index group and associated data
// `schema.table.column`), and never modified afterwards: it is safe for
// concurrent use and callers must not modify what it returns.
//
// The package does no I/O and imports nothing of phiproxy. It refuses
// policies that would make the proxy ambiguous or unsafe: unknown fields,
// duplicate tables or columns, a blind-index column that collides with a PHI
// column or another index column, two columns bound to the same associated
// data (a ciphertext could be moved between them undetected), and index
// groups whose members disagree on normalizers or bits.
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
