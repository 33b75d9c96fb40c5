package main

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy/phi"
)

// Migration modes.
const (
	modeEncrypt   = "encrypt"
	modeDecrypt   = "decrypt"
	modeReencrypt = "reencrypt"
	modeReindex   = "reindex"
)

// migrateColumn is one PHI column being migrated, with its keys.
type migrateColumn struct {
	col    *policy.Column
	cipher *crypto.ColumnCipher
	// indexes are the indexers of col.Indexes(), in that order (the exact
	// index, then the normalized ones): every blind index is written
	// with the value, as the proxy writes them. Empty without a blind
	// index.
	indexes []*crypto.Indexer
	bytea   bool // bytea storage: raw envelopes
}

// outcome classifies one value of one row.
type outcome int

const (
	outChanged       outcome = iota // changed (or, in a dry run, would be)
	outDone                         // already in the target state
	outNull                         // NULL: nothing to do
	outIndexed                      // ciphertext whose blind index was missing or stale: the index was written
	outPlaintext                    // not ciphertext, left as it is (reencrypt, reindex)
	outInvalid                      // plaintext that is no valid value of the logical type, left as it is
	outUndecryptable                // looks like ciphertext but does not decrypt with this keyring, left as it is
	numOutcomes
)

// outcomeNames name the outcomes in the summary, per mode for outChanged.
var outcomeNames = [numOutcomes]string{"", "already", "null", "index written", "plaintext", "invalid", "undecryptable"}

func changedName(mode string) string {
	switch mode {
	case modeEncrypt:
		return "encrypted"
	case modeDecrypt:
		return "decrypted"
	case modeReencrypt:
		return "re-encrypted"
	}
	return "reindexed"
}

// valueCoder turns one stored value into its target form. It holds
// scratch buffers and the proxy's canonicalizer: one per goroutine.
type valueCoder struct {
	mode   string
	active uint32 // the keyring's active data key
	canon  *phi.Canonicalizer
	buf    []byte
}

// decide returns what the column's value val (with its blind indexes
// bidx, one per c.indexes) of one row becomes.
func (vc *valueCoder) decide(c *migrateColumn, val []byte, bidx [][]byte) (change, outcome) {
	if val == nil {
		if anyIndex(bidx) && vc.mode != modeReencrypt {
			return change{setIndex: true}, outIndexed
		}
		return change{}, outNull
	}
	isCT := crypto.IsCiphertext(val)
	var plain []byte
	if isCT {
		if vc.mode == modeReencrypt {
			if id, _ := crypto.EnvelopeKeyID(val); id == vc.active {
				return change{}, outDone
			}
		}
		var err error
		if plain, err = c.cipher.Open(vc.buf[:0], val); err != nil {
			return change{}, outUndecryptable
		}
		vc.buf = plain
	}
	switch vc.mode {
	case modeEncrypt:
		if isCT {
			return vc.index(c, plain, bidx, false)
		}
		plain, err := vc.canonical(c, val)
		if err != nil {
			return change{}, outInvalid
		}
		return vc.seal(c, plain, true), outChanged
	case modeDecrypt:
		if !isCT {
			if anyIndex(bidx) {
				return change{setIndex: true}, outIndexed
			}
			return change{}, outDone
		}
		return change{setValue: true, value: storedPlain(c, plain), setIndex: len(c.indexes) > 0}, outChanged
	case modeReencrypt:
		if !isCT {
			return change{}, outPlaintext
		}
		ch := vc.seal(c, plain, false)
		return ch, outChanged
	default: // reindex
		if !isCT {
			return change{}, outPlaintext
		}
		return vc.index(c, plain, bidx, true)
	}
}

// index checks the blind indexes of a ciphertext value against its
// plaintext and writes them all when one is missing (or, with stale,
// differs).
func (vc *valueCoder) index(c *migrateColumn, plain []byte, bidx [][]byte, stale bool) (change, outcome) {
	if len(c.indexes) == 0 {
		return change{}, outDone
	}
	want := vc.indexValues(c, plain)
	same, missing := true, false
	for k, w := range want {
		var have []byte
		if k < len(bidx) {
			have = bidx[k]
		}
		same = same && bytes.Equal(w, have)
		missing = missing || have == nil
	}
	switch {
	case same:
		return change{}, outDone
	case missing || stale:
		if stale {
			return change{setIndex: true, index: want}, outChanged
		}
		return change{setIndex: true, index: want}, outIndexed
	}
	return change{}, outDone // an index that differs is reindex's business
}

// indexValues computes every blind index of a canonical plaintext, from
// its equality key as the proxy does (numeric and jsonb values equal
// under = share one).
func (vc *valueCoder) indexValues(c *migrateColumn, plain []byte) [][]byte {
	key := vc.canon.EqualityKey(nil, c.col.Type, plain)
	out := make([][]byte, len(c.indexes))
	for k, ix := range c.indexes {
		out[k] = ix.AppendText(nil, key)
	}
	return out
}

// anyIndex reports whether a row holds some blind index value.
func anyIndex(bidx [][]byte) bool {
	for _, b := range bidx {
		if b != nil {
			return true
		}
	}
	return false
}

// seal encrypts a canonical plaintext under the active key, with its
// blind index when withIndex.
func (vc *valueCoder) seal(c *migrateColumn, plain []byte, withIndex bool) change {
	var env []byte
	var err error
	if c.bytea {
		env, err = c.cipher.Seal(nil, plain)
	} else {
		env, err = c.cipher.SealText(nil, plain)
	}
	if err != nil { // only for values over 1 GiB, which PostgreSQL cannot hold
		panic(fmt.Sprintf("seal %s: %v", c.col.QualifiedName(), err))
	}
	ch := change{setValue: true, value: env}
	if withIndex && len(c.indexes) > 0 {
		ch.setIndex, ch.index = true, vc.indexValues(c, plain)
	}
	return ch
}

// canonical returns the plaintext the proxy would encrypt for a stored
// plaintext value (phi.Canonicalizer.Stored: the proxy reads such a value
// the same way while the table is migrating).
func (vc *valueCoder) canonical(c *migrateColumn, val []byte) ([]byte, error) {
	return vc.canon.Stored(nil, c.col, val)
}

// storedPlain is how a decrypted canonical plaintext is stored in the
// column's storage type: bytea values in a text column as bytea's hex
// text form (so that ALTER COLUMN ... TYPE bytea USING col::bytea restores
// them), everything else as it is.
func storedPlain(c *migrateColumn, plain []byte) []byte {
	if c.col.Type == policy.TypeBytea && !c.bytea {
		out := append([]byte(`\x`), make([]byte, hex.EncodedLen(len(plain)))...)
		hex.Encode(out[2:], plain)
		return out
	}
	return bytes.Clone(plain)
}
