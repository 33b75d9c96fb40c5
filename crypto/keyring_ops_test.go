package crypto

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// TestRotateIndexRoot: a new root changes every blind index, persists
// across a reopen, and leaves the data keys and their values alone.
func TestRotateIndexRoot(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.json")
	p := localProvider(t, 7)
	kr, err := CreateKeyring(ctx, path, p)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := mustCipher(t, kr, "public.t.c").SealText(nil, []byte("v"))
	ix, _ := kr.Indexer("g", nil, 0)
	before := ix.AppendText(nil, []byte("v"))
	rootBefore := kr.File().IndexRoot.WrappedKey

	if err := kr.RotateIndexRoot(ctx); err != nil {
		t.Fatal(err)
	}
	ix2, _ := kr.Indexer("g", nil, 0)
	after := ix2.AppendText(nil, []byte("v"))
	if bytes.Equal(before, after) {
		t.Fatal("the blind index did not change with the root key")
	}
	if err := kr.Save(path); err != nil {
		t.Fatal(err)
	}
	kr2, err := OpenKeyring(ctx, path, p)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(kr2.File().IndexRoot.WrappedKey, rootBefore) {
		t.Fatal("the file still holds the old root key")
	}
	ix3, _ := kr2.Indexer("g", nil, 0)
	if !bytes.Equal(ix3.AppendText(nil, []byte("v")), after) {
		t.Fatal("the new root did not persist")
	}
	if got, err := mustCipher(t, kr2, "public.t.c").Open(nil, env); err != nil || string(got) != "v" {
		t.Fatalf("a value sealed before the index rotation: %q, %v", got, err)
	}
}

// TestLockKeyring: a second lock fails at once until the first is
// released.
func TestLockKeyring(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	unlock, err := LockKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockKeyring(path); !errors.Is(err, ErrKeyringLocked) {
		t.Fatalf("second lock: %v, want ErrKeyringLocked", err)
	}
	unlock()
	unlock2, err := LockKeyring(path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
