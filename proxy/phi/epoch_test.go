package phi

import (
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestGuardsText: what a passed-through statement in a database with
// policy tables goes without the catalog guard for, read from its
// grammar, not from words anywhere in it (attack5, findings 1 and 2).
func TestGuardsText(t *testing.T) {
	for _, c := range []struct {
		sql          string
		guard, first bool
	}{
		{sql: "SELECT 1", guard: true},
		{sql: "(SELECT id FROM v WHERE ssn = 'x')", guard: true},
		{sql: " /* c */ (TABLE v)", guard: true},
		{sql: "((VALUES (1)))", guard: true},
		{sql: "", guard: false},
		{sql: " ; ", guard: false},
		{sql: "/* nothing */ ;", guard: false},
		{sql: "-- nothing", guard: false},
		{sql: "/* unterminated", guard: true},
		{sql: "BEGIN", guard: false},
		{sql: "set search_path = x", guard: false},
		{sql: "VACUUM visits", guard: false},
		{sql: "BEGIN; INSERT INTO v VALUES (1)", guard: true},
		{sql: "CREATE TABLE t AS SELECT id FROM v WHERE ssn = 'x' -- database", guard: true},
		{sql: "CREATE TABLE t AS SELECT id AS system FROM v WHERE ssn = 'x'", guard: true},
		{sql: "ALTER TABLE kid ADD CHECK (ssn <> 'x') /* tablespace */", guard: true},
		{sql: "ALTER TABLE kid SET TABLESPACE t2", guard: true},
		{sql: "CREATE MATERIALIZED VIEW m AS SELECT 'concurrently'", guard: true},
		{sql: "CREATE INDEX ix ON kid (id) WHERE ssn = 'concurrently'", guard: true},
		{sql: "CREATE INDEX CONCURRENTLY ix ON kid (id) WHERE ssn = 'x'", guard: false, first: true},
		{sql: "create /* c */ unique index\nconcurrently ix ON kid (id)", guard: false, first: true},
		{sql: "DROP INDEX CONCURRENTLY ix", guard: false},
		{sql: "CREATE DATABASE d", guard: false},
		{sql: "DROP DATABASE d", guard: false},
		{sql: "ALTER SYSTEM SET work_mem = '1MB'", guard: false},
		{sql: "CREATE TABLESPACE t LOCATION '/x'", guard: false},
		{sql: "DROP SUBSCRIPTION s", guard: false},
		{sql: "COPY kid FROM STDIN", guard: true, first: true},
		{sql: " -- c\n copy kid TO STDOUT", guard: true, first: true},
	} {
		if got := guardsText(c.sql); got != c.guard {
			t.Errorf("guardsText(%q) = %v, want %v", c.sql, got, c.guard)
		}
		if got := readsCatalogFirst(c.sql); got != c.first {
			t.Errorf("readsCatalogFirst(%q) = %v, want %v", c.sql, got, c.first)
		}
	}
}

// epochRow is the catalog query's epoch row as the server returns it.
func epochRow(prosrc, installed string) [][]byte {
	r := make([][]byte, catalogWidth)
	for i := range r {
		r[i] = []byte{}
	}
	r[0], r[1], r[2] = []byte(rowEpoch), []byte(prosrc), []byte(installed)
	return r
}

func TestCatalogEpoch(t *testing.T) {
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	col := [][]byte{[]byte("7"), []byte("public"), []byte("patients"), []byte("1"), []byte("email"), []byte("25")}
	for _, c := range []struct {
		name              string
		rows              [][][]byte
		ok, guards, probs bool
	}{
		{"installed", [][][]byte{col, epochRow("SELECT 'ab12'::text", "true")}, true, true, false},
		{"first epoch", [][][]byte{col, epochRow("SELECT ''::text", "true")}, true, true, false},
		{"triggers missing", [][][]byte{col, epochRow("SELECT 'ab12'::text", "false")}, false, true, true},
		{"function edited", [][][]byte{col, epochRow("SELECT 'ab12'::text || ''", "true")}, false, true, true},
		{"no policy table yet: guarded, not refused", [][][]byte{epochRow("", "false")}, false, true, false},
		{"no epoch row (tests' catalogs)", [][][]byte{col}, false, false, false},
	} {
		cat, err := buildCatalog(pol, c.rows)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		probs := false
		for _, p := range cat.allProblems(pol) {
			probs = probs || p.Kind == ProblemEpoch
		}
		if cat.epochOK != c.ok || cat.epochGuards() != c.guards || probs != c.probs {
			t.Errorf("%s: epochOK %v guards %v epoch problem %v, want %v %v %v", c.name, cat.epochOK, cat.epochGuards(), probs, c.ok, c.guards, c.probs)
		}
		g := guardQuery(pol, cat)
		if has := strings.Contains(g, policy.EpochFunction); has != c.ok {
			t.Errorf("%s: guard %q compares the epoch: %v, want %v", c.name, g, has, c.ok)
		}
		if c.ok && !strings.Contains(g, "'"+cat.epoch+"'") {
			t.Errorf("%s: guard %q lacks the epoch %q", c.name, g, cat.epoch)
		}
	}
}
