package phi

import (
	"strings"

	"github.com/jackc/pgerrcode"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/rewrite"
)

// The catalog epoch (policy/epoch.go) closes what the catalog guard alone
// leaves open: a second name for a policy table (a view, a child table, a
// rule on another table...) created by another connection after the
// session read its catalog. A statement naming only that second name looks
// like one on a table the policy does not govern; passed through, its
// values would reach PostgreSQL in plaintext. So in a database whose
// catalog has policy tables, every batch, not only those relying on the
// catalog, is guarded, and the guard also compares phiproxy.catalog_epoch()
// with the epoch the session read: PostgreSQL fails the batch before the
// statement runs when a second name changed anywhere since.
//
// Without the epoch's event triggers (a database set up before them, or
// with them dropped or disabled) the proxy cannot know, and refuses those
// statements with 55000 and the DDL that installs them; /readyz and
// `phiproxy check` say so too.

// rowEpoch is the catalog query's row of the epoch: the body of
// phiproxy.catalog_epoch() and whether the triggers are installed
// (policy.EpochStateSQL).
const rowEpoch = "epoch"

// epochSQL is the catalog query's branch that reads the epoch.
// Its third value is the hash of the policy tables' second names
// (policy.SecondNamesSQL), which catalog_check compares once the session's
// own DDL moved the epoch on; its fourth, the schemas that the session's
// search_path puts before pg_catalog (pathAheadSQL).
var epochSQL = ` UNION ALL SELECT 4, 0, 0, '` + rowEpoch + `', ` + policy.EpochStateSQL + `, ` +
	policy.SecondNamesSQL(`ARRAY(SELECT t.oid FROM t)`) + `, ` + pathAheadSQL + `, '', '', '', '', '', ''`

// pathAheadSQL names (quoted, comma-separated) the schemas that the
// session's search_path puts before pg_catalog, but for its temporary
// schema, in which PostgreSQL never looks up operators and functions; empty
// when none. The catalog query runs with the session's search_path and
// writes most operators bare (a.attrelid = t.oid): an operator or function
// of such a schema with the same name and argument types stands in for
// PostgreSQL's there (CVE-2018-1058's pattern). The owner of a database
// or a role can give every new session that search_path (ALTER DATABASE
// … SET search_path = public, pg_catalog) and create an = on oid in
// public that is false for one view's OID: the catalog read then misses
// that view as a second name of a policy table, and a statement through
// it passes untouched, its values in plaintext. This expression names
// every operator and function with its schema, so such a schema cannot
// change its value; a catalog read with one is not trusted
// (catalog.pathAhead).
const pathAheadSQL = `COALESCE((SELECT pg_catalog.string_agg(pg_catalog.quote_ident(u.s), ', ' ORDER BY u.i)` +
	` FROM pg_catalog.unnest(pg_catalog.current_schemas(true)) WITH ORDINALITY AS u(s, i)` +
	` WHERE u.i OPERATOR(pg_catalog.<) pg_catalog.array_position(pg_catalog.current_schemas(true), 'pg_catalog'::pg_catalog.name)` +
	` AND NOT pg_catalog.starts_with(u.s::pg_catalog.text, 'pg_temp_')), '')`

// readEpochRow notes the epoch row's values in cat.
func (c *catalog) readEpochRow(r [][]byte) {
	c.epochKnown = true
	c.epoch, _ = policy.ParseEpoch(string(r[1]))
	c.epochOK = policy.EpochInstalled(string(r[1]), string(r[2]))
	if len(r) > 3 {
		c.secondNames = string(r[3])
	}
	if len(r) > 4 {
		c.pathAhead = string(r[4])
	}
}

// epochOf returns the epoch row's values in rows ("" when none).
func epochOf(rows [][][]byte) string {
	for _, r := range rows {
		if len(r) > 4 && string(r[0]) == rowEpoch {
			// The search_path too: alias rows read under one that
			// puts a schema before pg_catalog are not to be reused.
			return string(r[1]) + "/" + string(r[2]) + "/" + string(r[4])
		}
		if len(r) > 2 && string(r[0]) == rowEpoch {
			return string(r[1]) + "/" + string(r[2])
		}
	}
	return ""
}

// epochProblem is the problem of a database without the epoch, reported
// for each of its policy tables.
func epochProblem(t *policy.Table) Problem {
	return Problem{Table: t.QualifiedName(), Kind: ProblemEpoch, Message: policy.EpochMessage,
		DDL: strings.Join(policy.EpochDDL(), " ")}
}

// errNoEpoch refuses a statement in a database whose epoch is missing.
func errNoEpoch() error {
	return &CatalogError{Msg: "phiproxy cannot check this statement against second names of PHI tables created by other connections: " + policy.EpochMessage,
		Hnt: strings.Join(policy.EpochDDL(), " ")}
}

// errNoEpochText refuses a text of several statements in a governed
// database without the epoch (and without policy tables, or it would be
// refused for those): no check can stand in front of its later
// statements (inline.go).
func errNoEpochText() error {
	return &CatalogError{Msg: "phiproxy cannot check the statements of this text after the first against PHI tables and their second names created by other connections meanwhile: send them one per query, or install the catalog triggers: " + policy.EpochMessage,
		Hnt: strings.Join(policy.EpochDDL(), " ")}
}

// epochGuards reports whether every batch that may name a relation must be
// guarded in this catalog's database: the catalog was read with the
// epoch's row (a governed database). So are those of a database whose
// policy tables do not exist yet: a migration may create them and a view
// over them at any moment, and the guard finds the tables created.
func (c *catalog) epochGuards() bool { return c != nil && c.epochKnown }

// epochMissing reports whether statements that need the epoch must be
// refused: the database has policy tables but not the epoch's triggers.
// (Without policy tables the guard still finds them created.)
func (c *catalog) epochMissing() bool { return !c.epochOK && len(c.tables) > 0 }

// guardsText reports whether a statement passed through untouched (it names
// no policy table) must be guarded: it may name a second name of one
// created since the catalog was read. Only single statements that cannot
// name a relation's rows (transaction control, settings, maintenance) go
// without, and those PostgreSQL refuses inside a pipeline (VACUUM, CREATE
// INDEX CONCURRENTLY, CREATE DATABASE ...), which the guard would make
// them; of those, CREATE INDEX CONCURRENTLY may hold a value, and is
// checked by reading the catalog first (readsCatalogFirst). A text that
// starts with anything but a word (a parenthesized query) is guarded; one
// of blanks, comments and semicolons only is not.
func guardsText(sql string) bool {
	if strings.Contains(strings.TrimRight(sql, " \t\r\n\f;"), ";") {
		return true // more than one statement (or a semicolon in a literal)
	}
	words := leadingWords(sql, 4)
	if len(words) == 0 {
		rest, ok := skipBlank(sql)
		return !ok || strings.TrimLeft(rest, " \t\r\n\f;") != ""
	}
	switch words[0] {
	case "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release",
		"set", "reset", "show", "discard", "deallocate", "listen", "unlisten",
		"vacuum", "analyze", "analyse", "checkpoint", "cluster", "reindex", "load":
		return false
	}
	return !refusedInPipeline(words)
}

// refusedInPipeline reports whether a CREATE, ALTER or DROP statement
// starting with words is one PostgreSQL refuses inside a transaction
// block or pipeline (or, ALTER DATABASE and ALTER TABLESPACE, one that
// names no relation), read from its grammar: words elsewhere in the text
// (a comment, a column alias) do not count.
func refusedInPipeline(words []string) bool {
	if len(words) < 2 {
		return false
	}
	switch words[0] + " " + words[1] {
	case "create database", "drop database", "alter database",
		"create tablespace", "drop tablespace", "alter tablespace", "alter system",
		"create subscription", "alter subscription", "drop subscription":
		return true
	}
	return indexConcurrently(words)
}

// indexConcurrently reports whether words start CREATE [UNIQUE] INDEX
// CONCURRENTLY or DROP INDEX CONCURRENTLY.
func indexConcurrently(words []string) bool {
	if len(words) > 0 && words[0] == "create" && len(words) > 1 && words[1] == "unique" {
		words = append([]string{"create"}, words[2:]...)
	}
	return len(words) >= 3 && (words[0] == "create" || words[0] == "drop") && words[1] == "index" && words[2] == "concurrently"
}

// readsCatalogFirst reports whether sql is a statement that no guard can
// precede but that may name a second name and hold a value: COPY (its
// data; a guard's Sync cannot follow COPY FROM STDIN) and CREATE INDEX
// CONCURRENTLY (its predicate and expressions). The catalog, second names
// included, is read in front of it instead (checkFirst).
func readsCatalogFirst(sql string) bool {
	words := leadingWords(sql, 4)
	if len(words) == 0 {
		return false
	}
	return words[0] == "copy" || words[0] == "create" && indexConcurrently(words)
}

// needsGuard reports whether a statement with plan (and, passed through,
// text sql) must have the guard in front of it in its batch.
func (s *session) needsGuard(plan *rewrite.Plan, sql string) bool {
	if reliesOnCatalog(plan) {
		return true
	}
	return plan.Passthrough && s.db.cat.epochGuards() && guardsText(sql)
}

// checkEpoch refuses a passed-through statement that needs the epoch in
// a database without it, and every statement that needs the guard when
// the catalog was read under a search_path that puts a schema before
// pg_catalog (pathAheadSQL).
func (s *session) checkEpoch(plan *rewrite.Plan, sql string) error {
	if !s.needsGuard(plan, sql) {
		return nil
	}
	if s.db.cat.unsafePath() {
		s.stale = true // read the catalog again: the client may have changed its search_path since
		return errSearchPath(s.db.cat.pathAhead)
	}
	if plan.Passthrough && s.db.cat.epochMissing() {
		return errNoEpoch()
	}
	return nil
}

// unsafePath reports whether the catalog was read under a search_path
// that puts a schema before pg_catalog: what it says cannot be trusted.
func (c *catalog) unsafePath() bool { return c != nil && c.pathAhead != "" }

// searchPathMessage is the problem of a catalog read under a search_path
// that puts schemas (quoted, comma-separated) before pg_catalog.
func searchPathMessage(schemas string) string {
	return "the session's search_path puts " + schemas + " before pg_catalog: an operator or function there could stand in for PostgreSQL's in phiproxy's catalog query" +
		" and hide a second name of a PHI table; name pg_catalog first (SET search_path = pg_catalog, …), or leave it out (PostgreSQL then searches it first)," +
		" here and in ALTER DATABASE or ALTER ROLE … SET search_path"
}

// errSearchPath refuses a statement in a session whose catalog was read
// under a search_path that puts schemas before pg_catalog.
func errSearchPath(schemas string) error {
	return &CatalogError{Msg: "phiproxy cannot trust its catalog query in this session: " + searchPathMessage(schemas)}
}

// syncName names the proxy's prepared statement that makes the server take
// in other sessions' catalog changes before the guard, inside a
// transaction block (policy.EpochDDL's phiproxy.catalog_sync()).
const syncName = "phiproxy_catalog_sync"

// syncSQL calls it.
const syncSQL = `SELECT "phiproxy"."catalog_sync"()`

// errReadFirstBusy refuses a COPY or CREATE INDEX CONCURRENTLY on a
// relation the policy does not govern, sent while the session's earlier
// statements are unanswered: the catalog cannot be read in front of it
// (checkFirst).
var errReadFirstBusy error = &refusal{pgerrcode.ObjectNotInPrerequisiteState, "catalog",
	"COPY and CREATE INDEX CONCURRENTLY are checked against second names of PHI tables by reading the catalog first, which phiproxy can only do when nothing else is pending: send it on its own"}

// checkFirst reads the catalog, second names included, in front of a
// statement of readsCatalogFirst, when the session can; readFirst says
// whether it did.
func (s *session) checkFirst() error {
	s.readFirst = false
	idle, status, ok := s.canQuery()
	if !idle || !ok {
		return nil
	}
	if _, err := s.reload(status, true); err != nil {
		return err
	}
	s.readFirst = true
	return nil
}
