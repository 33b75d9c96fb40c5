package crypto

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func localProvider(t *testing.T, seed byte) *LocalProvider {
	t.Helper()
	p, err := NewLocalProvider(seq(32, seed))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeyringLifecycle(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.json")
	p := localProvider(t, 1)

	kr, err := CreateKeyring(ctx, path, p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := CreateKeyring(ctx, path, p); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second create: %v, want ErrExist", err)
	}
	c1 := mustCipher(t, kr, "public.patients.email")
	env1, _ := c1.SealText(nil, []byte("alice@example.com"))
	ix1, _ := kr.Indexer("public.patients.email", []string{"lower"}, 0)
	idx1 := ix1.AppendText(nil, []byte("Alice@example.com"))

	// Reopen: same keys, same index.
	kr2, err := OpenKeyring(ctx, path, p)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := mustCipher(t, kr2, "public.patients.email").Open(nil, env1); err != nil || string(got) != "alice@example.com" {
		t.Fatalf("reopened keyring: %q, %v", got, err)
	}
	ix2, _ := kr2.Indexer("public.patients.email", []string{"lower"}, 0)
	if !bytes.Equal(ix2.AppendText(nil, []byte("alice@example.com")), idx1) {
		t.Fatal("blind index changed across reopen")
	}

	// Rotate: key 2 active, key 1 decrypt-only; index unchanged.
	info, err := kr2.Rotate(ctx)
	if err != nil || info.ID != 2 || info.State != StateActive {
		t.Fatalf("rotate: %+v, %v", info, err)
	}
	if err := kr2.Save(path); err != nil {
		t.Fatal(err)
	}
	kr3, err := OpenKeyring(ctx, path, p)
	if err != nil {
		t.Fatal(err)
	}
	if kr3.ActiveKeyID() != 2 {
		t.Fatalf("active key %d after rotate", kr3.ActiveKeyID())
	}
	states := fmt.Sprintf("%s %s", kr3.Keys()[0].State, kr3.Keys()[1].State)
	if states != "decrypt-only active" {
		t.Fatalf("states after rotate: %s", states)
	}
	c3 := mustCipher(t, kr3, "public.patients.email")
	if got, err := c3.Open(nil, env1); err != nil || string(got) != "alice@example.com" {
		t.Fatalf("old value after rotate: %v", err)
	}
	env2, _ := c3.Seal(nil, []byte("new"))
	if id, _ := EnvelopeKeyID(env2); id != 2 {
		t.Fatalf("sealed under %d after rotate", id)
	}
	ix3, _ := kr3.Indexer("public.patients.email", []string{"lower"}, 0)
	if !bytes.Equal(ix3.AppendText(nil, []byte("alice@example.com")), idx1) {
		t.Fatal("rotation changed the blind index")
	}

	// Rewrap under another master key: same data keys, new wrapping.
	p2 := localProvider(t, 2)
	if err := kr3.Rewrap(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if err := kr3.Save(path); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeyring(ctx, path, p); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("open with the old master key after rewrap: %v", err)
	}
	kr4, err := OpenKeyring(ctx, path, p2)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kr4.Keys() {
		if k.MasterKeyID != p2.MasterKeyID() {
			t.Fatalf("key %d still wrapped by %s", k.ID, k.MasterKeyID)
		}
	}
	if got, err := mustCipher(t, kr4, "public.patients.email").Open(nil, env1); err != nil || string(got) != "alice@example.com" {
		t.Fatalf("value after rewrap: %v", err)
	}

	// Retire: refuses the active key; a retired key no longer opens.
	if err := kr4.Retire(2); err == nil {
		t.Fatal("retired the active key")
	}
	if err := kr4.Retire(9); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("retire unknown: %v", err)
	}
	if err := kr4.Retire(1); err != nil {
		t.Fatal(err)
	}
	if err := kr4.Save(path); err != nil {
		t.Fatal(err)
	}
	kr5, err := OpenKeyring(ctx, path, p2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mustCipher(t, kr5, "public.patients.email").Open(nil, env1); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("value under a retired key: %v", err)
	}
	// Rewrap still carries the retired key (unwrapped with the current provider).
	if err := kr5.Rewrap(ctx, p); err != nil {
		t.Fatal(err)
	}
	if f := kr5.File(); f.DataKeys[0].MasterKeyID != p.MasterKeyID() || f.DataKeys[0].State != StateRetired {
		t.Fatalf("retired key after rewrap: %+v", f.DataKeys[0])
	}
}

func TestKeyringRefusesLooseFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.json")
	p := localProvider(t, 1)
	if _, err := CreateKeyring(ctx, path, p); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		os.Chmod(path, mode)
		if _, err := OpenKeyring(ctx, path, p); err == nil || !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("mode %o: %v", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := OpenKeyring(ctx, path, p); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestKeyringWrongProvider(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.json")
	if _, err := CreateKeyring(ctx, path, localProvider(t, 1)); err != nil {
		t.Fatal(err)
	}
	_, err := OpenKeyring(ctx, path, localProvider(t, 2))
	if !errors.Is(err, ErrUnwrap) || !strings.Contains(err.Error(), "master key") {
		t.Fatalf("wrong master key: %v", err)
	}
	// A wrapped key moved to another id or keyring does not unwrap.
	f, _ := ReadKeyringFile(path)
	f.DataKeys = append(f.DataKeys, DataKeyRecord{ID: 2, State: StateDecryptOnly, WrappedRecord: f.DataKeys[0].WrappedRecord})
	if _, err := UnwrapKeyring(ctx, f, localProvider(t, 1)); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("moved wrapped key: %v", err)
	}
	f.DataKeys = f.DataKeys[:1]
	f.ID = "another"
	if _, err := UnwrapKeyring(ctx, f, localProvider(t, 1)); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("keyring id changed: %v", err)
	}
}

func TestParseKeyringFileRejects(t *testing.T) {
	valid := `{"format":"phiproxy-keyring/v1","keyring_id":"k","data_keys":[
	 {"id":1,"state":"decrypt-only","created":"2026-01-01T00:00:00Z","provider":"local","master_key_id":"local:x","wrapped_key":"AQ=="},
	 {"id":2,"state":"active","created":"2026-01-01T00:00:00Z","provider":"aws-kms","master_key_id":"arn:x","wrapped_key":"AQ=="}],
	 "blind_index_root":{"created":"2026-01-01T00:00:00Z","provider":"local","master_key_id":"local:x","wrapped_key":"AQ=="}}`
	if _, err := ParseKeyringFile([]byte(valid)); err != nil {
		t.Fatalf("valid file: %v", err)
	}
	for name, edit := range map[string][2]string{
		"format":          {`keyring/v1"`, `keyring/v2"`},
		"no id":           {`"keyring_id":"k"`, `"keyring_id":""`},
		"two active":      {`"decrypt-only"`, `"active"`},
		"no active":       {`"state":"active"`, `"state":"retired"`},
		"bad state":       {`"decrypt-only"`, `"disabled"`},
		"id zero":         {`"id":1`, `"id":0`},
		"duplicate id":    {`"id":2`, `"id":1`},
		"unordered":       {`"id":1`, `"id":3`},
		"bad provider":    {`"aws-kms"`, `"vault"`},
		"empty wrapped":   {`"wrapped_key":"AQ=="}],`, `"wrapped_key":""}],`},
		"no master id":    {`"master_key_id":"arn:x"`, `"master_key_id":""`},
		"unknown field":   {`"keyring_id":"k"`, `"keyring_id":"k","plain_key":"AQ=="`},
		"trailing":        {`"AQ=="}}`, `"AQ=="}} {}`},
		"bad base64":      {`"wrapped_key":"AQ=="}}`, `"wrapped_key":"*"}}`},
		"root unknown pv": {`"provider":"local","master_key_id":"local:x","wrapped_key":"AQ=="}}`, `"provider":"x","master_key_id":"local:x","wrapped_key":"AQ=="}}`},
	} {
		t.Run(name, func(t *testing.T) {
			bad := strings.Replace(valid, edit[0], edit[1], 1)
			if bad == valid {
				t.Fatal("edit did not apply")
			}
			if _, err := ParseKeyringFile([]byte(bad)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestLocalProviderConfig(t *testing.T) {
	dir := t.TempDir()
	key := seq(32, 5)
	b64key := base64.StdEncoding.EncodeToString(key)
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == EnvMasterKey {
				return v
			}
			return ""
		}
	}
	want, _ := NewLocalProvider(key)

	p, err := LoadLocalProvider(LocalConfig{}, env(b64key))
	if err != nil || p.MasterKeyID() != want.MasterKeyID() {
		t.Fatalf("from env: %v", err)
	}
	file := filepath.Join(dir, "master.key")
	if err := WriteNewMasterKeyFile(file); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewMasterKeyFile(file); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrote a master key file: %v", err)
	}
	fromFile, err := LoadLocalProvider(LocalConfig{MasterKeyFile: file}, env(""))
	if err != nil {
		t.Fatal(err)
	}
	if fromFile.MasterKeyID() == want.MasterKeyID() {
		t.Fatal("file key equals env key")
	}
	if p, _ := LoadLocalProvider(LocalConfig{MasterKeyFile: file}, env(b64key)); p.MasterKeyID() != want.MasterKeyID() {
		t.Fatal("environment does not override the file")
	}
	if _, err := LoadLocalProvider(LocalConfig{}, env("")); err == nil || !strings.Contains(err.Error(), EnvMasterKey) {
		t.Fatalf("no key: %v", err)
	}
	secret := "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
	for _, bad := range []string{secret, "not base64!!", base64.StdEncoding.EncodeToString(seq(31, 0))} {
		_, err := LoadLocalProvider(LocalConfig{}, env(bad))
		if err == nil || strings.Contains(err.Error(), bad) {
			t.Fatalf("bad key %q: %v", bad, err)
		}
	}
	os.Chmod(file, 0o644)
	if _, err := LoadLocalProvider(LocalConfig{MasterKeyFile: file}, env("")); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("world-readable master key: %v", err)
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	key := seq(32, 0x41) // "ABCD..." so a leak is visible as text
	kr := testKeyring(t, map[uint32][]byte{1: key}, 1, key)
	p, _ := NewLocalProvider(key)
	c := mustCipher(t, kr, "s.t.c")
	ix, _ := kr.Indexer("g", nil, 0)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("x", "keyring", kr, "cipher", c, "indexer", ix, "provider", p, "key", secretKey(key))
	out := logs.String() + fmt.Sprintf("%v %+v %#v %v %v %v %s %#v %#v %#v %#v", kr, kr, secretKey(key), c, ix, p, secretKey(key), kr, c, ix, p)
	if strings.Contains(out, "ABCDEFGH") || strings.Contains(out, base64.StdEncoding.EncodeToString(key)[:10]) || strings.Contains(out, "65, 66, 67") || strings.Contains(out, "0x41") {
		t.Fatalf("key material printed: %s", out)
	}
	if !strings.Contains(out, "REDACTED") {
		t.Fatalf("no redaction marker: %s", out)
	}
}
