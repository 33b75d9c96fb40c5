package phi

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// This file turns a rewrite.Plan into bytes: it encrypts and indexes the
// values a plan names. It knows the policy and the wire formats; the
// cryptography stays behind ColumnCipher and BlindIndexer.

// ColumnCipher encrypts and decrypts the values of one PHI column; the
// proxy looks one up per policy column at startup. Implementations append
// to dst, are safe for concurrent use, and never put a value into an error.
type ColumnCipher interface {
	// Seal returns the raw envelope (bytea storage).
	Seal(dst, plaintext []byte) ([]byte, error)
	// SealText returns the printable envelope (text storage).
	SealText(dst, plaintext []byte) ([]byte, error)
	// Open accepts either envelope form.
	Open(dst, envelope []byte) ([]byte, error)
}

// BlindIndexer computes the blind index of a value, in the text form
// stored in the sibling column.
type BlindIndexer interface {
	// AppendText applies the index's normalizers to value, then indexes.
	AppendText(dst, value []byte) []byte
	// AppendNormalizedText indexes value as the normalized form itself,
	// without applying the normalizers (lower(email) = $1).
	AppendNormalizedText(dst, normalized []byte) []byte
}

// Keys gives the proxy the ciphers and indexers of the policy's columns.
type Keys interface {
	ColumnCipher(associatedData string) (ColumnCipher, error)
	// BlindIndexer is the indexer keyed by the group alone: exact indexes,
	// and normalized indexes of the v1 form.
	BlindIndexer(group string, normalize []string, bits int) (BlindIndexer, error)
	// NormalizedIndexer is the indexer of a normalized index declared under
	// search:, keyed by the group and the normalizers.
	NormalizedIndexer(group string, normalize []string, bits int) (BlindIndexer, error)
}

// KeyringKeys adapts a crypto.Keyring to Keys.
func KeyringKeys(k *crypto.Keyring) Keys { return keyringKeys{k} }

type keyringKeys struct{ k *crypto.Keyring }

func (kk keyringKeys) ColumnCipher(ad string) (ColumnCipher, error) { return kk.k.Cipher(ad) }
func (kk keyringKeys) BlindIndexer(group string, normalize []string, bits int) (BlindIndexer, error) {
	return kk.k.Indexer(group, normalize, bits)
}
func (kk keyringKeys) NormalizedIndexer(group string, normalize []string, bits int) (BlindIndexer, error) {
	return kk.k.NormalizedIndexer(group, normalize, bits)
}

// keyedColumn is one PHI column with its keys.
type keyedColumn struct {
	col    *policy.Column
	cipher ColumnCipher
	// indexes holds an indexer per blind index of the column (exact and
	// normalized); index is the exact one, nil when there is none.
	indexes map[*policy.BlindIndex]BlindIndexer
	index   BlindIndexer
	// counters are set by newMetrics.
	counters columnCounters
}

// keyedColumns resolves every policy column to its keys once, at startup, so
// that nothing on the per-value path looks up or derives a key.
type keyedColumns map[*policy.Column]*keyedColumn

func newKeyedColumns(pol *policy.Policy, keys Keys) (keyedColumns, error) {
	cols := keyedColumns{}
	// Counters that count for nobody until newMetrics replaces them.
	unregistered := prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
	for _, t := range pol.Tables() {
		for _, c := range t.Columns {
			pc := &keyedColumn{col: c, counters: columnCounters{unregistered, unregistered, unregistered, unregistered}}
			var err error
			if pc.cipher, err = keys.ColumnCipher(c.AssociatedData); err != nil {
				return nil, fmt.Errorf("cipher for %s: %w", c.QualifiedName(), err)
			}
			for _, bi := range c.Indexes() {
				var ix BlindIndexer
				if bi.GroupKeyed() {
					ix, err = keys.BlindIndexer(bi.Group, bi.Normalize, bi.Bits)
				} else {
					ix, err = keys.NormalizedIndexer(bi.Group, bi.Normalize, bi.Bits)
				}
				if err != nil {
					return nil, fmt.Errorf("blind index %s for %s: %w", bi.Column, c.QualifiedName(), err)
				}
				if pc.indexes == nil {
					pc.indexes = map[*policy.BlindIndex]BlindIndexer{}
				}
				pc.indexes[bi] = ix
				if bi == c.BlindIndex {
					pc.index = ix
				}
			}
			cols[c] = pc
		}
	}
	return cols, nil
}

// transform appends to dst what goes upstream for one PHI value: plain is
// the canonical plaintext. Encrypting yields the envelope in the column's
// storage form (raw for bytea, printable for text); indexing yields the
// index text of ix, one of the column's blind indexes (nil: the exact one).
func (pc *keyedColumn) transform(dst []byte, a rewrite.Action, ix *policy.BlindIndex, plain []byte) ([]byte, error) {
	switch a {
	case rewrite.ActionEncrypt:
		pc.counters.encrypted.Inc()
		if pc.col.Storage == policy.StorageBytea {
			return pc.cipher.Seal(dst, plain)
		}
		return pc.cipher.SealText(dst, plain)
	case rewrite.ActionIndex, rewrite.ActionIndexNormalized:
		indexer := pc.index
		if ix != nil {
			indexer = pc.indexes[ix]
		}
		if indexer == nil {
			return dst, errNoIndex
		}
		pc.counters.indexed.Inc()
		if a == rewrite.ActionIndexNormalized {
			return indexer.AppendNormalizedText(dst, plain), nil
		}
		return indexer.AppendText(dst, plain), nil
	}
	return dst, fmt.Errorf("unexpected action %d", a)
}

// appendLiteral appends the SQL literal for one transformed value. Printable
// envelopes and index texts are base64 or hex, so quoting needs no escapes;
// a raw envelope is written as decode(..., 'base64'), which reads the same
// whatever standard_conforming_strings says.
func appendLiteral(dst []byte, raw bool, value []byte) ([]byte, error) {
	if raw {
		dst = append(dst, "decode('"...)
		dst = base64.StdEncoding.AppendEncode(dst, value)
		return append(dst, "', 'base64')"...), nil
	}
	for _, b := range value {
		if b < 0x20 || b > 0x7e || b == '\'' || b == '\\' {
			return dst, errors.New("transformed value is not printable")
		}
	}
	dst = append(dst, '\'')
	dst = append(dst, value...)
	return append(dst, '\''), nil
}
