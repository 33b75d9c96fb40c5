package phi

import (
	"strconv"
	"strings"

	"github.com/novamind/phiproxy/policy"
)

// The catalog query's search for second names of policy tables
// (catalogQuery with aliases; the problems they make are in problem.go).

// reachSQL is the recursive part of the catalog query's WITH that finds
// every relation reaching a policy table's rows, not only those that name
// it: a view over a view of it, a grandchild, a foreign table pointing at
// a view of it, a rule on another table that writes into one of them.
// Each row of ra is such a relation (the policy table itself first), with
// root, the policy table, and down, whether its descendants reach the
// root's rows too (the root's and its descendants' do; an ancestor's other
// children, the root's siblings, do not).
var reachSQL = `, ra AS (WITH RECURSIVE ra(oid, nspname, relname, reltype, relispartition, root, down) AS (` +
	`SELECT t.oid, t.nspname, t.relname, t.reltype, t.relispartition, t.oid, true FROM t WHERE t.relkind IN ('r', 'p')` +
	` UNION SELECT c.oid, n.nspname, c.relname, c.reltype, c.relispartition, ra.root, x.down FROM ra, LATERAL (` +
	// Views, materialized views and rules of other relations that
	// read or write it.
	`SELECT r.ev_class AS oid, false AS down FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid` +
	` WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = ra.oid AND r.ev_class <> ra.oid` +
	// Children and partitions, of the root and its descendants.
	` UNION ALL SELECT i.inhrelid, true FROM pg_catalog.pg_inherits i WHERE i.inhparent = ra.oid AND ra.down` +
	// Parents and partitioned tables.
	` UNION ALL SELECT i.inhparent, false FROM pg_catalog.pg_inherits i WHERE i.inhrelid = ra.oid` +
	// Foreign tables whose remote table is it (postgres_fdw's options).
	` UNION ALL SELECT ft.ftrelid, false FROM pg_catalog.pg_foreign_table ft JOIN pg_catalog.pg_class fc ON fc.oid = ft.ftrelid JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace` +
	` WHERE ft.ftrelid <> ra.oid` +
	` AND ` + fdwRemote("table_name", "fc.relname") + ` = ra.relname::pg_catalog.text` +
	` AND ` + fdwRemote("schema_name", "fn.nspname") + ` = ra.nspname::pg_catalog.text` +
	`) x JOIN pg_catalog.pg_class c ON c.oid = x.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace) SELECT * FROM ra)`

// aliasSQL are the branches of the catalog query that find second names
// for a policy table: one SELECT per kind, each row naming the policy
// table, the kind, the alias's identity (schema-qualified and quoted by
// pg_identify_object), one more name for some kinds (a column; for a
// child or parent found through another alias, that alias), and the bare
// name by which statements reach the alias (none for a trigger or a
// subscription, which statements do not name). Each branch looks at every
// relation of ra (reachSQL), so second names of second names are found
// too, reported for the policy table they reach. Views that read a
// policy table through views only (vw, views.go) are read and classified
// on their own; the second names of those are found here too.
var aliasSQL = func() string {
	const (
		cls = `'pg_catalog.pg_class'::pg_catalog.regclass`
		prc = `'pg_catalog.pg_proc'::pg_catalog.regclass`
		typ = `'pg_catalog.pg_type'::pg_catalog.regclass`
		txt = `::pg_catalog.text`
	)
	id := func(classid, objid string) string {
		return `(pg_catalog.pg_identify_object(` + classid + `, ` + objid + `, 0)).identity`
	}
	relname := func(oid string) string {
		return `(SELECT x.relname` + txt + ` FROM pg_catalog.pg_class x WHERE x.oid = ` + oid + `)`
	}
	// via names the alias through which a child or parent reaches the
	// policy table, when it is not the table itself.
	via := `CASE WHEN t.oid = t.root THEN '' ELSE ` + id(cls, "t.oid") + ` END`
	var b strings.Builder
	alias := func(kind, identity, extra, name, from string) {
		b.WriteString(` UNION ALL SELECT DISTINCT 3, t.root::pg_catalog.int8, 0, '` + rowAlias + `', t.root` + txt + `, ` + kind + `, ` + identity + `, ` + extra + `, ` + name + `, '', '', '', '', '' FROM ra t ` + from)
	}
	// Views, materialized views and rules that read or write it (a view's
	// _RETURN rule depends on the tables it reads), and rules on it (a
	// view's own _RETURN rule is the view, found through what it reads).
	alias(`CASE WHEN r.rulename = '_RETURN' AND rc.relkind = 'v' THEN 'view' WHEN r.rulename = '_RETURN' AND rc.relkind = 'm' THEN 'matview' ELSE 'rule' END`,
		`CASE WHEN r.rulename = '_RETURN' THEN `+id(cls, "rc.oid")+` ELSE `+id(`'pg_catalog.pg_rewrite'::pg_catalog.regclass`, "r.oid")+` END`, `''`,
		`CASE WHEN rc.oid = t.oid THEN '' ELSE rc.relname`+txt+` END`,
		`JOIN pg_catalog.pg_depend d ON d.refclassid = `+cls+` AND d.refobjid = t.oid AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass`+
			` JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid JOIN pg_catalog.pg_class rc ON rc.oid = r.ev_class`+
			` WHERE (rc.oid <> t.oid OR t.oid = t.root) AND NOT (r.rulename = '_RETURN' AND rc.oid IN (SELECT vw.oid FROM vw))`)
	// Inheritance children and partitions (of the table and its
	// descendants).
	alias(`CASE WHEN ic.relispartition THEN 'partition' ELSE 'child' END`, id(cls, "i.inhrelid"), via, `ic.relname`+txt,
		`JOIN pg_catalog.pg_inherits i ON i.inhparent = t.oid JOIN pg_catalog.pg_class ic ON ic.oid = i.inhrelid WHERE t.down`)
	// Inheritance parents, and the partitioned table it is a partition of
	// (of the table and of any relation reaching it, but for the parents
	// a descendant has on its way to the table).
	alias(`CASE WHEN t.relispartition THEN 'partitionof' ELSE 'parent' END`, id(cls, "i.inhparent"), via, relname("i.inhparent"),
		`JOIN pg_catalog.pg_inherits i ON i.inhrelid = t.oid`+
			` WHERE NOT EXISTS (SELECT 1 FROM ra a WHERE a.root = t.root AND a.down AND a.oid = i.inhparent)`)
	// Foreign tables whose remote table is it: table_name and schema_name
	// options, defaulting to the foreign table's own names (postgres_fdw).
	alias(`'foreign'`, id(cls, "ft.ftrelid"), `''`, `fc.relname`+txt,
		`JOIN (pg_catalog.pg_foreign_table ft JOIN pg_catalog.pg_class fc ON fc.oid = ft.ftrelid JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace)`+
			` ON `+fdwRemote("table_name", "fc.relname")+` = t.relname`+txt+
			` AND `+fdwRemote("schema_name", "fn.nspname")+` = t.nspname`+txt+
			` AND ft.ftrelid <> t.oid`)
	// Triggers on it with transition tables.
	alias(`'trigger'`, id(`'pg_catalog.pg_trigger'::pg_catalog.regclass`, "tg.oid"), `''`, `''`,
		`JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = t.oid WHERE tg.tgoldtable IS NOT NULL OR tg.tgnewtable IS NOT NULL`)
	// (Functions whose SQL-standard body reads or writes it are not second
	// names: one created through phiproxy had its body checked, and
	// PL/pgSQL bodies are not in pg_depend at all.)
	// Objects built on its row type (or its array type): functions taking
	// or returning its rows, columns holding them, domains and types.
	alias(`CASE WHEN d.classid = `+prc+` THEN 'rowfunction'`+
		` WHEN d.classid = `+cls+` AND d.objsubid > 0 THEN 'column'`+
		` WHEN d.classid = `+typ+` THEN CASE WHEN (SELECT dt.typtype FROM pg_catalog.pg_type dt WHERE dt.oid = d.objid) = 'd' THEN 'domain' ELSE 'type' END`+
		` ELSE 'other' END`,
		`CASE WHEN d.classid IN (`+cls+`, `+prc+`, `+typ+`) THEN `+id("d.classid", "d.objid")+
			` ELSE pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) END`,
		`COALESCE((SELECT pg_catalog.quote_ident(pa.attname) FROM pg_catalog.pg_attribute pa WHERE d.classid = `+cls+` AND pa.attrelid = d.objid AND pa.attnum = d.objsubid), '')`,
		`COALESCE(CASE WHEN d.classid = `+prc+` THEN (SELECT p.proname`+txt+` FROM pg_catalog.pg_proc p WHERE p.oid = d.objid)`+
			` WHEN d.classid = `+cls+` THEN `+relname("d.objid")+
			` WHEN d.classid = `+typ+` THEN (SELECT dt.typname`+txt+` FROM pg_catalog.pg_type dt WHERE dt.oid = d.objid) END, '')`,
		`JOIN pg_catalog.pg_type ty ON ty.oid = t.reltype`+
			` JOIN pg_catalog.pg_depend d ON d.refclassid = `+typ+` AND d.refobjid IN (ty.oid, ty.typarray)`+
			` WHERE NOT (d.classid = `+typ+` AND d.objid = ty.typarray)`)
	// Logical replication subscriptions that write into it.
	alias(`'subscription'`, `pg_catalog.quote_ident(s.subname)`, `''`, `''`,
		`JOIN pg_catalog.pg_subscription_rel sr ON sr.srrelid = t.oid JOIN pg_catalog.pg_subscription s ON s.oid = sr.srsubid`)
	return b.String()
}()

// remoteAliasSQL is the branch of the catalog query that finds foreign
// tables whose remote table (postgres_fdw's table_name and schema_name
// options, defaulting to the foreign table's own names) is named as a
// policy table that this database does not have: the server they reach
// may be another database of the cluster, governed by the policy, where
// the values written through them would be stored in plaintext. (Those
// naming a policy table the database has are found by aliasSQL.) The
// epoch's graph has every foreign table with its options.
func remoteAliasSQL(pol *policy.Policy) string {
	const txt = `::pg_catalog.text`
	return ` UNION ALL SELECT DISTINCT 3, 0::pg_catalog.int8, 0, '` + rowRemote + `', r.nspname, r.relname,` +
		` (pg_catalog.pg_identify_object('pg_catalog.pg_class'::pg_catalog.regclass, r.ftrelid, 0)).identity, '', r.bare, '', '', '', '', ''` +
		` FROM (SELECT ft.ftrelid, fc.relname` + txt + ` AS bare,` +
		` ` + fdwRemote("schema_name", "fn.nspname") + ` AS nspname,` +
		` ` + fdwRemote("table_name", "fc.relname") + ` AS relname` +
		` FROM pg_catalog.pg_foreign_table ft JOIN pg_catalog.pg_class fc ON fc.oid = ft.ftrelid JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace) r` +
		` WHERE (r.nspname, r.relname) IN ` + policyTablesIn(pol) +
		` AND NOT EXISTS (SELECT FROM t WHERE t.nspname` + txt + ` = r.nspname AND t.relname` + txt + ` = r.relname)`
}

// fdwRemote is the remote name a foreign table ft (pg_foreign_table, its
// pg_class fc and pg_namespace fn) reaches: postgres_fdw's option name
// (table_name or schema_name), defaulting to dflt, the foreign table's own
// name or schema; as text. Every operator is named with its schema.
func fdwRemote(name, dflt string) string {
	return "COALESCE((SELECT pg_catalog.substr(o, " + strconv.Itoa(len(name)+2) + ") FROM pg_catalog.unnest(ft.ftoptions) o" +
		" WHERE pg_catalog.left(o, " + strconv.Itoa(len(name)+1) + ") OPERATOR(pg_catalog.=) '" + name + "=' LIMIT 1), " + dflt + "::pg_catalog.text)"
}
