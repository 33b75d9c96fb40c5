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
	AppendText(dst, value []byte) []byte
}

// Keys gives the proxy the ciphers and indexers of the policy's columns.
type Keys interface {
	ColumnCipher(associatedData string) (ColumnCipher, error)
	BlindIndexer(group string, normalize []string, bits int) (BlindIndexer, error)
}

// KeyringKeys adapts a crypto.Keyring to Keys.
func KeyringKeys(k *crypto.Keyring) Keys { return keyringKeys{k} }

type keyringKeys struct{ k *crypto.Keyring }

func (kk keyringKeys) ColumnCipher(ad string) (ColumnCipher, error) { return kk.k.Cipher(ad) }
func (kk keyringKeys) BlindIndexer(group string, normalize []string, bits int) (BlindIndexer, error) {
	return kk.k.Indexer(group, normalize, bits)
}

// keyedColumn is one PHI column with its keys.
type keyedColumn struct {
	col    *policy.Column
	cipher ColumnCipher
	index  BlindIndexer // nil when the column has no blind index
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
			pc := &keyedColumn{col: c, counters: columnCounters{unregistered, unregistered, unregistered}}
			var err error
			if pc.cipher, err = keys.ColumnCipher(c.AssociatedData); err != nil {
				return nil, fmt.Errorf("cipher for %s: %w", c.QualifiedName(), err)
			}
			if bi := c.BlindIndex; bi != nil {
				if pc.index, err = keys.BlindIndexer(bi.Group, bi.Normalize, bi.Bits); err != nil {
					return nil, fmt.Errorf("blind index for %s: %w", c.QualifiedName(), err)
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
// index text.
func (pc *keyedColumn) transform(dst []byte, a rewrite.Action, plain []byte) ([]byte, error) {
	switch a {
	case rewrite.ActionEncrypt:
		pc.counters.encrypted.Inc()
		if pc.col.Storage == policy.StorageBytea {
			return pc.cipher.Seal(dst, plain)
		}
		return pc.cipher.SealText(dst, plain)
	case rewrite.ActionIndex:
		if pc.index == nil {
			return dst, errNoIndex
		}
		pc.counters.indexed.Inc()
		return pc.index.AppendText(dst, plain), nil
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
