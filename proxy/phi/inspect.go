package phi

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/novamind/phiproxy/policy"
)

// This file is what `phiproxy check` (and anything else that can log in to
// a governed database) uses to list what the proxy would refuse there,
// without running a proxy: the same catalog query and the same problems a
// session sees.

// QueryFunc runs one SQL statement and returns its rows with every value
// in text format (nil for NULL). With pgx:
//
//	func(ctx context.Context, sql string) ([][][]byte, error) {
//		rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
//		if err != nil {
//			return nil, err
//		}
//		defer rows.Close()
//		var out [][][]byte
//		for rows.Next() {
//			raw := rows.RawValues()
//			vals := make([][]byte, len(raw))
//			for i, v := range raw {
//				if v != nil {
//					vals[i] = append([]byte{}, v...)
//				}
//			}
//			out = append(out, vals)
//		}
//		return out, rows.Err()
//	}
type QueryFunc func(ctx context.Context, sql string) ([][][]byte, error)

// CatalogQuery returns the query a session runs to read the catalog of
// the policy's tables (text-format rows, as Inspect reads them). It names
// only tables and columns, never values. When its rows say that views
// read the tables, ViewsQuery's rows complete them.
func CatalogQuery(pol *policy.Policy) string { return catalogQuery(pol, true) }

// ViewsQuery returns the query that reads the views over the policy's
// tables (see CatalogQuery).
func ViewsQuery(pol *policy.Policy) string { return viewsQuery(pol) }

// Inspect returns the problems that the rows of CatalogQuery show, table by
// table in policy order: the statements a session on that database would
// refuse, and why, with the DDL that fixes each. None means the database
// is ready for the policy.
func Inspect(pol *policy.Policy, rows [][][]byte) ([]Problem, error) {
	cat, err := buildCatalog(pol, rows)
	if err != nil {
		return nil, err
	}
	return cat.allProblems(pol), nil
}

// CheckDatabase runs CatalogQuery with query on a connection to one
// database and returns Inspect's answer. For a missing table it also looks
// for tables that hold all of its PHI columns (the table the policy meant
// to name, when the policy misspells it) and says so in the problem's
// message. Run it for each database the policy governs (pol.Databases());
// it needs no privilege beyond reading pg_catalog.
func CheckDatabase(ctx context.Context, pol *policy.Policy, query QueryFunc) ([]Problem, error) {
	rows, err := query(ctx, catalogQuery(pol, true))
	if err == nil {
		rows, err = readViews(pol, rows, func(sql string) ([][][]byte, error) { return query(ctx, sql) })
	}
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	problems, err := Inspect(pol, rows)
	if err != nil {
		return nil, err
	}
	for i, p := range problems {
		if p.Kind != ProblemMissing {
			continue
		}
		schema, name, _ := strings.Cut(p.Table, ".")
		rows, err := query(ctx, candidatesQuery(pol.Table(schema, name)))
		if err != nil {
			return nil, fmt.Errorf("look for %s under other names: %w", p.Table, err)
		}
		var names []string
		for _, r := range rows {
			if len(r) == 1 {
				names = append(names, string(r[0]))
			}
		}
		if len(names) > 0 {
			problems[i].Message += fmt.Sprintf("; %s %s all its PHI columns: is that the table the policy means?",
				strings.Join(names, ", "), map[bool]string{true: "has", false: "have"}[len(names) == 1])
		}
	}
	return problems, nil
}

// allProblems lists the catalog's problems in policy order.
func (c *catalog) allProblems(pol *policy.Policy) []Problem {
	var out []Problem
	for _, t := range pol.Tables() {
		out = append(out, c.problems[t.QualifiedName()]...)
	}
	return out
}

// candidatesQuery finds the tables that have every PHI column of t (by
// name): where t's values go when the policy misspells t's name.
func candidatesQuery(t *policy.Table) string {
	names := make([]string, 0, len(t.Columns))
	for _, c := range t.Columns {
		names = append(names, quoteLiteral(c.Name))
	}
	slices.Sort(names)
	return `SELECT (pg_catalog.pg_identify_object('pg_catalog.pg_class'::pg_catalog.regclass, c.oid, 0)).identity` +
		` FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')` +
		` AND c.relnamespace <> 'pg_catalog'::pg_catalog.regnamespace` +
		` AND NOT EXISTS (SELECT FROM pg_catalog.unnest(ARRAY[` + strings.Join(names, ", ") + `]::pg_catalog.text[]) x(name)` +
		` WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname::pg_catalog.text = x.name AND NOT a.attisdropped))` +
		` ORDER BY 1`
}
