package phi

import "testing"

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
