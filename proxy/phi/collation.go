package phi

import "github.com/novamind/phiproxy/rewrite"

// What the rewriter needs to know of collations (rewrite.Collations): on
// a PHI column, lower(), upper() and \D are answered by a normalized
// index only where PostgreSQL maps ASCII alone (ctype C or POSIX), and =
// by a blind index only where the collation is deterministic (issue 10
// item 4). The catalog query reads it with the columns, so a plan made
// against one catalog state knows the collations of that state.

// collationColumns are the extra output columns of the catalog query, per
// attribute: its collation has ctype C (libc C or POSIX, or the default
// collation of a database whose ctype is C under the libc provider); its
// collation is nondeterministic; the database's default collation has
// ctype C. Optional catalog columns are read through to_jsonb, so the
// query runs on servers that lack them (datlocprovider before 15,
// collisdeterministic before 12). An ICU or builtin default collation
// counts as not C, even where lower() would happen to stay ASCII: the
// rewriter then refuses rather than guesses.
const collationColumns = `(CASE WHEN a.attcollation = 100 THEN dbc.c` +
	` ELSE coalesce(co.collprovider = 'c' AND co.collctype IN ('C', 'POSIX'), false) END)::pg_catalog.text AS a6,` +
	` coalesce(NOT (to_jsonb(co) ->> 'collisdeterministic')::bool, false)::pg_catalog.text AS a7,` +
	` dbc.c::pg_catalog.text AS a8`

// collationJoins are the joins collationColumns read.
const collationJoins = ` LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation` +
	` CROSS JOIN (SELECT db.datctype IN ('C', 'POSIX') AND coalesce(to_jsonb(db) ->> 'datlocprovider', 'c') = 'c' AS c` +
	` FROM pg_catalog.pg_database db WHERE db.datname = pg_catalog.current_database()) dbc`

// collationWidth is how many columns collationColumns adds (as text; the
// catalog query's other rows leave them empty).
const collationWidth = 3

// addCollation records the collation columns of one attribute.
func (c *catalog) addCollation(column string, r [][]byte) {
	isTrue := func(b []byte) bool { return string(b) == "t" || string(b) == "true" }
	c.colls[column] = rewrite.Collation{CTypeC: isTrue(r[0]), Nondeterministic: isTrue(r[1])}
	c.defColl = rewrite.Collation{CTypeC: isTrue(r[2])}
	c.collsKnown = true
}

// Collation implements rewrite.Collations.
func (c *catalog) Collation(schema, table, column string) (rewrite.Collation, bool) {
	if c == nil || !c.collsKnown {
		return rewrite.Collation{}, false
	}
	if column == "" {
		return c.defColl, true
	}
	coll, ok := c.colls[schema+"."+table+"."+column]
	return coll, ok
}
