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
