package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// This file describes what a database holds for the policy's tables, as
// read by the one query CatalogSQL returns, so that `phiproxy schema`,
// `check`, `migrate` and the demo read the catalog the same way. Diff
// (schema.go) compares it with the policy.

// LiveCatalog is the policy tables that a database holds, by
// "schema.table". A policy table missing from it is missing from the
// database.
type LiveCatalog map[string]*LiveTable

// LiveTable is one table as the database holds it.
type LiveTable struct {
	Schema  string       `json:"schema"`
	Name    string       `json:"name"`
	OID     uint32       `json:"oid"`
	Kind    string       `json:"kind"` // pg_class.relkind: r table, p partitioned table, v view, ...
	Rows    float64      `json:"rows"` // pg_class.reltuples: an estimate, -1 when never analyzed
	Columns []LiveColumn `json:"columns"`
	Indexes []LiveIndex  `json:"indexes"`
	Checks  []LiveCheck  `json:"checks"`
}

// LiveColumn is one column of a LiveTable.
type LiveColumn struct {
	Name       string `json:"name"`
	Attnum     int16  `json:"attnum"`
	Type       string `json:"type"` // format_type(atttypid, atttypmod): "text", "character varying(20)", ...
	TypeOID    uint32 `json:"type_oid"`
	NotNull    bool   `json:"not_null"`
	HasDefault bool   `json:"has_default"`
	Generated  bool   `json:"generated"`
}

// LiveIndex is one index of a LiveTable.
type LiveIndex struct {
	Name       string   `json:"name"`
	Method     string   `json:"method"` // btree, hash, gin, ...
	Keys       []string `json:"keys"`   // key columns in order; "" for an expression
	Uses       []string `json:"uses"`   // every column it reads: keys, expressions, predicate
	Unique     bool     `json:"unique"`
	Primary    bool     `json:"primary"`
	Valid      bool     `json:"valid"`      // false after a failed CREATE INDEX CONCURRENTLY
	Constraint string   `json:"constraint"` // the constraint it backs (primary key, unique), or ""
}

// LiveCheck is one CHECK constraint of a LiveTable.
type LiveCheck struct {
	Name      string   `json:"name"`
	Columns   []string `json:"columns"` // the columns it reads
	Validated bool     `json:"validated"`
}

// Column returns the live column of that name, or nil.
func (t *LiveTable) Column(name string) *LiveColumn {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// Check returns the CHECK constraint of that name, or nil.
func (t *LiveTable) Check(name string) *LiveCheck {
	for i := range t.Checks {
		if t.Checks[i].Name == name {
			return &t.Checks[i]
		}
	}
	return nil
}

// PrimaryKey returns the primary key's columns in key order, or nil.
func (t *LiveTable) PrimaryKey() []string {
	for _, ix := range t.Indexes {
		if ix.Primary {
			return ix.Keys
		}
	}
	return nil
}

// QualifiedName returns "schema.table".
func (t *LiveTable) QualifiedName() string { return t.Schema + "." + t.Name }

// CatalogSQL returns the query that reads the policy's tables from a
// database's catalog: one row per table found, one text column holding a
// JSON LiveTable. It names only tables, never values, so it may be logged.
func CatalogSQL(p *Policy) string {
	var b strings.Builder
	b.WriteString(catalogSelect)
	b.WriteString(" WHERE (n.nspname, c.relname) IN (")
	for i, t := range p.Tables() {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%s, %s)", QuoteLiteral(t.Schema), QuoteLiteral(t.Name))
	}
	if len(p.Tables()) == 0 {
		b.WriteString("(NULL, NULL)")
	}
	b.WriteString(") ORDER BY n.nspname, c.relname")
	return b.String()
}

// catalogSelect builds one JSON object per table. The columns an index
// reads are its key columns and, for expressions and predicates, the
// columns pg_depend records.
const catalogSelect = `SELECT json_build_object(
 'schema', n.nspname, 'name', c.relname, 'oid', c.oid::int8, 'kind', c.relkind, 'rows', c.reltuples,
 'columns', (SELECT coalesce(json_agg(json_build_object(
    'name', a.attname, 'attnum', a.attnum, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
    'type_oid', a.atttypid::int8, 'not_null', a.attnotnull, 'has_default', a.atthasdef,
    'generated', a.attgenerated <> '') ORDER BY a.attnum), '[]')
   FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
 'indexes', (SELECT coalesce(json_agg(json_build_object(
    'name', ic.relname, 'method', am.amname, 'unique', i.indisunique, 'primary', i.indisprimary,
    'valid', i.indisvalid,
    'constraint', coalesce((SELECT co.conname FROM pg_catalog.pg_constraint co
       WHERE co.conindid = i.indexrelid AND co.conrelid = c.oid AND co.contype IN ('p', 'u', 'x') LIMIT 1), ''),
    'keys', (SELECT json_agg(coalesce(ka.attname, '') ORDER BY k.ord)
       FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
       LEFT JOIN pg_catalog.pg_attribute ka ON ka.attrelid = c.oid AND ka.attnum = k.attnum
       WHERE k.ord <= i.indnkeyatts),
    'uses', (SELECT coalesce(json_agg(ua.attname ORDER BY ua.attnum), '[]')
       FROM pg_catalog.pg_attribute ua WHERE ua.attrelid = c.oid AND ua.attnum > 0 AND (
         ua.attnum = ANY (i.indkey::int2[]) OR ua.attnum IN (
           SELECT d.refobjsubid FROM pg_catalog.pg_depend d
           WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = i.indexrelid
             AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = c.oid)))
   ) ORDER BY ic.relname), '[]')
   FROM pg_catalog.pg_index i
   JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
   JOIN pg_catalog.pg_am am ON am.oid = ic.relam
   WHERE i.indrelid = c.oid),
 'checks', (SELECT coalesce(json_agg(json_build_object(
    'name', co.conname, 'validated', co.convalidated,
    'columns', (SELECT coalesce(json_agg(ca.attname ORDER BY ca.attnum), '[]')
       FROM pg_catalog.pg_attribute ca WHERE ca.attrelid = c.oid AND ca.attnum = ANY (co.conkey))
   ) ORDER BY co.conname), '[]')
   FROM pg_catalog.pg_constraint co WHERE co.conrelid = c.oid AND co.contype = 'c')
)::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`

// ParseCatalog reads the rows of CatalogSQL (each the text of its one
// column).
func ParseCatalog(rows [][]byte) (LiveCatalog, error) {
	cat := LiveCatalog{}
	for _, r := range rows {
		var t LiveTable
		if err := json.Unmarshal(r, &t); err != nil {
			return nil, fmt.Errorf("catalog row: %v", jsonProblem(err))
		}
		if t.Schema == "" || t.Name == "" {
			return nil, fmt.Errorf("catalog row: no table name")
		}
		cat[t.QualifiedName()] = &t
	}
	return cat, nil
}

// jsonProblem describes a JSON decoding error without Go type names.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("member %q has the wrong type", te.Field)
	}
	return "malformed JSON"
}
