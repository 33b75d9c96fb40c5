package integration

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// The eighth independent attack on issue 9 (branch attack8): the catalog
// epoch and the in-text checks. One test per finding.

// mkViewFunction is a function created directly on the server (the
// operator's, never seen by phiproxy) that runs DDL the session cannot
// see in its text: it makes name a view over visits.
func mkViewFunction(name string) string {
	return "CREATE FUNCTION mk_" + name + "() RETURNS int LANGUAGE plpgsql AS $f$BEGIN EXECUTE 'CREATE VIEW " + name +
		" AS SELECT id, ssn FROM vis' || 'its'; RETURN 1; END$f$"
}

func TestAttack8Probe(t *testing.T) {
	env := attackAliasEnv(t, "attack8_probe", mkViewFunction("tv"), mkViewFunction("pv"), mkViewFunction("sv"), mkViewFunction("bv"))
	ctx := context.Background()
	// Same text.
	conn := env.conn(t)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "SELECT mk_tv(); INSERT INTO tv (id, ssn) VALUES (1, 'fn-text-plain')")
	t.Logf("same text: %v; plaintext %v", err, plaintextStored(t, env, "fn-text-plain"))

	// Pipeline, extended protocol.
	c2 := env.conn(t)
	if _, err := c2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	pl := c2.PgConn().StartPipeline(ctx)
	pl.SendQueryParams("SELECT mk_pv()", nil, nil, nil, nil)
	pl.SendQueryParams("INSERT INTO pv (id, ssn) VALUES (2, $1)", [][]byte{[]byte("fn-pipe-plain")}, nil, nil, nil)
	if err := pl.Sync(); err != nil {
		t.Fatal(err)
	}
	var perr error
	for {
		r, err := pl.GetResults()
		if err != nil {
			perr = err
			break
		}
		if r == nil {
			break
		}
		if rr, ok := r.(*pgconn.ResultReader); ok {
			if _, err := rr.Close(); err != nil && perr == nil {
				perr = err
			}
		}
		if _, ok := r.(*pgconn.PipelineSync); ok {
			break
		}
	}
	pl.Close()
	t.Logf("pipeline: %v; plaintext %v", perr, plaintextStored(t, env, "fn-pipe-plain"))

	// Separate queries.
	c3 := env.conn(t)
	_, err = c3.Exec(ctx, "SELECT mk_sv()")
	t.Logf("sep1: %v", err)
	_, err = c3.Exec(ctx, "INSERT INTO sv (id, ssn) VALUES (3, 'fn-sep-plain')")
	t.Logf("separate: %v; plaintext %v", err, plaintextStored(t, env, "fn-sep-plain"))

	// Transaction block.
	c4 := env.conn(t)
	for _, sql := range []string{"BEGIN", "SELECT count(*) FROM visits", "SELECT mk_bv()", "INSERT INTO bv (id, ssn) VALUES (4, 'fn-block-plain')", "COMMIT"} {
		_, err = c4.Exec(ctx, sql)
		t.Logf("block %s: %v", sql, err)
	}
	t.Logf("block plaintext %v", plaintextStored(t, env, "fn-block-plain"))
}
