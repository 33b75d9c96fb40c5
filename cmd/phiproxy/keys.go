package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/crypto/awskms"
)

const keysUsage = `Usage: phiproxy keys SUBCOMMAND [flags]      (flags may come before or after arguments)

  init          create a keyring: the first data key and the blind-index root key
  rotate        add a new active data key; the old active key becomes decrypt-only
                (then reload the proxies and run phiproxy migrate reencrypt)
  rotate-index  replace the blind-index root key (then reload the proxies and run
                phiproxy migrate reindex on each table with a blind index)
  list          show key ids, states, dates and master keys (never key material)
  usage         count the stored values under each data key, per column, in each
                governed database (a scan of the policy tables)
  rewrap        re-wrap every key under another master key (--provider, --kms-key
                or --master-key-file); no stored value changes
  retire ID     retire a data key; refused while any value in the governed
                databases still uses it (--force retires anyway: those values
                become unreadable for good)

Flags (they override the keys: section of --config):
  --config FILE           configuration file (default $PHIPROXY_CONFIG)
  --keyring FILE          keyring file (keys.keyring_file)
  --provider NAME         local | aws-kms (keys.provider)
  --master-key-file FILE  local master key, base64 (keys.local.master_key_file;
                          PHIPROXY_MASTER_KEY overrides the config's file)
  --kms-key ID            KMS key id, ARN or alias (keys.aws_kms.key_id)
  --kms-region REGION     (keys.aws_kms.region)
  --kms-endpoint URL      a KMS emulator (keys.aws_kms.endpoint)
rewrap: the flags above name the new master key; the current one is read from
  the keyring file, with --from-master-key-file for a local key.
rotate, rotate-index: new keys are wrapped by the master key that wraps the
  active data key (recorded in the keyring, so a rewrap carries over), unless
  --kms-key or --master-key-file names another.
list: --json prints JSON.
usage, retire: --database DB and --dsn DSN as for phiproxy schema (usage: --json).
retire: --force skips the check.

init, rotate, rotate-index, rewrap and retire hold an exclusive lock on
KEYRING.lock while they run: a second one fails at once instead of
interleaving its change with the first's.
`

// keysFlags are the flags of the keys subcommands.
type keysFlags struct {
	config, keyring, provider, masterKeyFile string
	kmsKey, kmsRegion, kmsEndpoint           string
	fromMasterKeyFile                        string // rewrap
	json                                     bool   // list, usage
	force                                    bool   // retire
	db                                       dbFlags
	set                                      map[string]bool
}

// keysOnly lists the flags that only some subcommands take.
var keysOnly = map[string][]string{
	"from-master-key-file": {"rewrap"},
	"json":                 {"list", "usage"},
	"force":                {"retire"},
	"database":             {"usage", "retire"},
	"dsn":                  {"usage", "retire"},
}

// runKeys implements `phiproxy keys`.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("keys")
	var f keysFlags
	flags.StringVar(&f.config, "config", os.Getenv(envConfig), "")
	flags.StringVar(&f.keyring, "keyring", "", "")
	flags.StringVar(&f.provider, "provider", "", "")
	flags.StringVar(&f.masterKeyFile, "master-key-file", "", "")
	flags.StringVar(&f.kmsKey, "kms-key", "", "")
	flags.StringVar(&f.kmsRegion, "kms-region", "", "")
	flags.StringVar(&f.kmsEndpoint, "kms-endpoint", "", "")
	flags.StringVar(&f.fromMasterKeyFile, "from-master-key-file", "", "")
	flags.BoolVar(&f.json, "json", false, "")
	flags.BoolVar(&f.force, "force", false, "")
	f.db.register(flags)
	pos, err := parseArgs(flags, args, keysUsage)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: keys needs a subcommand: init, rotate, rotate-index, list, usage, rewrap or retire (see phiproxy keys --help)", errUsage)
	}
	sub, rest := pos[0], pos[1:]
	if sub == "help" {
		return &helpError{text: keysUsage}
	}
	if !slices.Contains([]string{"init", "rotate", "rotate-index", "list", "usage", "rewrap", "retire"}, sub) {
		return fmt.Errorf("%w: unknown keys subcommand %q (see phiproxy keys --help)", errUsage, sub)
	}
	f.set = map[string]bool{}
	flags.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	for name, subs := range keysOnly {
		if f.set[name] && !slices.Contains(subs, sub) {
			return fmt.Errorf("%w: keys %s does not take --%s", errUsage, sub, name)
		}
	}
	if sub != "retire" && len(rest) > 0 {
		return fmt.Errorf("%w: keys %s: unexpected argument %q", errUsage, sub, rest[0])
	}
	cfg, err := f.keysConfig(sub == "rewrap")
	if err != nil {
		return err
	}
	if cfg.KeyringFile == "" {
		return fmt.Errorf("%w: keys %s: no keyring file: use --keyring or keys.keyring_file in --config", errUsage, sub)
	}
	if slices.Contains([]string{"init", "rotate", "rotate-index", "rewrap", "retire"}, sub) {
		unlock, err := crypto.LockKeyring(cfg.KeyringFile)
		if err != nil {
			return fmt.Errorf("keys %s: %w", sub, err)
		}
		defer unlock()
	}
	switch sub {
	case "init":
		return keysInit(ctx, cfg, stdout)
	case "rotate":
		return keysRotate(ctx, cfg, f, stdout)
	case "rotate-index":
		return keysRotateIndex(ctx, cfg, f, stdout)
	case "list":
		return keysList(cfg, f.json, stdout)
	case "usage":
		return keysUsageCmd(ctx, cfg, f, stdout, stderr)
	case "rewrap":
		return keysRewrap(ctx, cfg, f, stdout)
	default: // retire
		if len(rest) != 1 {
			return fmt.Errorf("%w: keys retire needs one key id", errUsage)
		}
		id, err := strconv.ParseUint(rest[0], 10, 32)
		if err != nil || id == 0 {
			return fmt.Errorf("%w: keys retire: %q is not a key id", errUsage, rest[0])
		}
		return keysRetire(ctx, cfg, f, uint32(id), stdout, stderr)
	}
}

// keysConfig reads the keys: section of --config and applies the flags
// (for rewrap, only those naming files and the KMS endpoint). The whole
// file is decoded with unknown keys refused, as serve does, but only the
// keys: section is validated: key management works with a half-written
// configuration. Relative paths are resolved against the file's directory.
func (f *keysFlags) keysConfig(rewrap bool) (crypto.Config, error) {
	var cfg crypto.Config
	if f.config != "" {
		data, err := os.ReadFile(f.config)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		var fc fileConfig
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
			return cfg, yamlError(f.config, err)
		}
		cfg = fc.Keys
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

// openForNewKeys opens the keyring for rotate and rotate-index: with AWS
// KMS, new keys are wrapped by the KMS key that wraps the active data key
// (as the keyring records it, so that after a rewrap to another KMS key
// the next rotation does not go back to the key the configuration still
// names), unless --kms-key names one.
func openForNewKeys(ctx context.Context, cfg crypto.Config, f keysFlags) (*crypto.Keyring, string, error) {
	kf, err := crypto.ReadKeyringFile(cfg.KeyringFile)
	if err != nil {
		return nil, "", err
	}
	active := kf.Active()
	if cfg.Provider == crypto.ProviderAWSKMS && active.Provider == crypto.ProviderAWSKMS && !f.set["kms-key"] {
		cfg.AWSKMS.KeyID = active.MasterKeyID
	}
	p, err := newKeyProvider(ctx, cfg, os.Getenv)
	if err != nil {
		return nil, "", err
	}
	kr, err := crypto.UnwrapKeyring(ctx, kf, p)
	if err != nil {
		return nil, "", err
	}
	wrapper := active.MasterKeyID
	if f.set["kms-key"] {
		wrapper = cfg.AWSKMS.KeyID
	}
	return kr, wrapper, nil
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

func keysRotate(ctx context.Context, cfg crypto.Config, f keysFlags, stdout io.Writer) error {
	kr, _, err := openForNewKeys(ctx, cfg, f)
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
	fmt.Fprintf(stdout, `data key %d is active (wrapped by %s %s); key %d is now decrypt-only.
Next: reload the proxies (kill -HUP, or restart them) so that new values
are sealed under key %d; then, for each policy table,
  phiproxy migrate reencrypt --config FILE --table TABLE
until phiproxy keys usage shows no value under key %d; then
  phiproxy keys retire %d --config FILE
`, info.ID, info.Provider, info.MasterKeyID, prev, info.ID, prev, prev)
	return nil
}

func keysRotateIndex(ctx context.Context, cfg crypto.Config, f keysFlags, stdout io.Writer) error {
	kr, wrapper, err := openForNewKeys(ctx, cfg, f)
	if err != nil {
		return fmt.Errorf("keys rotate-index: %w", err)
	}
	defer kr.Close()
	if err := kr.RotateIndexRoot(ctx); err != nil {
		return fmt.Errorf("keys rotate-index: %w", err)
	}
	if err := kr.Save(cfg.KeyringFile); err != nil {
		return fmt.Errorf("keys rotate-index: %w", err)
	}
	fmt.Fprintf(stdout, `the blind-index root key is new (wrapped by %s): every blind index changes.
Next: reload the proxies (kill -HUP, or restart them), then run for each
policy table with a blind index
  phiproxy migrate reindex --config FILE --table TABLE
Until a table is reindexed, equality lookups through the proxy miss its rows
whose index was computed under the old key; do it in a quiet hour.
`, wrapper)
	return nil
}
