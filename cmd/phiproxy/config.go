package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/internal/auditlog"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
)

// envConfig names the environment variable that gives the configuration
// file when --config is not set.
const envConfig = "PHIPROXY_CONFIG"

// fileConfig is the whole configuration file; each package owns the type of
// its section (DESIGN.md, "Configuration").
type fileConfig struct {
	Proxy  proxy.Config    `yaml:",inline"` // listen, upstream, metrics, limits
	Log    logConfig       `yaml:"log"`
	Keys   crypto.Config   `yaml:"keys"`
	Policy yaml.Node       `yaml:"policy"` // decoded by policy.Load
	Audit  auditlog.Config `yaml:"audit"`
}

// config is a loaded and validated configuration.
type config struct {
	path   string
	file   fileConfig
	policy *policy.Policy
}

// loadConfig reads, decodes and validates the file at path. Unknown keys,
// bad values and invalid settings are reported with the file's line
// numbers. Relative file names in the config are resolved against the
// config file's directory.
func loadConfig(path string) (*config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := parseConfig(path, data)
	if err != nil {
		return nil, err
	}
	cfg.resolvePaths(filepath.Dir(path))
	return cfg, nil
}

// parseConfig decodes and validates a configuration document; name is used
// in error messages.
func parseConfig(name string, data []byte) (*config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: the configuration is empty", name)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(name, err)
	}
	c := &config{path: name, file: fc}

	var errs []error
	c.file.Proxy.SetDefaults()
	c.file.Log.setDefaults()
	if err := c.file.Proxy.Validate(); err != nil {
		for _, e := range unjoin(err) {
			var fe *proxy.FieldError
			if errors.As(e, &fe) {
				errs = append(errs, atLine(name, root.Content[0], fe.Field, e))
			} else {
				errs = append(errs, fmt.Errorf("%s: %w", name, e))
			}
		}
	}
	if err := c.file.Log.validate(); err != nil {
		errs = append(errs, atLine(name, root.Content[0], "log", err))
	}
	if err := validateKeys(c.file.Keys); err != nil {
		errs = append(errs, atLine(name, root.Content[0], "keys.provider", err))
	}
	c.file.Audit.SetDefaults()
	if err := c.file.Audit.Validate(); err != nil {
		errs = append(errs, atLine(name, root.Content[0], "audit", err))
	}
	p, err := policy.Load(&c.file.Policy)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	c.policy = p
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// validateKeys checks the keys section's structure; the keyring itself is
// loaded by the crypto package.
func validateKeys(k crypto.Config) error {
	switch k.Provider {
	case "", crypto.ProviderLocal, crypto.ProviderAWSKMS:
		return nil
	default:
		return fmt.Errorf("keys.provider %q: want %s or %s", k.Provider, crypto.ProviderLocal, crypto.ProviderAWSKMS)
	}
}

// resolvePaths makes the config's relative file names relative to dir.
func (c *config) resolvePaths(dir string) {
	for _, p := range []*string{
		&c.file.Proxy.Listen.TLS.CertFile, &c.file.Proxy.Listen.TLS.KeyFile,
		&c.file.Proxy.Listen.TLS.ClientCAFile, &c.file.Proxy.Upstream.TLS.CAFile,
		&c.file.Proxy.Upstream.TLS.CertFile, &c.file.Proxy.Upstream.TLS.KeyFile,
		&c.file.Proxy.Upstream.AuthFile, &c.file.Proxy.Upstream.AuthPasswordFile,
		&c.file.Keys.KeyringFile, &c.file.Keys.Local.MasterKeyFile,
	} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if a := &c.file.Audit.File; *a != "" && *a != auditlog.FileStdout && *a != auditlog.FileStderr && !filepath.IsAbs(*a) {
		*a = filepath.Join(dir, *a)
	}
}

// atLine prefixes err with the line of the YAML path field ("a.b.c": the
// deepest node that exists).
func atLine(name string, doc *yaml.Node, field string, err error) error {
	if line := lineOf(doc, field); line > 0 {
		return fmt.Errorf("%s:%d: %w", name, line, err)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// lineOf finds the line of the value at a dotted path in a mapping node, or
// of its deepest existing ancestor key.
func lineOf(n *yaml.Node, path string) int {
	line := 0
	for _, key := range strings.Split(path, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			break
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line = n.Content[i].Line
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
