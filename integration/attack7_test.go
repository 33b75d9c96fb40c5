package integration

import (
	"context"
	"testing"
)

// The seventh independent attack on issue 9 (branch attack7): the catalog
// epoch and the in-text checks. One test per finding.

// Finding 1 (leak). The event trigger hashed the graph of second names
// with the transaction's snapshot: in a REPEATABLE READ transaction that
// snapshot is older than the catalog, and any DDL there (a COMMENT) wrote
// as the database's epoch the hash of a graph that no longer was — here
// one where view rr_v reads visits, while another connection had since
// pointed it at a decoy table. A session that read its catalog then (rr_v
// no second name) holds that epoch; when rr_v is pointed back at visits
// the hash comes out the same, the epoch does not move, and the guard
// lets an INSERT through the view store its value in plaintext.
func TestAttack7RepeatableReadStaleHash(t *testing.T) {
	env := attackAliasEnv(t, "attack7_rrhash",
		"CREATE TABLE decoy (id int PRIMARY KEY, ssn text)",
		"CREATE VIEW rr_v AS SELECT id, ssn FROM visits")
	ctx := context.Background()
	other, rr := env.direct(t), env.direct(t)
	if _, err := rr.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ"); err != nil {
		t.Fatal(err)
	}
	if _, err := rr.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW rr_v AS SELECT id, ssn FROM decoy"); err != nil {
		t.Fatal(err)
	}
	// DDL in the old snapshot is the session's own: it runs, and writes
	// an epoch no graph hashes to.
	for _, sql := range []string{"COMMENT ON TABLE decoy IS 'decoy'", "COMMIT"} {
		if _, err := rr.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM visits"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "CREATE OR REPLACE VIEW rr_v AS SELECT id, ssn FROM visits"); err != nil {
		t.Fatal(err)
	}
	const value = "rr-stale-hash-not-stored"
	_, err := conn.Exec(ctx, "INSERT INTO rr_v (id, ssn) VALUES (1, '"+value+"')")
	if err == nil {
		if _, cerr := conn.Exec(ctx, "COMMIT"); cerr != nil {
			t.Fatal(cerr)
		}
	}
	if plaintextStored(t, env, value) {
		t.Fatal("plaintext stored through the view")
	}
	refusedWith(t, err, "55000")
}
