package phi

import "github.com/novamind/phiproxy/policy"

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
