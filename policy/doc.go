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
package policy
