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
	index  *crypto.Indexer // nil without a blind index
	bytea  bool            // bytea storage: raw envelopes
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

// decide returns what the column's value val (with blind index bidx) of
// one row becomes.
func (vc *valueCoder) decide(c *migrateColumn, val, bidx []byte) (change, outcome) {
	if val == nil {
		if c.index != nil && bidx != nil && vc.mode != modeReencrypt {
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
			if c.index != nil && bidx != nil {
				return change{setIndex: true}, outIndexed
			}
			return change{}, outDone
		}
		return change{setValue: true, value: storedPlain(c, plain), setIndex: c.index != nil}, outChanged
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

// index checks the blind index of a ciphertext value against its
// plaintext and writes it when it is missing (or, with stale, differs).
func (vc *valueCoder) index(c *migrateColumn, plain, bidx []byte, stale bool) (change, outcome) {
	if c.index == nil {
		return change{}, outDone
	}
	want := c.index.AppendText(nil, plain)
	switch {
	case bytes.Equal(want, bidx):
		return change{}, outDone
	case bidx == nil || stale:
		if stale {
			return change{setIndex: true, index: want}, outChanged
		}
		return change{setIndex: true, index: want}, outIndexed
	}
	return change{}, outDone // an index that differs is reindex's business
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
	if withIndex && c.index != nil {
		ch.setIndex, ch.index = true, c.index.AppendText(nil, plain)
	}
	return ch
}

// canonical returns the plaintext the proxy would encrypt for a stored
// plaintext value: the proxy's canonical form of the column's text form
// (a bytea storage column holds that text as UTF-8, or for a bytea
// logical type the bytes themselves).
func (vc *valueCoder) canonical(c *migrateColumn, val []byte) ([]byte, error) {
	if c.bytea && c.col.Type == policy.TypeBytea {
		return val, nil
	}
	if c.col.Type == policy.TypeDate && bytes.HasSuffix(val, []byte(" BC")) {
		// The proxy's date input drops the era of "0044-03-15 BC" (its
		// dateOfTimestamp keeps the first 10 bytes): refuse rather than
		// move the date by two millennia.
		return nil, &phi.ValueError{Type: c.col.Type}
	}
	return vc.canon.Text(nil, c.col.Type, val)
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
