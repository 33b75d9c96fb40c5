package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"text/tabwriter"
	"time"

	"github.com/novamind/phiproxy/crypto"
)

func keysList(cfg crypto.Config, asJSON bool, stdout io.Writer) error {
	f, err := crypto.ReadKeyringFile(cfg.KeyringFile)
	if err != nil {
		return fmt.Errorf("keys list: %w", err)
	}
	keys := crypto.KeyInfos(f)
	if asJSON {
		type key struct {
			ID          uint32    `json:"id"`
			State       string    `json:"state"`
			Created     time.Time `json:"created"`
			Provider    string    `json:"provider"`
			MasterKeyID string    `json:"master_key_id"`
		}
		out := struct {
			Keyring   string `json:"keyring_id"`
			DataKeys  []key  `json:"data_keys"`
			IndexRoot key    `json:"blind_index_root"`
		}{Keyring: f.ID}
		for _, k := range keys {
			out.DataKeys = append(out.DataKeys, key{k.ID, string(k.State), k.Created, k.Provider, k.MasterKeyID})
		}
		r := f.IndexRoot
		out.IndexRoot = key{0, "", r.Created, r.Provider, r.MasterKeyID}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "keyring %s (%s)\n", f.ID, cfg.KeyringFile)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tPROVIDER\tMASTER KEY")
	for _, k := range keys {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", k.ID, k.State, k.Created.Format(time.RFC3339), k.Provider, k.MasterKeyID)
	}
	r := f.IndexRoot
	fmt.Fprintf(tw, "index-root\t-\t%s\t%s\t%s\n", r.Created.Format(time.RFC3339), r.Provider, r.MasterKeyID)
	return tw.Flush()
}

// keysRewrap unwraps with the provider that wrapped the keyring (read from
// the file) and wraps again under the provider the flags name. It then
// says which settings of the configuration to change: the provider must
// match for anything to unwrap the keyring; the KMS key id only names the
// key in use, since rotations follow the keyring's own record.
func keysRewrap(ctx context.Context, cfg crypto.Config, f keysFlags, stdout io.Writer) error {
	if !f.set["provider"] {
		return fmt.Errorf("%w: keys rewrap needs --provider (and --kms-key or --master-key-file)", errUsage)
	}
	kf, err := crypto.ReadKeyringFile(cfg.KeyringFile)
	if err != nil {
		return fmt.Errorf("keys rewrap: %w", err)
	}
	from := cfg
	from.Provider = kf.Active().Provider
	getenv := os.Getenv
	if f.fromMasterKeyFile != "" {
		from.Local.MasterKeyFile = f.fromMasterKeyFile
		getenv = func(string) string { return "" } // the explicit file wins
	}
	src, err := newKeyProvider(ctx, from, getenv)
	if err != nil {
		return fmt.Errorf("keys rewrap: current provider: %w", err)
	}
	to := cfg
	to.Provider = f.provider
	to.Local.MasterKeyFile = f.masterKeyFile
	to.AWSKMS.KeyID = f.kmsKey
	if err := validateKeys(to); err != nil {
		return fmt.Errorf("%w: keys rewrap: %v", errUsage, err)
	}
	switch to.Provider {
	case crypto.ProviderLocal:
		if to.Local.MasterKeyFile == "" {
			return fmt.Errorf("%w: keys rewrap --provider local needs --master-key-file", errUsage)
		}
		if _, err := os.Stat(to.Local.MasterKeyFile); errors.Is(err, fs.ErrNotExist) {
			if err := crypto.WriteNewMasterKeyFile(to.Local.MasterKeyFile); err != nil {
				return fmt.Errorf("keys rewrap: %w", err)
			}
			fmt.Fprintf(stdout, "wrote a new local master key to %s\n", to.Local.MasterKeyFile)
		}
	case crypto.ProviderAWSKMS:
		if to.AWSKMS.KeyID == "" {
			return fmt.Errorf("%w: keys rewrap --provider aws-kms needs --kms-key", errUsage)
		}
	}
	dst, err := newKeyProvider(ctx, to, func(string) string { return "" })
	if err != nil {
		return fmt.Errorf("keys rewrap: new provider: %w", err)
	}
	kr, err := crypto.UnwrapKeyring(ctx, kf, src)
	if err != nil {
		return fmt.Errorf("keys rewrap: %w", err)
	}
	defer kr.Close()
	if err := kr.Rewrap(ctx, dst); err != nil {
		return fmt.Errorf("keys rewrap: %w", err)
	}
	if err := kr.Save(cfg.KeyringFile); err != nil {
		return fmt.Errorf("keys rewrap: %w", err)
	}
	newID := kr.Keys()[0].MasterKeyID
	fmt.Fprintf(stdout, "rewrapped %d data keys and the blind-index root key under %s %s; no stored value changed.\n", len(kr.Keys()), to.Provider, newID)
	fmt.Fprintln(stdout, rewrapSettings(f.config, cfg, to, newID))
	return nil
}

// rewrapSettings tells exactly which settings to change after a rewrap
// from the provider of cfg to that of to.
func rewrapSettings(path string, cfg, to crypto.Config, newID string) string {
	where := "in the keys: section of the configuration of every proxy"
	if path != "" {
		where = fmt.Sprintf("in %s (and every proxy's configuration)", path)
	}
	var set []string
	if cfg.Provider != to.Provider {
		set = append(set, "keys.provider: "+to.Provider)
	}
	switch {
	case to.Provider == crypto.ProviderAWSKMS && cfg.AWSKMS.KeyID != newID && cfg.AWSKMS.KeyID != to.AWSKMS.KeyID:
		set = append(set, "keys.aws_kms.key_id: "+to.AWSKMS.KeyID)
	case to.Provider == crypto.ProviderLocal && cfg.Local.MasterKeyFile != to.Local.MasterKeyFile:
		set = append(set, "keys.local.master_key_file: "+to.Local.MasterKeyFile)
	}
	if len(set) == 0 {
		return "The configuration already names the new master key; reload the proxies (kill -HUP, or restart them)."
	}
	msg := "Now set, " + where + ":\n"
	for _, s := range set {
		msg += "  " + s + "\n"
	}
	msg += "then reload the proxies (kill -HUP, or restart them). Until keys.provider matches, nothing can open the keyring; later rotations wrap under the new master key whatever the configuration says (the keyring records it)."
	return msg
}
