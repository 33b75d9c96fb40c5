package phi

import (
	"strings"

	"github.com/novamind/phiproxy/policy"
)

// Foreign tables made by the session itself that name a policy table the
// database lacks.
//
// The guard and the checks inside a text accept an epoch that the
// session's own DDL alone moved on, when the second names of the policy
// tables the database has are unchanged (catalog_check, given their
// OIDs). A foreign table whose remote table is named as a policy table
// the database lacks (remoteAliasSQL: the server it reaches may be
// another governed database) is a second name of no table the database
// has, so the comparison does not see it: a function run by the session
// that creates one, or points one there (ALTER FOREIGN TABLE … OPTIONS
// (SET table_name …)), and a later statement of the same text or
// pipeline writing through it, stored plaintext in the other database.
// So in a database that lacks a policy table, the acceptance also
// requires that no foreign table names one it lacks (remoteCheck).
// Only an epoch that moved costs the query: the planner folds the
// comparison of the epoch's constant first.

// remoteCheck is a condition that holds when no foreign table's remote
// table (postgres_fdw's schema_name and table_name options, defaulting
// to its own names) is named as a policy table that cat lacks; "" when
// cat has every policy table. Every operator is named with its schema:
// it runs under the client's search_path.
func remoteCheck(pol *policy.Policy, cat *catalog) string {
	var missing []string
	for _, t := range pol.Tables() {
		if cat.tables[t.QualifiedName()] == nil {
			missing = append(missing, "r.nspname OPERATOR(pg_catalog.=) "+quoteLiteral(t.Schema)+
				" AND r.relname OPERATOR(pg_catalog.=) "+quoteLiteral(t.Name))
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "NOT EXISTS (SELECT FROM (SELECT " + fdwRemote("schema_name", "fn.nspname") + " AS nspname," +
		" " + fdwRemote("table_name", "fc.relname") + " AS relname" +
		" FROM pg_catalog.pg_foreign_table ft JOIN pg_catalog.pg_class fc ON fc.oid OPERATOR(pg_catalog.=) ft.ftrelid" +
		" JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) fc.relnamespace) r" +
		" WHERE " + strings.Join(missing, " OR ") + ")"
}

// remoteCheckColumn is remoteCheck as a column of the checks inside a
// text: it fails (division by zero, the catalog changed) once the epoch
// moved on from cat's and such a foreign table exists; "" when cat has
// every policy table.
func remoteCheckColumn(pol *policy.Policy, cat *catalog) string {
	rc := remoteCheck(pol, cat)
	if rc == "" {
		return ""
	}
	return ", 1 OPERATOR(pg_catalog./) (CASE WHEN " + policy.EpochFunction + " OPERATOR(pg_catalog.=) " + quoteLiteral(cat.epoch) +
		" THEN true ELSE " + rc + " END)::pg_catalog.int4 AS phiproxy_remote"
}
