package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/crypto/awskms"
)

const keysUsage = `Usage: phiproxy keys SUBCOMMAND [flags]

  init     create a keyring: the first data key and the blind-index root key
  rotate   add a new active data key; the old active key becomes decrypt-only
  list     show key ids, states, dates and providers (never key material)
  rewrap   re-wrap every key under another master key (--provider, --kms-key
           or --master-key-file); no stored value changes
  retire ID
           retire a data key that no value uses any more (never the active key)

Flags (all subcommands; they override the keys: section of --config):
  --config FILE           configuration file (default $PHIPROXY_CONFIG)
  --keyring FILE          keyring file (keys.keyring_file)
  --provider NAME         local | aws-kms (keys.provider)
  --master-key-file FILE  local master key, base64 (keys.local.master_key_file;
                          PHIPROXY_MASTER_KEY overrides the config's file)
  --kms-key ID            KMS key id, ARN or alias (keys.aws_kms.key_id)
  --kms-region REGION     (keys.aws_kms.region)
  --kms-endpoint URL      a KMS emulator (keys.aws_kms.endpoint)
rewrap only: the flags above name the new master key; the current one is
read from the keyring file, with --from-master-key-file for a local key.
list only: --json prints JSON.
`

// keysFlags are the flags shared by the keys subcommands.
type keysFlags struct {
	config, keyring, provider, masterKeyFile string
	kmsKey, kmsRegion, kmsEndpoint           string
	fromMasterKeyFile                        string // rewrap
	json                                     bool   // list
	set                                      map[string]bool
}

// runKeys implements `phiproxy keys`.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, keysUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: keys needs a subcommand", errUsage)
		}
		return nil
	}
	sub := args[0]
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f keysFlags
	fs.StringVar(&f.config, "config", os.Getenv(envConfig), "")
	fs.StringVar(&f.keyring, "keyring", "", "")
	fs.StringVar(&f.provider, "provider", "", "")
	fs.StringVar(&f.masterKeyFile, "master-key-file", "", "")
	fs.StringVar(&f.kmsKey, "kms-key", "", "")
	fs.StringVar(&f.kmsRegion, "kms-region", "", "")
	fs.StringVar(&f.kmsEndpoint, "kms-endpoint", "", "")
	if sub == "rewrap" {
		fs.StringVar(&f.fromMasterKeyFile, "from-master-key-file", "", "")
	}
	if sub == "list" {
		fs.BoolVar(&f.json, "json", false, "")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: keys %s: %v\n\n%s", errUsage, sub, err, keysUsage)
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })

	cfg, err := f.keysConfig(sub == "rewrap")
	if err != nil {
		return err
	}
	if cfg.KeyringFile == "" {
		return fmt.Errorf("%w: keys %s: no keyring file: use --keyring or keys.keyring_file in --config", errUsage, sub)
	}
	rest := fs.Args()
	if sub != "retire" && len(rest) > 0 {
		return fmt.Errorf("%w: keys %s: unexpected argument %q", errUsage, sub, rest[0])
	}
	switch sub {
	case "init":
		return keysInit(ctx, cfg, stdout)
	case "rotate":
		return keysRotate(ctx, cfg, stdout)
	case "list":
		return keysList(cfg, f.json, stdout)
	case "rewrap":
		return keysRewrap(ctx, cfg, f, stdout)
	case "retire":
		if len(rest) != 1 {
			return fmt.Errorf("%w: keys retire needs one key id", errUsage)
		}
		id, err := strconv.ParseUint(rest[0], 10, 32)
		if err != nil || id == 0 {
			return fmt.Errorf("%w: keys retire: %q is not a key id", errUsage, rest[0])
		}
		return keysRetire(cfg, uint32(id), stdout)
	default:
		return fmt.Errorf("%w: unknown keys subcommand %q\n\n%s", errUsage, sub, keysUsage)
	}
}

// keysConfig reads the keys: section of --config (other sections are not
// validated here: key management works with a half-written configuration)
// and applies the flags (for rewrap, only those naming files and the KMS
// endpoint). Relative paths in the file are resolved against its
// directory, as loadConfig does.
func (f *keysFlags) keysConfig(rewrap bool) (crypto.Config, error) {
	var cfg crypto.Config
	if f.config != "" {
		data, err := os.ReadFile(f.config)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		var doc struct {
			Keys crypto.Config `yaml:"keys"`
		}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return cfg, fmt.Errorf("%s: %w", f.config, err)
		}
		cfg = doc.Keys
		dir := filepath.Dir(f.config)
		for _, p := range []*string{&cfg.KeyringFile, &cfg.Local.MasterKeyFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
	}
	if f.set["keyring"] {
		cfg.KeyringFile = f.keyring
	}
	if f.set["kms-region"] {
		cfg.AWSKMS.Region = f.kmsRegion
	}
	if f.set["kms-endpoint"] {
		cfg.AWSKMS.Endpoint = f.kmsEndpoint
	}
	if rewrap { // --provider, --kms-key and --master-key-file name the new master key
		return cfg, nil
	}
	if f.set["provider"] {
		cfg.Provider = f.provider
	}
	if f.set["master-key-file"] {
		cfg.Local.MasterKeyFile = f.masterKeyFile
	}
	if f.set["kms-key"] {
		cfg.AWSKMS.KeyID = f.kmsKey
	}
	if err := validateKeys(cfg); err != nil {
		return cfg, fmt.Errorf("%w: %v", errUsage, err)
	}
	return cfg, nil
}

// newKeyProvider builds the provider that cfg names: the local master key
// (PHIPROXY_MASTER_KEY, else keys.local.master_key_file) or AWS KMS through
// the standard credential chain. serve uses it to open the keyring.
func newKeyProvider(ctx context.Context, cfg crypto.Config, getenv func(string) string) (crypto.Provider, error) {
	switch cfg.Provider {
	case "", crypto.ProviderLocal:
		return crypto.LoadLocalProvider(cfg.Local, getenv)
	case crypto.ProviderAWSKMS:
		return awskms.NewFromConfig(ctx, cfg.AWSKMS)
	default:
		return nil, fmt.Errorf("keys.provider %q: want %s or %s", cfg.Provider, crypto.ProviderLocal, crypto.ProviderAWSKMS)
	}
}

// openKeyring loads the keyring that cfg names, unwrapping its keys once.
func openKeyring(ctx context.Context, cfg crypto.Config) (*crypto.Keyring, error) {
	p, err := newKeyProvider(ctx, cfg, os.Getenv)
	if err != nil {
		return nil, err
	}
	return crypto.OpenKeyring(ctx, cfg.KeyringFile, p)
}

func keysInit(ctx context.Context, cfg crypto.Config, stdout io.Writer) error {
	if _, err := os.Stat(cfg.KeyringFile); err == nil {
		return fmt.Errorf("keys init: %s already exists", cfg.KeyringFile)
	}
	if (cfg.Provider == "" || cfg.Provider == crypto.ProviderLocal) && os.Getenv(crypto.EnvMasterKey) == "" && cfg.Local.MasterKeyFile != "" {
		if _, err := os.Stat(cfg.Local.MasterKeyFile); errors.Is(err, fs.ErrNotExist) {
			if err := crypto.WriteNewMasterKeyFile(cfg.Local.MasterKeyFile); err != nil {
				return fmt.Errorf("keys init: %w", err)
			}
			fmt.Fprintf(stdout, "wrote a new local master key to %s (development only: keep it off the database host's backups)\n", cfg.Local.MasterKeyFile)
		}
	}
	p, err := newKeyProvider(ctx, cfg, os.Getenv)
	if err != nil {
		return fmt.Errorf("keys init: %w", err)
	}
	kr, err := crypto.CreateKeyring(ctx, cfg.KeyringFile, p)
	if err != nil {
		return fmt.Errorf("keys init: %w", err)
	}
	defer kr.Close()
	fmt.Fprintf(stdout, "created keyring %s in %s: data key %d active, wrapped by %s\n", kr.ID(), cfg.KeyringFile, kr.ActiveKeyID(), kr.Keys()[0].MasterKeyID)
	return nil
}

func keysRotate(ctx context.Context, cfg crypto.Config, stdout io.Writer) error {
	kr, err := openKeyring(ctx, cfg)
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	defer kr.Close()
	prev := kr.ActiveKeyID()
	info, err := kr.Rotate(ctx)
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	if err := kr.Save(cfg.KeyringFile); err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	fmt.Fprintf(stdout, "data key %d is active; key %d is now decrypt-only.\nRestart or reload the proxies, then run `phiproxy migrate reencrypt` before retiring key %d.\n", info.ID, prev, prev)
	return nil
}

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
// the file) and wraps again under the provider the flags name.
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
	fmt.Fprintf(stdout, "rewrapped %d data keys and the blind-index root key under %s %s; no value changed.\nSet keys.provider: %s in the configuration.\n",
		len(kr.Keys()), to.Provider, kr.Keys()[0].MasterKeyID, to.Provider)
	return nil
}

func keysRetire(cfg crypto.Config, id uint32, stdout io.Writer) error {
	f, err := crypto.ReadKeyringFile(cfg.KeyringFile)
	if err != nil {
		return fmt.Errorf("keys retire: %w", err)
	}
	if err := f.Retire(id); err != nil {
		return fmt.Errorf("keys retire: %w", err)
	}
	if err := crypto.WriteKeyringFile(cfg.KeyringFile, f, false); err != nil {
		return fmt.Errorf("keys retire: %w", err)
	}
	fmt.Fprintf(stdout, "data key %d retired: values still under it no longer decrypt.\n", id)
	return nil
}
