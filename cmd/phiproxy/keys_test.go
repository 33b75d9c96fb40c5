package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/novamind/phiproxy/crypto"
)

func keysCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runKeys(context.Background(), args, &out, &errb)
	return out.String(), err
}

func TestKeysCommandLocal(t *testing.T) {
	t.Setenv(crypto.EnvMasterKey, "")
	t.Setenv(envConfig, "")
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "phiproxy.yaml")
	os.WriteFile(cfgFile, []byte("listen: {address: 127.0.0.1:1}\nkeys:\n  keyring_file: keyring.json\n  provider: local\n  local:\n    master_key_file: master.key\npolicy: {tables: []}\n"), 0o600)
	keyring := filepath.Join(dir, "keyring.json")

	out, err := keysCmd(t, "init", "--config", cfgFile)
	if err != nil || !strings.Contains(out, "created keyring") || !strings.Contains(out, "new local master key") {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if _, err := keysCmd(t, "init", "--config", cfgFile); err == nil {
		t.Fatal("init over an existing keyring")
	}
	if out, err = keysCmd(t, "rotate", "--config", cfgFile); err != nil || !strings.Contains(out, "data key 2 is active") {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	if _, err := keysCmd(t, "retire", "--config", cfgFile, "2"); err == nil || !strings.Contains(err.Error(), "active") {
		t.Fatalf("retire active: %v", err)
	}

	// rewrap to a new local master key, then list.
	newMaster := filepath.Join(dir, "master2.key")
	if out, err = keysCmd(t, "rewrap", "--config", cfgFile, "--provider", "local", "--master-key-file", newMaster); err != nil {
		t.Fatalf("rewrap: %v\n%s", err, out)
	}
	if _, err := keysCmd(t, "rotate", "--config", cfgFile); !errors.Is(err, crypto.ErrUnwrap) {
		t.Fatalf("rotate with the old master key after rewrap: %v", err)
	}
	if _, err := keysCmd(t, "rotate", "--config", cfgFile, "--master-key-file", newMaster); err != nil {
		t.Fatalf("rotate with the new master key: %v", err)
	}
	// retire checks the databases: without a configuration naming them it
	// refuses, unless forced. The ID may come before the flags.
	if _, err := keysCmd(t, "retire", "--keyring", keyring, "1"); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("retire without a configuration: %v", err)
	}
	if _, err = keysCmd(t, "retire", "1", "--keyring", keyring, "--force"); err != nil {
		t.Fatalf("retire 1 --force: %v", err)
	}
	out, err = keysCmd(t, "list", "--keyring", keyring)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`(?m)^1\s+retired\s`, `(?m)^2\s+decrypt-only\s`, `(?m)^3\s+active\s`, `(?m)^index-root\s+-\s`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	// list never prints key material: not the wrapped keys, not the master keys.
	kf, _ := os.ReadFile(keyring)
	f, _ := crypto.ParseKeyringFile(kf)
	jsonOut, err := keysCmd(t, "list", "--keyring", keyring, "--json")
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	m2, _ := os.ReadFile(newMaster)
	for _, secret := range []string{base64.StdEncoding.EncodeToString(f.DataKeys[0].WrappedKey), base64.StdEncoding.EncodeToString(f.IndexRoot.WrappedKey), strings.TrimSpace(string(m1)), strings.TrimSpace(string(m2))} {
		if strings.Contains(out+jsonOut, secret) {
			t.Fatal("list printed key material")
		}
	}
	if !strings.Contains(jsonOut, `"state": "retired"`) {
		t.Fatalf("json list:\n%s", jsonOut)
	}
}

func TestKeysCommandUsage(t *testing.T) {
	t.Setenv(envConfig, "")
	for _, args := range [][]string{
		{},
		{"bogus", "--keyring", "x"},
		{"init"},
		{"init", "--keyring", "x", "--provider", "vault"},
		{"retire", "--keyring", "x"},
		{"retire", "--keyring", "x", "abc"},
		{"rewrap", "--keyring", "x"},
		{"list", "--keyring", "x", "extra"},
		{"list", "--nope"},
		{"rotate", "--keyring", "x", "--json"},
		{"init", "--keyring", "x", "--force"},
		{"--keyring", "x"},
	} {
		if _, err := keysCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("keys %q: %v, want a usage error", args, err)
		}
	}
}

// TestKeysCommandOperatorDetails: help exits 0, arguments in any order,
// unknown YAML keys refused without Go type names, and the lock.
func TestKeysCommandOperatorDetails(t *testing.T) {
	t.Setenv(crypto.EnvMasterKey, "")
	t.Setenv(envConfig, "")
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	for _, args := range [][]string{{"keys", "--help"}, {"keys", "-h"}, {"keys", "help"}, {"keys", "retire", "--help"}, {"help", "keys"}} {
		stdout.Reset()
		if code := run(args, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "Usage: phiproxy keys") {
			t.Errorf("%q: exit %d\n%s", args, code, stdout.String())
		}
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("keys:\n  keyring_file: k.json\n  aws_kms:\n    timeout: abc\n  bogus: 1\n"), 0o600)
	_, err := keysCmd(t, "list", "--config", bad)
	if err == nil || !strings.Contains(err.Error(), `unknown key "bogus" in keys`) || !strings.Contains(err.Error(), "want a duration") {
		t.Fatalf("unknown key: %v", err)
	}
	if strings.Contains(err.Error(), "crypto.") || strings.Contains(err.Error(), "time.Duration") || strings.Contains(err.Error(), "abc") {
		t.Errorf("error shows Go type names or the value: %v", err)
	}
	keyring := filepath.Join(dir, "keyring.json")
	master := filepath.Join(dir, "master.key")
	if _, err := keysCmd(t, "--keyring", keyring, "init", "--master-key-file", master); err != nil {
		t.Fatalf("flags before the subcommand: %v", err)
	}
	unlock, err := crypto.LockKeyring(keyring)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keysCmd(t, "rotate", "--keyring", keyring, "--master-key-file", master); !errors.Is(err, crypto.ErrKeyringLocked) {
		t.Errorf("rotate while another keys command holds the lock: %v", err)
	}
	if _, err := keysCmd(t, "list", "--keyring", keyring); err != nil {
		t.Errorf("list needs no lock: %v", err)
	}
	unlock()
	if _, err := keysCmd(t, "rotate", "--keyring", keyring, "--master-key-file", master); err != nil {
		t.Errorf("rotate after the lock is released: %v", err)
	}
	// The keyring's JSON errors name members, not Go types.
	os.WriteFile(keyring, []byte(`{"format":"phiproxy-keyring/v1","keyring_id":"x","data_keys":[{"id":"1"}]}`), 0o600)
	if _, err := keysCmd(t, "list", "--keyring", keyring); err == nil || strings.Contains(err.Error(), "uint32") || !strings.Contains(err.Error(), `member "data_keys.id"`) {
		t.Errorf("malformed keyring: %v", err)
	}
}
