package phi

import (
	"bytes"

	"github.com/novamind/phiproxy/policy"
)

// Canonicalizer converts a PHI value in PostgreSQL's text format into the
// canonical plaintext the proxy encrypts and indexes, exactly as the proxy
// does for a client's text-format value: `phiproxy migrate` uses it so that
// a value encrypted in place reads back, and is found by equality, the same
// as one written through the proxy. It is not safe for concurrent use: one
// per goroutine. Values are read as from a UTF8 session.
type Canonicalizer struct{ c *valueCodec }

// NewCanonicalizer returns a Canonicalizer.
func NewCanonicalizer() *Canonicalizer { return &Canonicalizer{c: newValueCodec(nil)} }

// Text appends to dst the canonical plaintext of src, the text format of a
// value of logical type t. Errors are a *ValueError, which names the type,
// never the value.
func (c *Canonicalizer) Text(dst []byte, t policy.LogicalType, src []byte) ([]byte, error) {
	return c.c.canonical(dst, t, formatText, src)
}

// EqualityKey appends to dst what a blind index of a canonical plaintext
// of type t is computed from, as the proxy computes it: the plaintext
// itself, except for numeric and jsonb, whose values equal under = share
// one key (1.0 and 1.00). Every blind index of a column (exact and
// normalized) is computed from it.
func (c *Canonicalizer) EqualityKey(dst []byte, t policy.LogicalType, plain []byte) []byte {
	return equalityKey(dst, t, plain)
}

// Stored appends to dst the canonical plaintext of a plaintext value
// stored in PHI column col before phiproxy encrypted it: the column's
// text form (in a bytea storage column, that text as UTF-8; for a bytea
// logical type in bytea storage, the bytes themselves), as `phiproxy
// schema`'s USING casts leave it under policy.SessionSettings. It is what
// `phiproxy migrate encrypt` encrypts, and what the proxy returns for
// such a value in a table in migration (policy.Table.Migrating), so that
// a row reads the same before and after it is migrated. A value that is
// no valid value of the logical type is a *ValueError.
func (c *Canonicalizer) Stored(dst []byte, col *policy.Column, stored []byte) ([]byte, error) {
	if col.Storage == policy.StorageBytea && col.Type == policy.TypeBytea {
		return append(dst, stored...), nil
	}
	if col.Type == policy.TypeDate && bytes.HasSuffix(stored, []byte(" BC")) {
		// The proxy's date input drops the era of "0044-03-15 BC" (its
		// dateOfTimestamp keeps the first 10 bytes): refuse rather than
		// move the date by two millennia.
		return nil, &ValueError{Type: col.Type}
	}
	return c.c.canonical(dst, col.Type, formatText, stored)
}
