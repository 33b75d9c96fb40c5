package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/novamind/phiproxy/proxy"
)

const checkUsage = `Usage: phiproxy check --config FILE [--offline] [--strict] [--database DB] [--dsn DSN]

Checks a configuration the way the proxy will use it, and prints every
problem with its fix:

  files        exist; the keyring, the local master key and the TLS private
               key are not readable by group or others
  certificates the listen certificate matches its key, is valid now and for
               30 days more (less is a warning), and covers the listen host;
               CA bundles parse and are not expired
  keys         the keyring parses and unwraps through its provider (a wrong
               master key, a corrupt keyring, KMS unreachable or refusing,
               missing AWS credentials all fail); with AWS KMS, the key that
               wraps new data keys accepts an Encrypt
  upstream     a TLS connection as the proxy opens it (certificate, name)
  databases    each governed database (policy.databases, else the default of
               the connection settings) holds every policy table as phiproxy
               needs it: the DDL phiproxy schema prints is the fix

--offline skips everything that needs the network (the upstream, the
databases, KMS); missing files are then warnings unless --strict.
Exit status: 0 when there is no problem, 1 otherwise, 2 for a usage mistake.

` + dbFlagsHelp

// checkOptions are the flags of `phiproxy check`.
type checkOptions struct {
	strict  bool // missing files are errors even offline
	offline bool // do not contact the upstream, the databases or KMS
	db      dbFlags
}

// runCheck implements `phiproxy check`.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check")
	path := fs.String("config", os.Getenv(envConfig), "")
	var opts checkOptions
	fs.BoolVar(&opts.strict, "strict", false, "")
	fs.BoolVar(&opts.offline, "offline", false, "")
	opts.db.register(fs)
	pos, err := parseArgs(fs, args, checkUsage)
	if err != nil {
		return err
	}
	if err := noArgs("check", pos); err != nil {
		return err
	}
	if err := needConfig("check", *path); err != nil {
		return err
	}
	return checkConfig(ctx, *path, opts, stdout)
}

// errCheckFailed: check found problems (already printed).
var errCheckFailed = errors.New("configuration check failed")

// checkReport collects what check finds.
type checkReport struct {
	out      io.Writer
	problems int
	warnings int
}

// ok reports a check that passed.
func (r *checkReport) ok(format string, args ...any) {
	fmt.Fprintf(r.out, "ok       %s\n", fmt.Sprintf(format, args...))
}

// fail reports a problem and its fix (which may span lines).
func (r *checkReport) fail(what, fix string) {
	r.problems++
	r.print("problem", what, fix)
}

// warn reports something to look at.
func (r *checkReport) warn(what, fix string) {
	r.warnings++
	r.print("warning", what, fix)
}

func (r *checkReport) print(kind, what, fix string) {
	fmt.Fprintf(r.out, "%-8s %s\n", kind, what)
	if fix != "" {
		fmt.Fprintf(r.out, "  fix:   %s\n", strings.ReplaceAll(strings.TrimRight(fix, "\n"), "\n", "\n         "))
	}
}

func checkConfig(ctx context.Context, path string, opts checkOptions, out io.Writer) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	r := &checkReport{out: out}
	filesOK := checkFiles(r, cfg, opts)
	if filesOK {
		checkCertificates(r, cfg)
	}
	checkKeys(ctx, r, cfg, opts)
	for _, t := range cfg.policy.Tables() {
		if t.Migrating {
			r.warn(fmt.Sprintf("policy table %s is in migration (migrating: true): plaintext values read as they are, comparisons through its blind indexes refused", t.QualifiedName()),
				fmt.Sprintf("once phiproxy migrate encrypt --table %s has encrypted every value and step 2 of phiproxy schema is done, remove migrating: true and reload the proxies", t.QualifiedName()))
		}
	}
	if opts.offline {
		r.warn("upstream, databases and KMS not contacted (--offline)", "")
	} else {
		checkUpstream(ctx, r, cfg)
		if !cfg.policy.Empty() {
			checkDatabases(ctx, r, cfg, opts.db)
		}
	}
	cols := 0
	for _, t := range cfg.policy.Tables() {
		cols += len(t.Columns)
	}
	fmt.Fprintf(out, "policy: %d tables, %d PHI columns\n", len(cfg.policy.Tables()), cols)
	if r.problems > 0 {
		return fmt.Errorf("%w: %d problems, %d warnings (each with its fix above)", errCheckFailed, r.problems, r.warnings)
	}
	fmt.Fprintf(out, "%s: configuration OK (%d warnings)\n", path, r.warnings)
	return nil
}

// checkUpstream opens a TLS connection to the upstream as the proxy would.
func checkUpstream(ctx context.Context, r *checkReport, cfg *config) {
	up := cfg.file.Proxy.Upstream
	if err := proxy.CheckUpstream(ctx, cfg.file.Proxy); err != nil {
		var ue *proxy.UpstreamError
		fix := "check upstream.tls (mode, ca_file, server_name) against the server's certificate"
		if errors.As(err, &ue) && ue.Unreachable() {
			fix = "check upstream.address and that PostgreSQL is running and reachable from here"
		}
		r.fail(fmt.Sprintf("upstream %s: %v", up.Address, err), fix)
		return
	}
	r.ok("upstream %s: reachable, TLS mode %s", up.Address, up.TLS.Mode)
}

// checkDatabases compares the policy with each governed database.
func checkDatabases(ctx context.Context, r *checkReport, cfg *config, f dbFlags) {
	if len(cfg.policy.Databases()) == 0 && f.database == "" {
		r.warn("policy.databases is not set: only the connection's default database is checked",
			"list the databases the proxy serves PHI tables in: policy: { databases: [app, ...] }")
	}
	for _, db := range f.databases(cfg.policy) {
		problems, name, err := diffDatabase(ctx, cfg, f, db, "check")
		if err != nil {
			r.fail(fmt.Sprintf("database %s: %v", dbName(db), err),
				"check reads each catalog as an operator would: set PGUSER and PGPASSWORD (or PGPASSFILE), or --dsn, for a role that may read it; check upstream.address")
			continue
		}
		if len(problems) == 0 {
			r.ok("database %s: every policy table is ready", name)
			continue
		}
		for _, p := range problems {
			what := p.Table
			if p.Column != "" {
				what += "." + p.Column
			}
			fix := strings.Join(p.DDL, "\n")
			if fix == "" {
				fix = "(no DDL: decide the fix)"
			}
			r.fail(fmt.Sprintf("database %s: %s: %s", name, what, p.Msg), fix)
		}
		fmt.Fprintf(r.out, "note     phiproxy schema --config FILE --database %s prints these fixes as one script, in order\n", name)
	}
}
