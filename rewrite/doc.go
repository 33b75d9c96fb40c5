// Package rewrite turns SQL text, the PHI policy and what the proxy knows of
// the catalog into a Plan: the SQL to send upstream, what to do with each
// parameter and literal, and which result columns hold PHI, or a rejection
// (*Error, SQLSTATE 0A000 or 42601).
//
// # What it does
//
// Indexed PHI columns compared with =, <>, IN (...), = ANY($n) or IS [NOT]
// DISTINCT FROM are rewritten to compare their blind-index columns, and the
// values become index values. INSERT and UPDATE encrypt PHI values and write
// the blind index in step (an added column and parameter or literal slot).
// ON CONFLICT (col) targets the index, DO UPDATE SET col = EXCLUDED.col
// copies the index too. INSERT without a column list is expanded from the
// Catalog. Rewriting splices the original text at pg_query token locations:
// everything else stays byte-identical.
//
// # What it refuses
//
// It fails closed. Any use of a PHI column that would make PostgreSQL
// compute on, compare with or receive plaintext (LIKE, ranges, ORDER BY,
// GROUP BY, DISTINCT, functions, operators and casts on the column, INSERT
// ... SELECT into or out of it, MERGE, COPY, writable CTEs and SELECT INTO
// on PHI tables, SQL-level PREPARE), a column reference it cannot resolve
// with certainty, and text pg_query cannot parse are rejected. Error
// messages name tables, columns and constructs, never literal values.
//
// # Invariants
//
// No I/O, no keys. Plans are immutable and shared through Cache, which is
// keyed by the exact text. Texts that name no policy table (a
// case-insensitive byte scan) pass through without being parsed. For the
// simple protocol Plan.SQL is a template: each Literal's byte range holds
// the placeholder $0 until the proxy splices the transformed literal in, so
// an unspliced template fails at the server instead of writing anything.
package rewrite
