package crypto

import (
	"bytes"
	"testing"
	"time"
)

// testKeyring builds an in-memory keyring from fixed keys, without a file
// or provider. States: active for active, decrypt-only for the rest.
func testKeyring(t testing.TB, keys map[uint32][]byte, active uint32, root []byte) *Keyring {
	t.Helper()
	f := &KeyringFile{Format: KeyringFormat, ID: "test"}
	dummy := WrappedRecord{Provider: ProviderLocal, MasterKeyID: "local:test", WrappedKey: []byte{1}}
	mem := make(map[uint32]secretKey)
	for id := uint32(1); id <= 1000; id++ {
		k, ok := keys[id]
		if !ok {
			continue
		}
		st := StateDecryptOnly
		if id == active {
			st = StateActive
		}
		f.DataKeys = append(f.DataKeys, DataKeyRecord{ID: id, State: st, Created: time.Unix(0, 0).UTC(), WrappedRecord: dummy})
		mem[id] = bytes.Clone(k)
	}
	f.IndexRoot = IndexRootRecord{Created: time.Unix(0, 0).UTC(), WrappedRecord: dummy}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	return newKeyring(nil, f, mem, bytes.Clone(root))
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func mustCipher(t testing.TB, kr *Keyring, column string) *ColumnCipher {
	t.Helper()
	c, err := kr.Cipher(column)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
