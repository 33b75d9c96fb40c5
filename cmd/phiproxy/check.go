package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/novamind/phiproxy/proxy"
)

// checkOptions are the flags of `phiproxy check`.
type checkOptions struct {
	strict  bool // missing files and an unreachable upstream are errors
	offline bool // do not contact the upstream
}

// runCheck validates a configuration: structure and values (with line
// numbers), the files it names, the certificates, and, when reachable, a
// TLS connection to the upstream as the proxy would open it.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv(envConfig), "configuration file (default $"+envConfig+")")
	var opts checkOptions
	fs.BoolVar(&opts.strict, "strict", false, "treat missing files and an unreachable upstream as errors")
	fs.BoolVar(&opts.offline, "offline", false, "do not connect to the upstream")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *path == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: phiproxy check --config FILE [--strict] [--offline]", errUsage)
	}
	return checkConfig(ctx, *path, opts, stdout)
}

// errCheckFailed: check found problems (already printed).
var errCheckFailed = errors.New("configuration check failed")

func checkConfig(ctx context.Context, path string, opts checkOptions, out io.Writer) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	var warnings, problems []string
	report := func(strictOnly bool, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if strictOnly && !opts.strict {
			warnings = append(warnings, msg)
		} else {
			problems = append(problems, msg)
		}
	}

	files := cfg.file.Proxy.Files()
	if k := cfg.file.Keys; k.Provider != "aws-kms" || k.KeyringFile != "" {
		if k.KeyringFile != "" {
			files["keys.keyring_file"] = k.KeyringFile
		}
		if k.Local.MasterKeyFile != "" && os.Getenv("PHIPROXY_MASTER_KEY") == "" {
			files["keys.local.master_key_file"] = k.Local.MasterKeyFile
		}
	}
	missing := false
	for _, field := range slices.Sorted(maps.Keys(files)) {
		if _, err := os.Stat(files[field]); err != nil {
			missing = true
			report(true, "%s: %v", field, err)
		}
	}
	if !missing {
		// New loads and parses the certificates and CA bundles.
		if _, err := proxy.New(cfg.file.Proxy, nil, nil); err != nil {
			report(false, "%v", err)
		}
	}
	switch {
	case opts.offline:
	case missing:
		warnings = append(warnings, "upstream not contacted: files are missing")
	default:
		if err := proxy.CheckUpstream(ctx, cfg.file.Proxy); err != nil {
			var ue *proxy.UpstreamError
			unreachable := errors.As(err, &ue) && ue.Unreachable()
			report(unreachable, "upstream %s: %v", cfg.file.Proxy.Upstream.Address, err)
		} else {
			fmt.Fprintf(out, "upstream %s: reachable, tls mode %s\n", cfg.file.Proxy.Upstream.Address, cfg.file.Proxy.Upstream.TLS.Mode)
		}
	}
	cols := 0
	for _, t := range cfg.policy.Tables() {
		cols += len(t.Columns)
	}
	fmt.Fprintf(out, "policy: %d tables, %d PHI columns\n", len(cfg.policy.Tables()), cols)
	for _, w := range warnings {
		fmt.Fprintln(out, "warning:", w)
	}
	for _, p := range problems {
		fmt.Fprintln(out, "error:", p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", errCheckFailed, strings.Join(problems, "; "))
	}
	fmt.Fprintf(out, "%s: configuration OK\n", path)
	return nil
}
