package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
)

// labelColumnKey is the HKDF info prefix of a per-column subkey:
// info = labelColumnKey || 0x00 || column identity.
const labelColumnKey = "phiproxy/v1/column-key"

// ColumnCipher encrypts and decrypts the values of one column (one
// associated-data identity, normally "schema.table.column"). It holds one
// AES-256-GCM instance per data key of the keyring, each keyed by a subkey
// derived once from that data key and the column identity, and the
// associated data version || key id || column identity. It is immutable and
// safe for concurrent use.
type ColumnCipher struct {
	column string
	active *columnKey
	keys   []*columnKey // sorted by id; a handful at most, so a linear scan
}

// columnKey is one data key specialised to one column.
type columnKey struct {
	id   uint32
	aead cipher.AEAD
	aad  []byte // version || key id || column: also the envelope header prefix
}

var (
	_ fmt.Stringer   = (*ColumnCipher)(nil)
	_ slog.LogValuer = (*ColumnCipher)(nil)
)

// newColumnKey derives the column subkey of one data key.
func newColumnKey(id uint32, dataKey []byte, column string) (*columnKey, error) {
	sub, err := hkdf.Key(sha256.New, dataKey, nil, labelColumnKey+"\x00"+column, 32)
	if err != nil {
		return nil, fmt.Errorf("derive column key: %w", err)
	}
	defer clear(sub)
	block, err := aes.NewCipher(sub)
	if err != nil {
		return nil, fmt.Errorf("column key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("column key: %w", err)
	}
	aad := make([]byte, headerSize, headerSize+len(column))
	aad[0] = Version1
	binary.BigEndian.PutUint32(aad[1:], id)
	aad = append(aad, column...)
	return &columnKey{id: id, aead: aead, aad: aad}, nil
}

// Column returns the associated-data identity the cipher is bound to.
func (c *ColumnCipher) Column() string { return c.column }

// ActiveKeyID returns the id of the data key that Seal uses.
func (c *ColumnCipher) ActiveKeyID() uint32 { return c.active.id }

func (c *ColumnCipher) String() string {
	return fmt.Sprintf("ColumnCipher{column: %q, active key: %d, keys: [REDACTED]}", c.column, c.active.id)
}

// LogValue implements slog.LogValuer; it never logs key material.
func (c *ColumnCipher) LogValue() slog.Value {
	return slog.GroupValue(slog.String("column", c.column), slog.Any("active_key", c.active.id))
}

// Seal encrypts plaintext under the active data key with a fresh random
// nonce and appends the raw envelope (for bytea columns) to dst. When dst has
// room for len(plaintext)+Overhead more bytes it does not allocate.
// plaintext must not overlap the spare capacity of dst.
func (c *ColumnCipher) Seal(dst, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return dst, fmt.Errorf("seal column %q: value of %d bytes exceeds %d", c.column, len(plaintext), MaxPlaintext)
	}
	ret, out := sliceForAppend(dst, len(plaintext)+Overhead)
	// 96-bit random nonces: with at most 2^32 values per (data key, column)
	// subkey the collision probability stays below 2^-32 (NIST SP 800-38D
	// 8.3). The per-column subkey spreads the budget over columns, and
	// rotation resets it. crypto/rand never fails (Go 1.24+).
	rand.Read(out[headerSize : headerSize+NonceSize])
	c.active.seal(out, plaintext)
	return ret, nil
}

// seal writes the envelope for plaintext into out (len(plaintext)+Overhead
// bytes) using the nonce already in out[headerSize:headerSize+NonceSize].
func (k *columnKey) seal(out, plaintext []byte) {
	copy(out, k.aad[:headerSize])
	nonce := out[headerSize : headerSize+NonceSize]
	k.aead.Seal(out[headerSize+NonceSize:headerSize+NonceSize], nonce, plaintext, k.aad)
}

// SealText is Seal for text columns: it appends TextPrefix and the unpadded
// base64 of the raw envelope. With enough capacity in dst (the text form plus
// the raw envelope, about 2.4 × the value) it does not allocate.
func (c *ColumnCipher) SealText(dst, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return dst, fmt.Errorf("seal column %q: value of %d bytes exceeds %d", c.column, len(plaintext), MaxPlaintext)
	}
	n := len(plaintext) + Overhead
	textLen := len(TextPrefix) + b64.EncodedLen(n)
	// The raw envelope is built in the spare capacity after the text form,
	// then encoded in front of it: no scratch allocation.
	buf, _ := sliceForAppend(dst, textLen+n)
	start := len(dst)
	raw := buf[start+textLen:]
	rand.Read(raw[headerSize : headerSize+NonceSize])
	c.active.seal(raw, plaintext)
	copy(buf[start:], TextPrefix)
	b64.Encode(buf[start+len(TextPrefix):start+textLen], raw)
	return buf[:start+textLen], nil
}

// Open decrypts an envelope in either form (text if it starts with
// TextPrefix, raw otherwise) with the data key it names and appends the
// plaintext to dst. Failures are a *DecryptError wrapping ErrDecrypt, or
// ErrUnknownKey when the keyring does not hold the named key. With enough
// capacity in dst (the plaintext size for the raw form, the decoded envelope
// size for the text form) it does not allocate.
func (c *ColumnCipher) Open(dst, envelope []byte) ([]byte, error) {
	if bytes.HasPrefix(envelope, []byte(TextPrefix)) {
		return c.openText(dst, envelope[len(TextPrefix):])
	}
	id, ok := envelopeKeyID(envelope)
	if !ok {
		return dst, c.fail(0, ErrDecrypt)
	}
	k := c.key(id)
	if k == nil {
		return dst, c.fail(id, ErrUnknownKey)
	}
	out, err := k.aead.Open(dst, envelope[headerSize:headerSize+NonceSize], envelope[headerSize+NonceSize:], k.aad)
	if err != nil {
		return dst, c.fail(id, ErrDecrypt)
	}
	return out, nil
}

func (c *ColumnCipher) openText(dst, s []byte) ([]byte, error) {
	n := b64.DecodedLen(len(s))
	if n < Overhead || hasNewline(s) { // the decoder would skip newlines
		return dst, c.fail(0, ErrDecrypt)
	}
	// Decode into dst's spare capacity, decrypt the ciphertext in place, then
	// move the plaintext down to where the caller expects it.
	buf, env := sliceForAppend(dst, n)
	m, err := b64.Decode(env, s)
	if err != nil || m != n {
		return dst, c.fail(0, ErrDecrypt)
	}
	id, ok := envelopeKeyID(env)
	if !ok {
		return dst, c.fail(0, ErrDecrypt)
	}
	k := c.key(id)
	if k == nil {
		return dst, c.fail(id, ErrUnknownKey)
	}
	ct := env[headerSize+NonceSize:]
	pt, err := k.aead.Open(ct[:0], env[headerSize:headerSize+NonceSize], ct, k.aad)
	if err != nil {
		return dst, c.fail(id, ErrDecrypt)
	}
	copy(env, pt)
	return buf[:len(dst)+len(pt)], nil
}

func (c *ColumnCipher) key(id uint32) *columnKey {
	for _, k := range c.keys {
		if k.id == id {
			return k
		}
	}
	return nil
}

func (c *ColumnCipher) fail(id uint32, err error) error {
	return &DecryptError{Column: c.column, KeyID: id, Err: err}
}
