package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/novamind/phiproxy/internal/pgcluster"
	"github.com/novamind/phiproxy/policy"
)

// runbookBlocks returns the shell blocks of README.md marked
// "<!-- runbook:NAME -->", dedented, by name.
func runbookBlocks(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	name, in, indent := "", false, ""
	var b strings.Builder
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "<!-- runbook:"):
			name = strings.TrimSuffix(strings.TrimPrefix(trimmed, "<!-- runbook:"), " -->")
		case name != "" && !in && trimmed == "```sh":
			in, indent = true, line[:len(line)-len(strings.TrimLeft(line, " "))]
			b.Reset()
		case in && trimmed == "```":
			blocks[name], in, name = b.String(), false, ""
		case in:
			b.WriteString(strings.TrimPrefix(line, indent) + "\n")
		}
	}
	return blocks
}

// runbook runs the README's block name with bash (set -e) in the
// environment's directory, with phiproxy on PATH and the libpq variables
// of an operator: the owner of the tables, and a password file that also
// holds the superuser's password.
func (e *opsEnv) runbook(t *testing.T, blocks map[string]string, name string) string {
	t.Helper()
	script, ok := blocks[name]
	if !ok {
		t.Fatalf("README.md has no runbook:%s block", name)
	}
	passfile := filepath.Join(e.dir, "pgpass")
	port := strconv.Itoa(cluster.Port())
	os.WriteFile(passfile, []byte(fmt.Sprintf("127.0.0.1:%s:*:%s:%s\n127.0.0.1:%s:*:%s:%s\n", port,
		pgcluster.ScramUser.Name, pgcluster.ScramUser.Password, port, pgcluster.Superuser.Name, pgcluster.Superuser.Password)), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = e.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "PHIPROXY_") && !strings.HasPrefix(kv, "PATH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PATH="+filepath.Dir(phiproxyBinary(t))+":"+os.Getenv("PATH"),
		"PGHOST=127.0.0.1", "PGPORT="+port, "PGDATABASE="+e.db, "PGUSER="+pgcluster.ScramUser.Name,
		"PGPASSFILE="+passfile, "PGSSLMODE=verify-full", "PGSSLROOTCERT="+cluster.CAFile(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("runbook:%s: %v\n--- script\n%s--- output\n%s", name, err, script, out)
	}
	return string(out)
}

// TestRunbook runs the README's runbook as written: adopting phiproxy on
// a plaintext table while writers go through the proxy, removing the
// plaintext residue, rotating and retiring a data key, rotating the
// blind-index key and restoring a backup.
func TestRunbook(t *testing.T) {
	blocks := runbookBlocks(t)
	e := newOpsEnv(t, "ops_runbook", loadPolicy)
	os.Remove(e.keyring)
	os.Remove(filepath.Join(e.dir, "master.key"))
	cfg, _ := os.ReadFile(e.config)
	e.config = filepath.Join(e.dir, "phiproxy.yaml")
	os.WriteFile(e.config, cfg, 0o600)
	const rows = 20000
	createLoadTable(t, e, rows)

	e.runbook(t, blocks, "adopt-prepare")
	e.runbook(t, blocks, "adopt-flag")
	if e.policy = e.configPolicy(t); !e.policy.Table("public", "patients").Migrating {
		t.Fatal("runbook:adopt-flag did not mark public.patients migrating")
	}
	p := e.startProxy(t)
	lw := startWriters(t, p, e.db, rows, 2)
	rd := startPKReaders(t, p, e.db, rows)
	out := e.runbook(t, blocks, "adopt-migrate")
	if !strings.Contains(out, fmt.Sprintf("would update %d rows", rows)) && !strings.Contains(out, "would update") {
		t.Errorf("dry run: %s", out)
	}
	if !strings.Contains(out, "remove migrating: true") {
		t.Errorf("migrate encrypt does not say to remove the flag: %s", out)
	}
	rd.stop(t)
	lw.stop()
	checkAllEncrypted(t, e)
	out = e.runbook(t, blocks, "adopt-protect")
	if !strings.Contains(out, "nothing missing") || !strings.Contains(out, "configuration OK") {
		t.Errorf("adopt-protect: %s", out)
	}
	// The reload: proxies without the flag serve equality again.
	if e.policy = e.configPolicy(t); e.policy.Table("public", "patients").Migrating {
		t.Fatal("runbook:adopt-protect left public.patients migrating")
	}
	p = e.startProxy(t)
	checkReadBack(t, e, p, lw)

	// The residue: after VACUUM FULL and a checkpoint the table's files
	// hold no seed plaintext.
	plain := []string{seedPatient(1)[0], seedPatient(rows / 2)[3], seedPatient(rows - 1)[1]}
	files := tableFiles(t, e)
	t.Logf("before VACUUM FULL, seed plaintext in the table's files: %d of %d values", countIn(files, plain), len(plain))
	e.runbook(t, blocks, "adopt-residue")
	if n := countIn(tableFiles(t, e), plain); n != 0 {
		t.Errorf("after the runbook's VACUUM FULL and CHECKPOINT, %d seed plaintext values are still in the table's files", n)
	}

	// Rotation: every value moves to key 2; usage shows key 1 unused.
	out = e.runbook(t, blocks, "rotate")
	if !regexp.MustCompile(`(?m)^  total\s+0\s+\d+\s+0\s+0$`).MatchString(out) {
		t.Fatalf("keys usage after reencrypt does not show key 1 unused:\n%s", out)
	}
	e.runbook(t, blocks, "retire")
	if _, err := os.Stat(filepath.Join(e.dir, "keyring.json.before-retire-1")); err != nil {
		t.Errorf("the keyring copy: %v", err)
	}
	e.runbook(t, blocks, "rotate-index")
	p = e.startProxy(t) // the proxies restarted with the new keys
	checkReadBack(t, e, p, lw)

	// Restore: the dump holds ciphertext; the current keyring reads it.
	out = e.runbook(t, blocks, "restore")
	if !strings.Contains(out, "database restored: every policy table is ready") || !strings.Contains(out, "configuration OK") {
		t.Errorf("restore: %s", out)
	}
	// A database restored under another name is governed once
	// policy.databases lists it.
	e.policy = e.configPolicy(t, "restored")
	p = e.startProxy(t)
	restored := connect(t, p.dsn(pgcluster.ScramUser, "restored"))
	email := seedPatient(3)[3]
	if w := lw.want[3]; w != nil {
		email = w[3]
	}
	var id int64
	if err := restored.QueryRow(context.Background(), "SELECT id FROM patients WHERE lower(email) = lower($1)", strings.ToUpper(email)).Scan(&id); err != nil || id != 3 {
		t.Errorf("lookup in the restored database: id %d, %v", id, err)
	}
	su := connect(t, cluster.SuperuserDSN("postgres"))
	if _, err := su.Exec(context.Background(), "DROP DATABASE restored WITH (FORCE)"); err != nil {
		t.Log(err)
	}
}

// configPolicy reads the policy of e's configuration file as it is now,
// governing the databases more too.
func (e *opsEnv) configPolicy(t *testing.T, more ...string) *policy.Policy {
	t.Helper()
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range more {
		data = bytes.Replace(data, []byte("databases: ["+e.db+"]"), []byte("databases: ["+e.db+", "+db+"]"), 1)
	}
	var doc struct {
		Policy yaml.Node `yaml:"policy"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Load(&doc.Policy)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// pkReaders read patients by primary key through a proxy while a table
// is migrated: with migrating: true no read fails, plaintext or not, and
// equality on a blind-indexed column is refused.
type pkReaders struct {
	stopping atomic.Bool
	done     chan struct{}
	reads    int
	err      error
}

func startPKReaders(t *testing.T, p *testProxy, db string, n int) *pkReaders {
	conn := connect(t, p.dsn(pgcluster.ScramUser, db))
	rd := &pkReaders{done: make(chan struct{})}
	go func() {
		defer close(rd.done)
		ctx := context.Background()
		for id := 1; !rd.stopping.Load(); id = id*7919%n + 1 {
			rows, err := conn.Query(ctx, "SELECT id, "+strings.Join(loadColumns, ", ")+" FROM patients WHERE id = $1", id)
			if err == nil {
				for rows.Next() {
				}
				rows.Close()
				err = rows.Err()
			}
			if err != nil {
				rd.err = fmt.Errorf("read patient %d during the migration: %w", id, err)
				return
			}
			rd.reads++
			time.Sleep(2 * time.Millisecond)
		}
		_, err := conn.Exec(ctx, "SELECT id FROM patients WHERE email = $1", "x@example.org")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "0A000" {
			rd.err = fmt.Errorf("equality during the migration: %v, want 0A000", err)
		}
	}()
	return rd
}

func (rd *pkReaders) stop(t *testing.T) {
	t.Helper()
	rd.stopping.Store(true)
	<-rd.done
	t.Logf("%d reads by primary key during the migration", rd.reads)
	if rd.err != nil {
		t.Error(rd.err)
	}
	if rd.reads == 0 {
		t.Error("no read during the migration")
	}
}

// tableFiles returns the contents of the patients table's files (heap,
// TOAST, indexes) after a checkpoint.
func tableFiles(t *testing.T, e *opsEnv) []byte {
	t.Helper()
	ctx := context.Background()
	su := connect(t, cluster.SuperuserDSN(e.db))
	if _, err := su.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	rows := readAll(t, su, `SELECT pg_relation_filepath(c.oid) FROM pg_class c
		WHERE c.oid = 'patients'::regclass OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'patients'::regclass)
		   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'patients'::regclass)`)
	var all []byte
	for _, r := range rows {
		if r[0] == "NULL" {
			continue
		}
		matches, _ := filepath.Glob(filepath.Join(cluster.DataDir(), r[0]) + "*")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, b...)
		}
	}
	return all
}

func countIn(data []byte, vals []string) int {
	n := 0
	for _, v := range vals {
		if bytes.Contains(data, []byte(v)) {
			n++
		}
	}
	return n
}
