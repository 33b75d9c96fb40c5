package phi

import (
	"fmt"
	"strings"

	"github.com/novamind/phiproxy/policy"
)

// The catalog query returns rows of six text columns, then the
// collationWidth columns of collationColumns, then the typeWidth columns
// of typeColumns. The first says what a row is: a column of a policy
// table (its OID, then schema, table, attnum, name, type OID, collation,
// type name, generated), or one of these markers (the other columns
// empty).
const (
	rowRelkind = "relkind" // table OID, schema, table, relkind, ""
	// rowGenerated: table OID, schema, table, a generated column's name, ""
	rowGenerated = "generated"
	rowAlias     = "alias" // table OID, alias kind, identity, extra, bare name
	// rowRemote: policy table's schema and name, the foreign table's
	// identity, "", its bare name (remoteAliasSQL)
	rowRemote = "remote"
)

// typeColumns are the catalog query's last output columns, per attribute:
// its type as format_type names it and whether it is generated (read
// through to_jsonb: attgenerated is new in PostgreSQL 12). They are what
// policy.DiffTable compares (buildCatalog).
const typeColumns = `pg_catalog.format_type(a.atttypid, a.atttypmod)::pg_catalog.text AS a9,` +
	` (coalesce(pg_catalog.to_jsonb(a) ->> 'attgenerated', '') <> '')::pg_catalog.text AS a10`

// typeWidth is how many columns typeColumns adds.
const typeWidth = 2

// catalogWidth is the width of the catalog query's rows.
const catalogWidth = 6 + collationWidth + typeWidth

// policyTablesIn is the SQL list of the policy tables' (schema, name).
func policyTablesIn(pol *policy.Policy) string {
	var b strings.Builder
	b.WriteString("(")
	for i, t := range pol.Tables() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s, %s)", quoteLiteral(t.Schema), quoteLiteral(t.Name))
	}
	if len(pol.Tables()) == 0 {
		b.WriteString("(NULL, NULL)")
	}
	b.WriteString(")")
	return b.String()
}

// policyTablesCTE starts the catalog queries with t, the policy's
// relations.
func policyTablesCTE(pol *policy.Policy) string {
	return `WITH t AS (SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltype, c.relispartition` +
		` FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace` +
		` WHERE (n.nspname, c.relname) IN ` + policyTablesIn(pol) + `)`
}

// catalogQuery returns the query that reads the policy tables' columns,
// policy relations that are not tables, and, with
// aliases, the relations and objects that give a policy table a second
// name. It names only tables and columns, never values, so it may be
// logged.
func catalogQuery(pol *policy.Policy, aliases bool) string {
	const txt = `::pg_catalog.text`
	var b strings.Builder
	b.WriteString(policyTablesCTE(pol))
	if aliases {
		b.WriteString(viewsCTE + reachSQL)
	}
	b.WriteString(` SELECT a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10 FROM (`)
	// Columns.
	b.WriteString(`SELECT 0 AS k, t.oid::pg_catalog.int8 AS k1, a.attnum::pg_catalog.int8 AS k2,` +
		` t.oid` + txt + ` AS a0, t.nspname` + txt + ` AS a1, t.relname` + txt + ` AS a2, a.attnum` + txt + ` AS a3, a.attname` + txt + ` AS a4, a.atttypid` + txt + ` AS a5, ` + collationColumns + `, ` + typeColumns +
		` FROM t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid` + collationJoins + ` WHERE a.attnum > 0 AND NOT a.attisdropped`)
	// Policy relations that are not tables.
	b.WriteString(` UNION ALL SELECT 1, t.oid::pg_catalog.int8, 0, '` + rowRelkind + `', t.oid` + txt + `, t.nspname` + txt + `, t.relname` + txt + `, t.relkind` + txt + `, '', '', '', '', '', ''` +
		` FROM t WHERE t.relkind NOT IN ('r', 'p')`)
	// Whether views read them: then viewsQuery reads those (views.go).
	b.WriteString(hasViewsSQL)
	// Generated columns, which COPY without a column list leaves out
	// (attgenerated is read through to_jsonb: PostgreSQL 11 lacks it).
	b.WriteString(` UNION ALL SELECT 2, t.oid::pg_catalog.int8, a.attnum::pg_catalog.int8, '` + rowGenerated + `', t.oid` + txt + `, t.nspname` + txt + `, t.relname` + txt + `, a.attname` + txt + `, '', '', '', '', '', ''` +
		` FROM t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid WHERE a.attnum > 0 AND NOT a.attisdropped AND coalesce(pg_catalog.to_jsonb(a) ->> 'attgenerated', '') <> ''`)
	if aliases {
		b.WriteString(aliasSQL)
		b.WriteString(remoteAliasSQL(pol))
	}
	b.WriteString(epochSQL)
	b.WriteString(`) u ORDER BY k, k1, k2, a0, a1, a2, a3, a4`)
	return b.String()
}
