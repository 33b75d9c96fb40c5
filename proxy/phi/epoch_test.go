package phi

import (
	"strings"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

func TestGuardsText(t *testing.T) {
	for _, c := range []struct {
		sql   string
		guard bool
	}{
		{"SELECT * FROM v WHERE ssn = '1'", true},
		{"INSERT INTO child VALUES ($1)", true},
		{"WITH x AS (SELECT 1) SELECT * FROM x", true},
		{"EXECUTE s('x')", true},
		{"PREPARE s AS INSERT INTO v VALUES ($1)", true},
		{"DECLARE c CURSOR FOR SELECT * FROM v", true},
		{"CALL p('x')", true},
		{"DO $$ BEGIN END $$", true},
		{"ALTER TABLE child ALTER COLUMN ssn SET DEFAULT 'x'", true},
		{"CREATE INDEX ON child (ssn) WHERE ssn = 'x'", true},
		{"BEGIN; INSERT INTO v VALUES ('x')", true}, // two statements
		{"/* c */ BEGIN", false},
		{"begin isolation level repeatable read", false},
		{"COMMIT;", false},
		{"SET application_name = 'x'", false},
		{"SHOW TimeZone", false},
		{"DISCARD ALL", false},
		{"VACUUM patients", false},
		{"CREATE INDEX CONCURRENTLY ix ON t (a)", false},
		{"DROP DATABASE x", false},
		{"ALTER SYSTEM SET work_mem = '4MB'", false},
		{"", false},
	} {
		if got := guardsText(c.sql); got != c.guard {
			t.Errorf("guardsText(%q) = %v, want %v", c.sql, got, c.guard)
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
		{"no policy table", [][][]byte{epochRow("", "false")}, false, false, false},
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
