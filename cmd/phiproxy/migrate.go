package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/novamind/phiproxy/crypto"
	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy/phi"
)

const migrateUsage = `Usage: phiproxy migrate MODE --config FILE --table T [flags]

Rewrites the PHI columns of one table in place, online: applications keep
reading and writing (through the proxy or not) while it runs.

Modes:
  encrypt    plaintext to ciphertext under the active data key, blind
             indexes filled (run phiproxy schema's step 1 first)
  decrypt    ciphertext back to plaintext, blind indexes cleared (drop the
             ciphertext CHECK constraints first; stop writes through the
             proxy to the table, which would encrypt again)
  reencrypt  ciphertext under older data keys to the active key (after
             phiproxy keys rotate and a restart of the proxies)
  reindex    blind indexes recomputed (after phiproxy keys rotate-index, or
             a change of a column's normalizers)

How: pages through the table by its primary key (keyset pagination, never
OFFSET; composite keys too), in batches each in its own transaction, and
writes each row with a compare-and-set UPDATE, so a row written
concurrently is never overwritten: it is read again and retried. It covers
the rows present when it starts (up to the greatest key then); rows
inserted meanwhile through the proxy are ciphertext already, and a second
run covers any inserted around it. Values
already in the target state are skipped, so a second run is a no-op and an
interrupted run (Ctrl-C, kill -9, a lost connection) resumes by running
it again. Plaintext is canonicalized exactly as the proxy canonicalizes a
client's value, so a value migrated here reads back, and is found by
equality, as one written through the proxy. Values are never printed.

Flags:
  --config FILE   configuration (keys: and policy:; default $PHIPROXY_CONFIG)
  --table T       the policy table: schema.table, or table when unambiguous
  --batch N       rows per batch and transaction (default 1000)
  --rate R        at most R rows read per second (default: no limit)
  --dry-run       read and count what would change; write nothing
  --retries N     attempts for a row written concurrently (default 5)

Exit status: 0 when every value is in the target state, 1 when some were
left (invalid, undecryptable, plaintext for reencrypt/reindex, or changed
concurrently on every attempt; the summary says which columns), 2 usage.

` + dbFlagsHelp

// migrateOptions are the flags of a migration.
type migrateOptions struct {
	mode    string
	batch   int
	rate    float64
	dryRun  bool
	retries int
}

// errMigrateIncomplete: the migration left values behind (summary printed).
var errMigrateIncomplete = errors.New("migration incomplete")

// runMigrate implements `phiproxy migrate`.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if wantHelp(args) || len(args) == 0 {
		if len(args) == 0 {
			return fmt.Errorf("%w: migrate needs a mode: encrypt, decrypt, reencrypt or reindex (see phiproxy migrate --help)", errUsage)
		}
		return &helpError{text: migrateUsage}
	}
	fs := newFlagSet("migrate")
	path := fs.String("config", os.Getenv(envConfig), "")
	table := fs.String("table", "", "")
	var o migrateOptions
	var db dbFlags
	db.register(fs)
	fs.IntVar(&o.batch, "batch", 1000, "")
	fs.Float64Var(&o.rate, "rate", 0, "")
	fs.BoolVar(&o.dryRun, "dry-run", false, "")
	fs.IntVar(&o.retries, "retries", 5, "")
	pos, err := parseArgs(fs, args, migrateUsage)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: migrate needs one mode: encrypt, decrypt, reencrypt or reindex (see phiproxy migrate --help)", errUsage)
	}
	o.mode = pos[0]
	if !slices.Contains([]string{modeEncrypt, modeDecrypt, modeReencrypt, modeReindex}, o.mode) {
		return fmt.Errorf("%w: migrate: unknown mode %q: want encrypt, decrypt, reencrypt or reindex", errUsage, o.mode)
	}
	switch {
	case o.batch < 1 || o.batch > 100000:
		return fmt.Errorf("%w: migrate: --batch %d: want 1 to 100000", errUsage, o.batch)
	case o.rate < 0:
		return fmt.Errorf("%w: migrate: --rate must not be negative", errUsage)
	case o.retries < 1:
		return fmt.Errorf("%w: migrate: --retries must be at least 1", errUsage)
	case *table == "":
		return fmt.Errorf("%w: migrate needs --table", errUsage)
	}
	if err := needConfig("migrate", *path); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	t, err := policyTable(cfg.policy, *table)
	if err != nil {
		return err
	}
	dbname, err := db.oneDatabase("migrate", cfg.policy)
	if err != nil {
		return err
	}
	kr, err := openKeyring(ctx, cfg.file.Keys)
	if err != nil {
		return fmt.Errorf("migrate: keyring: %w", err)
	}
	defer kr.Close()
	conn, err := connectDB(ctx, cfg, db, dbname, "migrate")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close(context.Background())
	m, err := newMigrator(ctx, conn, kr, cfg.policy, t, o)
	if err != nil {
		return fmt.Errorf("migrate %s %s: %w", o.mode, t.QualifiedName(), err)
	}
	for _, w := range m.warnings {
		fmt.Fprintln(stderr, "phiproxy: warning:", w)
	}
	runErr := m.run(ctx, stderr)
	m.summary(stdout)
	if runErr != nil {
		return fmt.Errorf("migrate %s %s: %w (run the same command again to resume)", o.mode, t.QualifiedName(), runErr)
	}
	if values, rows := m.stats.left(o.mode); values+rows > 0 {
		return fmt.Errorf("%w: %s: %d values left as they were, %d rows not written (see the summary)", errMigrateIncomplete, t.QualifiedName(), values, rows)
	}
	if o.mode == modeEncrypt && !o.dryRun {
		m.nextSteps(ctx, stdout)
	}
	return nil
}

// policyTable finds the policy table named "schema.table" or, when only one
// policy table has that name, "table".
func policyTable(pol *policy.Policy, name string) (*policy.Table, error) {
	if schema, table, ok := strings.Cut(name, "."); ok {
		if t := pol.Table(schema, table); t != nil {
			return t, nil
		}
	} else if ts := pol.TablesNamed(name); len(ts) == 1 {
		return ts[0], nil
	} else if len(ts) > 1 {
		return nil, fmt.Errorf("%w: table %q is ambiguous: name its schema", errUsage, name)
	}
	var names []string
	for _, t := range pol.Tables() {
		names = append(names, t.QualifiedName())
	}
	return nil, fmt.Errorf("%w: table %q is not in the policy (it has %s)", errUsage, name, strings.Join(names, ", "))
}

// migrateStats count a migration's rows and, per column, its values by
// outcome.
type migrateStats struct {
	scanned, updated, retried, skipped, gone, refused int64
	values                                            [][numOutcomes]int64 // per column
}

// left counts the values a migration leaves short of its target state,
// and the rows it could not write (changed on every attempt, or refused by
// a constraint).
func (s *migrateStats) left(mode string) (values, rows int64) {
	for _, v := range s.values {
		values += v[outInvalid] + v[outUndecryptable]
		if mode == modeReencrypt || mode == modeReindex {
			values += v[outPlaintext]
		}
	}
	return values, s.skipped + s.refused
}

// summary prints what the migration did, per column, without values.
func (m *migrator) summary(w io.Writer) {
	s := &m.stats
	el := time.Since(m.start)
	verb := "updated"
	if m.opts.dryRun {
		verb = "would update"
	}
	fmt.Fprintf(w, "migrate %s %s (database %s): %d rows read in %s (%.0f rows/s); %s %d rows",
		m.opts.mode, m.table.QualifiedName(), m.dbname, s.scanned, el.Round(100*time.Millisecond), float64(s.scanned)/max(el.Seconds(), 1e-9), verb, s.updated)
	if s.retried > 0 || s.skipped > 0 || s.gone > 0 {
		fmt.Fprintf(w, "; %d written concurrently and retried, %d still changing after %d attempts (skipped), %d deleted meanwhile", s.retried, s.skipped, m.opts.retries, s.gone)
	}
	if s.refused > 0 {
		fmt.Fprintf(w, "; %d refused by the database (%v)", s.refused, errors.Unwrap(m.refusal))
	}
	fmt.Fprintln(w)
	names := outcomeNames
	names[outChanged] = changedName(m.opts.mode)
	if m.opts.dryRun {
		names[outChanged] = "to change"
		names[outIndexed] = "index to write"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %-24s", "column")
	for _, n := range names {
		fmt.Fprintf(&b, " %14s", n)
	}
	fmt.Fprintln(w, b.String())
	for i, c := range m.cols {
		b.Reset()
		fmt.Fprintf(&b, "  %-24s", c.col.Name)
		for _, v := range s.values[i] {
			fmt.Fprintf(&b, " %14d", v)
		}
		fmt.Fprintln(w, b.String())
	}
	for i, c := range m.cols {
		v := s.values[i]
		if v[outInvalid] > 0 {
			fmt.Fprintf(w, "  %s: %d plaintext values are not valid %s input as the proxy reads it (a BC date, a day/month order that depends on DateStyle, ...): fix them, then run again; find them with\n    SELECT %s FROM %s WHERE NOT (%s);\n",
				c.col.Name, v[outInvalid], c.col.Type, m.keyList(), m.tableName(), policy.CiphertextCheck(policy.QuoteIdent(c.col.Name), c.col.Storage))
		}
		if v[outUndecryptable] > 0 {
			fmt.Fprintf(w, "  %s: %d values look like ciphertext but do not decrypt with this keyring (a retired or unknown data key, another column's ciphertext, or tampering)\n", c.col.Name, v[outUndecryptable])
		}
		if v[outPlaintext] > 0 && (m.opts.mode == modeReencrypt || m.opts.mode == modeReindex) {
			fmt.Fprintf(w, "  %s: %d values are plaintext: run phiproxy migrate encrypt first\n", c.col.Name, v[outPlaintext])
		}
	}
}

// nextSteps prints what remains after a complete encrypt: the table's
// StepProtect DDL.
func (m *migrator) nextSteps(ctx context.Context, w io.Writer) {
	live, err := readCatalog(ctx, m.conn, m.pol)
	if err != nil {
		return
	}
	var rest []policy.Problem
	for _, p := range policy.Diff(m.pol, live) {
		if p.Table == m.table.QualifiedName() {
			rest = append(rest, p)
		}
	}
	if len(rest) > 0 {
		fmt.Fprintf(w, "\nEvery value is ciphertext. Now make PostgreSQL refuse plaintext (from phiproxy schema):\n\n%s", policy.Script(rest))
	}
	if m.table.Migrating {
		fmt.Fprintf(w, "\nThen remove migrating: true from %s in policy.tables and reload the proxies (kill -HUP): equality on its blind indexes is refused until then.\n", m.table.QualifiedName())
	}
}

func (m *migrator) keyList() string {
	var ks []string
	for _, k := range m.pk {
		ks = append(ks, policy.QuoteIdent(k))
	}
	return strings.Join(ks, ", ")
}

func (m *migrator) tableName() string {
	return policy.QuoteQualified(m.table.Schema, m.table.Name)
}

// newValueCoder returns a valueCoder for a migration mode.
func newValueCoder(mode string, kr *crypto.Keyring) *valueCoder {
	return &valueCoder{mode: mode, active: kr.ActiveKeyID(), canon: phi.NewCanonicalizer()}
}
