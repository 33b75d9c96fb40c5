package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/novamind/phiproxy/crypto"
)

// checkKeys opens the keyring through its provider, as serve does at
// startup, and with AWS KMS proves that the key wrapping new data keys
// accepts an Encrypt (what rotate and rewrap need).
func checkKeys(ctx context.Context, r *checkReport, cfg *config, opts checkOptions) {
	k := cfg.file.Keys
	if k.KeyringFile == "" {
		if !cfg.policy.Empty() {
			r.fail("keys.keyring_file is not set, but the policy protects columns",
				"set keys.keyring_file and create the keyring with phiproxy keys init --config FILE")
		}
		return
	}
	kf, err := crypto.ReadKeyringFile(k.KeyringFile)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return // reported with the files
	case err != nil:
		r.fail(fmt.Sprintf("keys.keyring_file: %v", err),
			"restore the keyring file from its backup: a damaged keyring cannot be repaired, and without it no value decrypts")
		return
	}
	active := kf.Active()
	provider := k.Provider
	if provider == "" {
		provider = crypto.ProviderLocal
	}
	if active.Provider != provider {
		r.fail(fmt.Sprintf("the keyring is wrapped by %s (master key %s) but keys.provider is %s", active.Provider, active.MasterKeyID, provider),
			fmt.Sprintf("set keys.provider: %s (or rewrap the keyring: phiproxy keys rewrap)", active.Provider))
		return
	}
	if provider == crypto.ProviderAWSKMS && opts.offline {
		r.warn("keyring not unwrapped: AWS KMS is not contacted with --offline", "")
		return
	}
	p, err := newKeyProvider(ctx, k, os.Getenv)
	if err != nil {
		r.fail(fmt.Sprintf("key provider %s: %v", provider, err), providerFix(provider, active.MasterKeyID))
		return
	}
	kr, err := crypto.UnwrapKeyring(ctx, kf, p)
	if errors.Is(err, crypto.ErrUnwrap) {
		fix := fmt.Sprintf("the master key must be the one that wrapped the keyring (%s): check PHIPROXY_MASTER_KEY and keys.local.master_key_file, or restore the keyring that belongs to this master key", active.MasterKeyID)
		if provider == crypto.ProviderAWSKMS {
			fix = fmt.Sprintf("KMS refused to decrypt with %s: check that the keyring file is this keyring's (its id is bound into every wrapped key) and the key policy", active.MasterKeyID)
		}
		r.fail(fmt.Sprintf("the keyring does not unwrap: %v", err), fix)
		return
	}
	if err != nil {
		r.fail(fmt.Sprintf("the keyring could not be unwrapped: %v", err), providerFix(provider, active.MasterKeyID))
		return
	}
	defer kr.Close()
	r.ok("keyring %s unwrapped by %s %s: the blind-index root key and data keys %s (key %d active)",
		kf.ID, provider, active.MasterKeyID, keyList(kf), active.ID)
	if provider != crypto.ProviderAWSKMS {
		return
	}
	wk := k
	wk.AWSKMS.KeyID = active.MasterKeyID
	wp, err := newKeyProvider(ctx, wk, os.Getenv)
	if err == nil {
		probe := make([]byte, crypto.KeySize)
		rand.Read(probe)
		_, err = wp.Wrap(ctx, probe, map[string]string{crypto.ContextKeyring: kf.ID, crypto.ContextPurpose: "phiproxy-check"})
		clear(probe)
	}
	if err != nil {
		r.fail(fmt.Sprintf("KMS key %s refuses Encrypt: keys rotate and rotate-index would fail: %v", active.MasterKeyID, err),
			fmt.Sprintf("grant kms:Encrypt and kms:GenerateDataKey on %s to this host's role", active.MasterKeyID))
		return
	}
	r.ok("KMS key %s accepts Encrypt (rotations can wrap new keys)", active.MasterKeyID)
}

// providerFix says what to check when a provider cannot be asked.
func providerFix(provider, masterKeyID string) string {
	if provider == crypto.ProviderAWSKMS {
		return fmt.Sprintf("check that KMS is reachable from here (keys.aws_kms.region, keys.aws_kms.endpoint), that AWS credentials are available (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance or task role) and that they may kms:Decrypt with %s", masterKeyID)
	}
	return "set PHIPROXY_MASTER_KEY or keys.local.master_key_file to the base64 master key (32 bytes)"
}

// keyList lists the ids of the data keys that are not retired.
func keyList(kf *crypto.KeyringFile) string {
	var ids []string
	for _, k := range kf.DataKeys {
		if k.State != crypto.StateRetired {
			ids = append(ids, fmt.Sprint(k.ID))
		}
	}
	return strings.Join(ids, ", ")
}
