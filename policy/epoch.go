package policy

import (
	"crypto/md5"
	"encoding/hex"
	"strings"
)

// The catalog epoch: how every phiproxy session learns, before it relies on
// what it read of a database's catalog, that another connection changed
// what could give a table a second name (a view, rule, inheritance child or
// parent, partition, foreign table, trigger with transition tables, object
// built on a row type, subscription). Without it a session that read the
// catalog before someone created `CREATE VIEW v AS SELECT * FROM patients`
// directly on the server would pass `INSERT INTO v …` through as a
// statement on a table it does not govern, plaintext and all.
//
// Two event triggers, installed by the DDL of EpochDDL (printed by
// `phiproxy schema`), run after every DDL command and every drop, in every
// session of the database: they hash the database's graph of second names
// (epochGraphSQL) and, when the hash changed, replace the body of
// phiproxy.catalog_epoch() with the new one. The function is IMMUTABLE and
// its body a constant, so a prepared statement that calls it is planned to
// a constant: phiproxy's catalog guard (proxy/phi/guard.go) compares it with
// the epoch the session read, and PostgreSQL itself invalidates the guard's
// cached plan when the function is replaced (through the system caches,
// not the transaction's snapshot: REPEATABLE READ sessions see it too).
// DDL that changes no second name (CREATE INDEX, ALTER TABLE … ADD COLUMN,
// GRANT) leaves the epoch as it was, and so costs sessions nothing.
//
// The hash covers second names of every relation, not only the policy's
// tables: the triggers do not depend on the policy, so one installation
// serves every phiproxy version and policy in a rolling deployment.

// EpochFunction is the function whose body is the epoch, as the guard
// calls it.
const EpochFunction = `"phiproxy"."catalog_epoch"()`

// epochGraphSQL is the hash of the database's second names: every edge of
// the graph the catalog query follows (reachSQL and aliasSQL in
// proxy/phi/catalog_alias.go), with the OIDs and names of both ends, so that
// creating, dropping or renaming any of them changes it, and so does
// replacing a view's or rule's definition (its action): CREATE OR REPLACE
// VIEW that maps a view's columns to other columns of the same tables
// keeps every edge. Run with
// search_path = pg_catalog, pg_temp, names come out schema-qualified.
// Every relation and type it names is qualified: the trigger runs in the
// session that ran the DDL, and an unqualified name would be looked up in
// that session's temporary schema first (the temporary schema precedes
// pg_catalog unless listed after it, for relations and types), where a
// table named pg_depend of its own would hide the real graph.
const epochGraphSQL = `SELECT pg_catalog.md5(coalesce(pg_catalog.string_agg(x, E'\n' ORDER BY x), '')) FROM (
    SELECT 'rewrite ' || r.oid || ' ' || r.rulename || ' on ' || r.ev_class || ' ' || r.ev_class::pg_catalog.regclass || ' reads ' || d.refobjid || ' ' || d.refobjid::pg_catalog.regclass AS x
      FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
    UNION SELECT 'rule ' || r.oid || ' ' || r.rulename || ' on ' || r.ev_class || ' ' || r.ev_class::pg_catalog.regclass || ' ' || pg_catalog.md5(r.ev_action::pg_catalog.text)
      FROM pg_catalog.pg_rewrite r
    UNION SELECT 'inherits ' || i.inhrelid || ' ' || i.inhrelid::pg_catalog.regclass || ' ' || i.inhparent || ' ' || i.inhparent::pg_catalog.regclass
      FROM pg_catalog.pg_inherits i
    UNION SELECT 'foreign ' || ft.ftrelid || ' ' || ft.ftrelid::pg_catalog.regclass || ' ' || coalesce(ft.ftoptions::pg_catalog.text, '')
      FROM pg_catalog.pg_foreign_table ft
    UNION SELECT 'trigger ' || tg.oid || ' ' || tg.tgname || ' on ' || tg.tgrelid || ' ' || tg.tgrelid::pg_catalog.regclass
      FROM pg_catalog.pg_trigger tg WHERE tg.tgoldtable IS NOT NULL OR tg.tgnewtable IS NOT NULL
    UNION SELECT 'rowtype ' || d.classid || ' ' || d.objid || ' ' || d.objsubid || ' ' || pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) || ' uses ' || d.refobjid
      FROM pg_catalog.pg_depend d
     WHERE d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.deptype = 'n'
       AND d.refobjid IN (SELECT c.reltype FROM pg_catalog.pg_class c WHERE c.reltype <> 0
                          UNION SELECT t.typarray FROM pg_catalog.pg_class c JOIN pg_catalog.pg_type t ON t.oid = c.reltype WHERE t.typarray <> 0)
    UNION SELECT 'subscription ' || sr.srsubid || ' ' || sr.srrelid || ' ' || sr.srrelid::pg_catalog.regclass
      FROM pg_catalog.pg_subscription_rel sr
  ) g`

// epochTriggerBody is the body of phiproxy.catalog_changed(). Replacing
// phiproxy.catalog_epoch() is DDL too and runs the trigger once more, which
// then finds the hash unchanged.
//
// Each change is also noted, with the session that made it, in the table
// phiproxy.epoch_own, which only the trigger's owner may write (a row goes
// with the transaction that made it; a session's rows from a process of
// the same PID before it are removed): phiproxy.catalog_check accepts an
// epoch that the session's own DDL alone moved on from the one it read, so
// that a text of several statements can check the catalog in front of
// each of them and still hold DDL of its own. DDL that changes the epoch
// is rare (it makes or drops second names), so is the write. The row,
// written before the function is replaced, holds the hash the new epoch
// was made from (graph): the trigger's run for that replacement finds it
// and changes nothing. Rows are numbered in the order written (one writer
// at a time, below) without a sequence: a sequence's nextval() would be
// the session's lastval(), which the client would then be refused.
//
// The writers of the epoch go one at a time (a lock on epochOwnTable,
// which only they take, held to the end of their transactions), each
// reading the epoch and the graph again once it is its turn: a writer
// that replaced the function while another's replacement was not yet
// committed would wait for it and then fail ("tuple concurrently
// updated"), refusing DDL that PostgreSQL runs.
//
// A transaction that took that lock cannot be prepared for two-phase
// commit: the trigger runs NOTIFY, which PREPARE TRANSACTION refuses
// (0A000). Prepared, it would hold the lock (and the epoch function's
// row) until COMMIT PREPARED or ROLLBACK PREPARED, which may never come:
// every other DDL that changes second names would wait for it, and the
// session's own next such DDL would wait for its own prepared
// transaction for ever. DDL that changes no second name takes no lock
// and prepares as before.
//
// The graph is read with the transaction's snapshot, which in a
// REPEATABLE READ or SERIALIZABLE transaction may predate catalog changes
// other connections committed since (o, read through the system caches,
// is the latest epoch; the snapshot's own pg_proc row of the function
// then says another): its hash is of a graph that may no longer be, and
// written as the epoch, it would be the hash the graph comes back to
// later (a view pointed elsewhere and back), which no session would
// notice. Then the epoch written is one no graph hashes to (the snapshot
// holds no version of the function's row with the latest epoch; it may
// hold two, the one it predates and the session's own): every session
// reads its catalog again, and the next DDL that changes a second name
// writes the true hash.
const epochTriggerBody = `
DECLARE
  h pg_catalog.text;
  ne pg_catalog.text;
  o pg_catalog.text := ` + EpochFunction + `;
  me pg_catalog.timestamptz := (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid());
BEGIN
  ` + epochGraphSQL + ` INTO h;
  IF h IS DISTINCT FROM o THEN
    LOCK TABLE ` + epochOwnTable + ` IN SHARE ROW EXCLUSIVE MODE;
    -- PREPARE TRANSACTION refuses a transaction that ran NOTIFY.
    PERFORM pg_catalog.pg_notify('phiproxy_catalog_epoch', '');
    o := ` + EpochFunction + `;
    ` + epochGraphSQL + ` INTO h;
  END IF;
  IF h IS DISTINCT FROM o AND NOT EXISTS (SELECT FROM ` + epochOwnTable + ` w WHERE w.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
       AND w.started IS NOT DISTINCT FROM me AND w.new OPERATOR(pg_catalog.=) o AND w.graph OPERATOR(pg_catalog.=) h) THEN
    ne := h;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.oid OPERATOR(pg_catalog.=) '` + EpochFunction + `'::pg_catalog.regprocedure
                    AND p.prosrc OPERATOR(pg_catalog.=) pg_catalog.format('SELECT %L::text', o)) THEN
      ne := pg_catalog.md5(h OPERATOR(pg_catalog.||) ' stale ' OPERATOR(pg_catalog.||) pg_catalog.gen_random_uuid()::pg_catalog.text);
    END IF;
    -- Rows of an earlier process with this PID, and all but the latest
    -- thousand (a check that walks back further fails closed).
    DELETE FROM ` + epochOwnTable + ` WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() AND started IS DISTINCT FROM me
       OR n OPERATOR(pg_catalog.<) ((SELECT pg_catalog.max(w.n) FROM ` + epochOwnTable + ` w) OPERATOR(pg_catalog.-) 1000);
    INSERT INTO ` + epochOwnTable + ` (n, pid, started, old, new, graph)
      VALUES ((SELECT coalesce(pg_catalog.max(w.n), 0) OPERATOR(pg_catalog.+) 1 FROM ` + epochOwnTable + ` w), pg_catalog.pg_backend_pid(), me, o, ne, h);
    EXECUTE pg_catalog.format('CREATE OR REPLACE FUNCTION ` + EpochFunction + ` RETURNS pg_catalog.text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
                   pg_catalog.format('SELECT %L::text', ne));
  END IF;
END
`

// epochOwnTable is where sessions' own epoch changes are noted.
const epochOwnTable = `"phiproxy"."epoch_own"`

// catalogCheckBody is the body of phiproxy.catalog_check(epoch, tables,
// oids, names): it fails with SQLSTATE PXCAT (CheckFailed) unless each of
// tables (schema-qualified, quoted names) is still the relation of the OID
// at the same place (NULL: still missing) and the epoch is the one given
// or one that the session's own DDL moved on from it (epochOwnTable),
// leaving the second names of the relations of oids as names says
// (SecondNamesSQL, read with the session's catalog): the
// latest epoch writes of all, walked back from the current epoch, are
// the session's own and chain back to it. (A chain through older steps
// of the session's would accept another connection's change back to a
// graph the session once made: a view pointed elsewhere and back.) It
// takes in other sessions' catalog changes first (catalog_sync), which
// also invalidates its cached plan of the epoch when the function was
// replaced. The proxy puts it in front of each statement of a simple
// Query after the first, where the guard (prepared, in front of the
// text) cannot reach: the server looks up a statement's names only once
// the statements before it ran.
const catalogCheckBody = `
DECLARE
  e pg_catalog.text;
  cur pg_catalog.text := epoch;
  step record;
BEGIN
  PERFORM "phiproxy"."catalog_sync"();
  FOR i IN 1 .. coalesce(pg_catalog.array_length(tables, 1), 0) LOOP
    IF pg_catalog.to_regclass(tables[i])::pg_catalog.oid IS DISTINCT FROM oids[i] THEN
      RAISE SQLSTATE 'PXCAT' USING MESSAGE = 'phiproxy: a PHI table changed';
    END IF;
  END LOOP;
  e := ` + EpochFunction + `;
  IF e IS DISTINCT FROM epoch THEN
    cur := e;
    FOR step IN SELECT w.old, w.new, w.pid = pg_catalog.pg_backend_pid()
                       AND w.started IS NOT DISTINCT FROM (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()) AS mine
                  FROM ` + epochOwnTable + ` w ORDER BY w.n DESC LOOP
      EXIT WHEN NOT step.mine OR step.new IS DISTINCT FROM cur;
      cur := step.old;
      EXIT WHEN cur = epoch;
    END LOOP;
    IF cur IS DISTINCT FROM epoch THEN
      RAISE SQLSTATE 'PXCAT' USING MESSAGE = 'phiproxy: second names changed';
    END IF;
    -- The session's own DDL moved the epoch on: it may still have made
    -- a second name of a policy table, run by a function whose body
    -- phiproxy never saw (epoch_names.go).
    IF ` + secondNamesHead + `oids` + secondNamesTail + ` IS DISTINCT FROM names THEN
      RAISE SQLSTATE 'PXCAT' USING MESSAGE = 'phiproxy: second names of a PHI table changed';
    END IF;
  END IF;
  RETURN true;
END
`

// CheckFailed is the SQLSTATE of phiproxy.catalog_check failing.
const CheckFailed = "PXCAT"

// CheckFunction is phiproxy.catalog_check as the proxy calls it.
const CheckFunction = `"phiproxy"."catalog_check"`

// catalogSyncBody is the body of phiproxy.catalog_sync(), which makes the
// session take in the catalog changes other sessions committed. PostgreSQL
// does at the start of each transaction, and inside one only when it takes
// a lock it did not hold: here, one on phiproxy.catalog_lock, released at
// once with the subtransaction that took it, so that every call takes it
// anew. The guard runs it first inside a transaction block, where its own
// cached plan would otherwise stay as it was at the block's start.
const catalogSyncBody = `
BEGIN
  BEGIN
    LOCK TABLE "phiproxy"."catalog_lock" IN ACCESS SHARE MODE;
    RAISE SQLSTATE 'PXSYN';
  EXCEPTION WHEN SQLSTATE 'PXSYN' THEN
    NULL;
  END;
  RETURN true;
END
`

// EpochTriggerSourceMD5 is the md5 of the trigger function's source as
// pg_proc.prosrc holds it: the catalog query compares it, so that a
// function edited by hand, or installed by another phiproxy version with
// another graph, counts as not installed.
var EpochTriggerSourceMD5 = func() string {
	sum := md5.Sum([]byte(epochTriggerBody))
	return hex.EncodeToString(sum[:])
}()

// checkSourceMD5 is the md5 of catalog_check's source: one of another
// version counts as not installed.
var checkSourceMD5 = func() string {
	sum := md5.Sum([]byte(catalogCheckBody))
	return hex.EncodeToString(sum[:])
}()

// EpochDDL returns the statements that install the catalog epoch in a
// database: run them once per governed database, as a superuser (event
// triggers need one; on Amazon RDS, rds_superuser). They are idempotent.
// ENABLE ALWAYS keeps the triggers firing under session_replication_role =
// replica.
//
// They run in one transaction, so that no session sees the database
// between them (the triggers dropped, the epoch not yet replaced: a
// second name made then would go unseen by sessions holding the old
// epoch), under SET LOCAL search_path = pg_catalog, pg_temp: the
// superuser's session takes the database's and its role's search_path,
// which the database's owner may set to put a schema of theirs first,
// where a type named text (a domain whose CHECK calls their function)
// would become the type of epoch_own's columns, checked with the
// trigger's owner's rights.
func EpochDDL() []string {
	return []string{
		`BEGIN;`,
		`SET LOCAL search_path = pg_catalog, pg_temp;`,
		// The triggers of an earlier installation run no more while the
		// objects change. The schema and its objects may have been made
		// before by someone else (CREATE OR REPLACE keeps a function's
		// owner, who could then change it): they become the installer's.
		`DROP EVENT TRIGGER IF EXISTS "phiproxy_catalog_ddl";`,
		`DROP EVENT TRIGGER IF EXISTS "phiproxy_catalog_drop";`,
		`CREATE SCHEMA IF NOT EXISTS "phiproxy";`,
		`ALTER SCHEMA "phiproxy" OWNER TO CURRENT_USER;`,
		`GRANT USAGE ON SCHEMA "phiproxy" TO PUBLIC;`,
		`CREATE OR REPLACE FUNCTION ` + EpochFunction + ` RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$SELECT ''::text$$;`,
		`ALTER FUNCTION ` + EpochFunction + ` OWNER TO CURRENT_USER;`,
		// Rows of an earlier installation (or a table made by someone
		// else, with grants of theirs) go: a session's own changes are
		// noted only by the trigger.
		`DROP TABLE IF EXISTS ` + epochOwnTable + `;`,
		`CREATE TABLE ` + epochOwnTable + ` (n bigint NOT NULL, pid integer NOT NULL, started timestamptz, old text NOT NULL, new text NOT NULL, graph text);`,
		`REVOKE ALL ON ` + epochOwnTable + ` FROM PUBLIC;`,
		`GRANT SELECT ON ` + epochOwnTable + ` TO PUBLIC;`,
		`CREATE OR REPLACE FUNCTION "phiproxy"."catalog_changed"() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $phiproxy$` + epochTriggerBody + `$phiproxy$;`,
		`ALTER FUNCTION "phiproxy"."catalog_changed"() OWNER TO CURRENT_USER;`,
		`REVOKE ALL ON FUNCTION "phiproxy"."catalog_changed"() FROM PUBLIC;`,
		`CREATE TABLE IF NOT EXISTS "phiproxy"."catalog_lock" ();`,
		`GRANT SELECT ON "phiproxy"."catalog_lock" TO PUBLIC;`,
		`CREATE OR REPLACE FUNCTION "phiproxy"."catalog_sync"() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $phiproxy$` + catalogSyncBody + `$phiproxy$;`,
		`ALTER FUNCTION "phiproxy"."catalog_sync"() OWNER TO CURRENT_USER;`,
		// An earlier version's check, without the second names.
		`DROP FUNCTION IF EXISTS ` + CheckFunction + `(pg_catalog.text, pg_catalog.text[], pg_catalog.oid[]);`,
		`CREATE OR REPLACE FUNCTION ` + CheckFunction + `(epoch pg_catalog.text, tables pg_catalog.text[], oids pg_catalog.oid[], names pg_catalog.text) RETURNS boolean LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $phiproxy$` + catalogCheckBody + `$phiproxy$;`,
		`ALTER FUNCTION ` + CheckFunction + `(pg_catalog.text, pg_catalog.text[], pg_catalog.oid[], pg_catalog.text) OWNER TO CURRENT_USER;`,
		`CREATE EVENT TRIGGER "phiproxy_catalog_ddl" ON ddl_command_end EXECUTE FUNCTION "phiproxy"."catalog_changed"();`,
		`ALTER EVENT TRIGGER "phiproxy_catalog_ddl" ENABLE ALWAYS;`,
		`CREATE EVENT TRIGGER "phiproxy_catalog_drop" ON sql_drop EXECUTE FUNCTION "phiproxy"."catalog_changed"();`,
		`ALTER EVENT TRIGGER "phiproxy_catalog_drop" ENABLE ALWAYS;`,
		// DDL that runs the triggers once, for a first epoch (CREATE EVENT
		// TRIGGER runs none).
		`COMMENT ON SCHEMA "phiproxy" IS 'phiproxy: catalog epoch (see phiproxy schema)';`,
		`COMMIT;`,
	}
}

// EpochStateSQL is two text columns of the catalog query: the epoch (the
// body of phiproxy.catalog_epoch(), or ” when the function is missing),
// and whether both event triggers are installed, enabled always, for every
// command tag, with this version's function and its search_path ('true'
// or 'false'), the schema and its functions owned by the triggers' owner
// (a superuser): whoever else owned one could change it (set the trigger
// function's search_path to a schema with an = operator of its own that
// keeps the epoch as it was, or replace catalog_epoch()). It reads pg_proc
// and pg_event_trigger with the statement's snapshot, like the rest of the
// catalog query it is part of.
var EpochStateSQL = `coalesce((SELECT p.prosrc FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace` +
	` WHERE n.nspname = 'phiproxy' AND p.proname = 'catalog_epoch' AND p.pronargs = 0 AND p.prorettype = 'pg_catalog.text'::pg_catalog.regtype), '')::pg_catalog.text,` +
	` ((SELECT pg_catalog.count(*) FROM pg_catalog.pg_event_trigger e JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace` +
	` WHERE (e.evtname, e.evtevent) IN (('phiproxy_catalog_ddl', 'ddl_command_end'), ('phiproxy_catalog_drop', 'sql_drop'))` +
	` AND e.evtenabled = 'A' AND e.evttags IS NULL AND n.nspname = 'phiproxy' AND p.proname = 'catalog_changed' AND p.prosecdef` +
	` AND pg_catalog.md5(p.prosrc) = '` + EpochTriggerSourceMD5 + `'` +
	` AND p.proconfig OPERATOR(pg_catalog.=) ARRAY['search_path=pg_catalog, pg_temp']::pg_catalog.text[]` +
	` AND p.proowner = e.evtowner AND n.nspowner = e.evtowner` +
	` AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'epoch_own' AND c.relowner = e.evtowner` +
	` AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) x` +
	` WHERE x.grantee <> c.relowner AND x.privilege_type <> 'SELECT'))` +
	` AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc q WHERE q.pronamespace = n.oid` +
	` AND (q.pronargs = 0 AND q.proname IN ('catalog_epoch', 'catalog_sync') OR q.pronargs = 4 AND q.proname = 'catalog_check' AND pg_catalog.md5(q.prosrc) = '` + checkSourceMD5 + `')` +
	` AND q.proowner = e.evtowner) = 3) = 2)::pg_catalog.text`

// ParseEpoch returns the epoch in the body of phiproxy.catalog_epoch()
// ("SELECT '<hex>'::text"; ” before the first change), and whether the
// body has that form.
func ParseEpoch(prosrc string) (string, bool) {
	rest, ok := strings.CutPrefix(prosrc, "SELECT '")
	if !ok {
		return "", false
	}
	h, ok := strings.CutSuffix(rest, "'::text")
	if !ok {
		return "", false
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return h, true
}

// EpochMessage is what the proxy, `phiproxy check` and `phiproxy schema`
// say when the epoch is not installed.
const EpochMessage = "the database lacks phiproxy's catalog triggers (phiproxy.catalog_changed, run after every DDL by any connection): without them a view, child table or other second name for a PHI table created by another connection could go unseen; run as a superuser"

// EpochProblem is the problem `phiproxy schema` and `phiproxy check`
// report for a database without the epoch (EpochInstalled false).
func EpochProblem() Problem {
	return Problem{Table: "phiproxy", Step: StepPrepare, Msg: EpochMessage, DDL: EpochDDL(), Blocks: true}
}

// EpochInstalled reads the two values of EpochStateSQL.
func EpochInstalled(prosrc, triggers string) bool {
	_, ok := ParseEpoch(prosrc)
	return ok && triggers == "true"
}
