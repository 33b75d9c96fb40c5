// Package rewrite turns SQL text, the PHI policy and what the proxy knows of
// the catalog into a Plan: the SQL to send upstream, what to do with each
// parameter and literal, and which result columns hold PHI, or a rejection
// (*Error, SQLSTATE 0A000 or 42601).
//
// # What it does
//
// PHI columns compared with =, <>, IN (...), NOT IN, = ANY($n), <> ALL or
// IS [NOT] DISTINCT FROM, and joined with =, are rewritten to compare their
// exact blind index (an HMAC of the value itself), and the values become
// index values: two values share an index exactly when PostgreSQL's = says
// they are equal, and NULL stays NULL, so the three-valued logic holds.
// Comparisons of a function of the column (lower(email) = lower($1),
// UPPER(email::text) = UPPER($1), trim, regexp_replace keeping digits) use
// a normalized index of the column, only when its normalizers compute
// exactly that function (normalized.go says when). INSERT and UPDATE
// encrypt PHI values and write every blind index of the column in step (an
// added column and parameter or literal slot each). ON CONFLICT (col)
// targets the exact index, DO UPDATE SET col = EXCLUDED.col copies every
// index too. INSERT without a column list is expanded from the
// Catalog. A column alias list on a policy table (FROM patients AS p(i, fn))
// is mapped to its columns by position from the Catalog's column order.
// Rewriting splices the original text at pg_query token locations:
// everything else stays byte-identical.
//
// # What it refuses
//
// It fails closed. Any use of a PHI column that would make PostgreSQL
// compute on, compare with or receive plaintext (LIKE, ranges, ORDER BY,
// GROUP BY, DISTINCT, functions, operators and casts on the column, INSERT
// ... SELECT into or out of it, MERGE, COPY other than FROM STDIN and TO
// STDOUT in text or CSV (copy.go), writable CTEs and SELECT INTO
// on PHI tables, SQL-level PREPARE), a column reference it cannot resolve
// with certainty, and text pg_query cannot parse are rejected. Error
// messages name tables, columns and constructs, never literal values.
//
// The classes of issue 9 that are about SQL analysis, each refused as a
// class (testdata/failclosed.txt has each form and the harmless ones):
//
//   - DDL that makes the server store or compute a value in a PHI or
//     blind-index column (ddl.go): DEFAULT (CREATE TABLE, ADD COLUMN, where
//     it also lands in pg_attribute.attmissingval, SET DEFAULT, with ONLY,
//     IF EXISTS and any number of subcommands), generated and identity
//     columns, SET EXPRESSION, ALTER COLUMN TYPE to anything but the storage
//     type or USING anything but the column itself, a declared type other
//     than the storage type (a domain carries defaults and checks), CREATE
//     TABLE (LIKE ...) or OF a type for a policy table, CREATE TABLE AS /
//     SELECT INTO / CREATE MATERIALIZED VIEW named like a policy table, and
//     a stored definition (CHECK, index predicate, policy, publication row
//     filter, trigger WHEN) that compares a PHI column with a value, and a
//     FOREIGN KEY from or to a PHI or blind-index column (ON UPDATE CASCADE
//     would write another table's plaintext into it).
//     Harmless and passed: DEFAULT NULL, DROP DEFAULT / EXPRESSION /
//     IDENTITY, TYPE <storage type> [USING col[::type]] (how an operator
//     prepares a table for `phiproxy migrate encrypt`), plain CHECKs,
//     indexes and statistics on PHI columns (ciphertext only), CREATE TABLE
//     x (LIKE patients) of a non-policy table (definitions, never rows),
//     COMMENT ON and SECURITY LABEL (no column values).
//   - Names the rewriter does not resolve (scope.go, select.go): column
//     alias lists it cannot map exactly (no catalog, a renamed blind-index
//     column, a join or a subquery `*` of unknown order), a PHI column's real
//     name hidden by an alias, and every whole-row reference to a relation
//     holding PHI ((p).city, (p.*).ssn, city(p), p::text, to_jsonb(p),
//     row_to_json(p), SELECT p, ROW(p.*), f(p.*), count(p.*), GROUP BY p,
//     EXCLUDED as a row): the row carries ciphertext. Only a top-level `*`
//     or `p.*` in a SELECT or RETURNING list is expanded and allowed.
//   - Second names for a policy table (ddl.go, stmt.go): views, rules,
//     inheritance and partitions (PARTITION OF, INHERITS, ATTACH PARTITION,
//     foreign partitions), foreign tables named like a policy table or with
//     an option naming one (table_name in any spelling the parser decodes),
//     IMPORT FOREIGN SCHEMA of a policy table's schema that includes it,
//     CREATE / ALTER SUBSCRIPTION (replicated rows bypass phiproxy),
//     renaming or moving a relation into a policy table's name (in any
//     schema), ALTER SCHEMA ... RENAME from or to a policy table's schema,
//     creating a relation named like a policy table in another schema or
//     as a temporary one (it would shadow the unqualified name, which the
//     rewriter resolves by the policy, not by search_path), CREATE SCHEMA
//     elements naming a relation like a policy table (the others go
//     through the statement rules), triggers on
//     a policy table with transition tables, functions returning or taking
//     a policy table's rows, and dblink (a second connection around
//     phiproxy), and table_to_xml, schema_to_xml, database_to_xml,
//     cursor_to_xml and their xmlschema siblings (whole rows, ciphertext as
//     values). Harmless and passed: CREATE PUBLICATION (it ships what is
//     stored, ciphertext), CREATE STATISTICS, COMMENT ON, SECURITY LABEL,
//     CREATE SCHEMA without elements, ALTER SCHEMA ... OWNER TO.
//   - INSERT and UPDATE target columns a policy table does not have (a
//     typo, "City", patients.city, p.city) are refused before anything is
//     sent, as 42703 with PostgreSQL's message when the Catalog lists the
//     columns (dml.go); the server would log the text with its values
//     before rejecting it.
//   - Code the server runs later (body.go): DO blocks and LANGUAGE plpgsql
//     and sql functions are parsed (pg_query's PL/pgSQL parser) and each
//     statement and expression in them must pass the rules above and need
//     no rewriting; dynamic SQL must be a string constant, which is
//     analysed the same way (EXECUTE, FOR ... IN EXECUTE, RETURN QUERY
//     EXECUTE, OPEN ... FOR EXECUTE, query_to_xml(), ts_stat()); other
//     languages, fields of variables named like PHI columns, whole record
//     variables, trigger functions that write NEW or return anything but
//     NEW, OLD or NULL, string constants with backslashes, and SET of the
//     settings that change how literals are read are refused. CREATE
//     TRIGGER ... EXECUTE FUNCTION is allowed on any table: a function
//     created through phiproxy was checked, one created elsewhere is the
//     operator's.
//
// What stays outside the rewriter's sight: objects created directly on the
// server (a view, function, rule or domain phiproxy never saw) and a domain
// named text placed before pg_catalog in search_path; the proxy's catalog
// read is the place to notice those (issue 9, item 4).
//
// # Invariants
//
// No I/O, no keys. Plans are immutable and shared through Cache, which is
// keyed by the exact text. Texts that name no policy table and none of the
// keywords of scan.go (DO, FUNCTION, FOREIGN, ...) (a case-insensitive byte
// scan) pass through without being parsed. For the simple protocol
// Plan.SQL is a template: each Literal's byte range holds the placeholder
// $0 until the proxy splices the transformed literal in, so an unspliced
// template fails at the server instead of writing anything.
//
// # Lexing
//
// pg_query parses every text as a server with standard_conforming_strings
// on and client_encoding UTF8 would. Lex is a Go transcription of
// PostgreSQL 17's scanner (scan.l) that also knows the session's settings:
// the simple-protocol path uses it to find and decode string literals
// without cgo (AnalyzeSimpleWith), and hands pg_query only texts that read
// the same under the default settings. It is exact for client encodings
// UTF8, SQL_ASCII, every single-byte encoding, the EUC encodings, and the
// client-only SJIS, BIG5, GBK, UHC, GB18030 and JOHAB (stepping over whole
// characters, whose ASCII trailing bytes are no quotes or backslashes);
// it refuses SHIFT_JIS_2004 and MULE_INTERNAL, and non-ASCII dollar-quote
// tags in multibyte encodings other than UTF8 (lex_encoding.go says why).
// FuzzLexMatchesScan compares it with pg_query's Scan; integration tests
// compare it with a real server under each setting.
package rewrite
