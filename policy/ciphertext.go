package policy

import (
	"encoding/base64"
	"fmt"
)

// The v1 envelope as crypto/FORMAT.md defines it, to the extent a database
// CHECK constraint and the schema diff need it. policy imports nothing of
// phiproxy, so these repeat crypto's constants; TestCiphertextConstants in
// internal/seed holds them equal.
const (
	// CiphertextPrefix starts the text form of every envelope
	// (crypto.TextPrefix).
	CiphertextPrefix = "phi1:"
	// CiphertextVersion is the first byte of every raw envelope
	// (crypto.Version1).
	CiphertextVersion = 1
	// CiphertextOverhead is the size of an envelope of an empty value:
	// version, key id, nonce and tag (crypto.Overhead).
	CiphertextOverhead = 33
)

// MinCiphertextText is the length of the shortest text envelope: the
// prefix and the unpadded base64 of CiphertextOverhead bytes.
var MinCiphertextText = len(CiphertextPrefix) + base64.RawStdEncoding.EncodedLen(CiphertextOverhead)

// CiphertextCheck is the CHECK expression that accepts only a v1 envelope
// (or NULL) in the column col (an already quoted identifier) of the given
// storage, as crypto/FORMAT.md gives it. The text form is the prefix, the
// base64 alphabet and at least the base64 of CiphertextOverhead bytes; the
// raw form starts with the version byte.
func CiphertextCheck(col string, storage Storage) string {
	if storage == StorageBytea {
		return fmt.Sprintf("%s IS NULL OR (length(%s) >= %d AND get_byte(%s, 0) = %d)", col, col, CiphertextOverhead, col, CiphertextVersion)
	}
	// Not the regex ^prefix[A-Za-z0-9+/]{n,}$: PostgreSQL's engine expands
	// the counted repetition and takes ~10 µs a value, this ~0.7 µs.
	return fmt.Sprintf("%s IS NULL OR (starts_with(%s, '%s') AND length(%s) >= %d AND %s !~ '[^A-Za-z0-9+/:]')",
		col, col, CiphertextPrefix, col, MinCiphertextText, col)
}

// CheckName is the name of the ciphertext CHECK constraint of a column:
// "<table>_<column>_ciphertext", cut to the 63 bytes PostgreSQL keeps.
func (c *Column) CheckName() string {
	return truncateIdent(c.Table.Name + "_" + c.Name + "_ciphertext")
}

// IndexName is the name phiproxy gives the btree index of a column's
// first blind index (its exact index, or a v1-form one): see IndexNameOf.
func (c *Column) IndexName() string {
	ix := c.Indexes()
	if len(ix) == 0 {
		return ""
	}
	return c.IndexNameOf(ix[0])
}

// IndexNameOf is the name phiproxy gives the btree index of one of the
// column's blind indexes: "<table>_<index column>_idx", cut to 63 bytes.
// Any valid btree index whose first key is the blind-index column will do.
func (c *Column) IndexNameOf(ix *BlindIndex) string {
	return truncateIdent(c.Table.Name + "_" + ix.Column + "_idx")
}
