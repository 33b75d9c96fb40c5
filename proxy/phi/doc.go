// Package phi is phiproxy's PHI layer: a proxy.Interceptor (Engine) that
// keeps the columns a policy marks as PHI encrypted inside PostgreSQL.
//
// Only sessions on the databases the policy governs (policy.databases; all
// of them when it names none) are intercepted; the others are relayed
// untouched. A governed session first reads the catalog of the policy's
// tables (catalog.go: OIDs, attribute numbers, storage types, and the
// problems that make a table unfit for service: missing, not a table, not
// ready, or reachable under a second name, problem.go) on its own
// connection, before the client can send anything, and reads it again
// after DDL, a refusal, or a change another connection made (reload.go).
// In front of every batch that relies on the catalog goes the catalog
// guard (guard.go), a statement PostgreSQL fails when the catalog changed,
// so nothing runs on a stale one. The engine reports the problems to
// /readyz (Ready) and exports them for `phiproxy check` (inspect.go). Then,
// on clientToServer (query.go, handlers.go):
//
//   - Query and Parse texts go through the rewriter's plan cache
//     (rewrite.Cache, one per distinct catalog). Texts that name no policy
//     table pass through as raw bytes after a byte scan.
//   - PHI literals are spliced into the rewritten text as ciphertext or
//     blind-index literals; Parse declares the storage type for PHI
//     parameters; Bind values are read in the client's format and type,
//     canonicalized (values.go), then encrypted or indexed (writer.go).
//   - Values are read exactly as PostgreSQL 15 reads them: datetime.go,
//     numeric.go, jsonb.go, scalars.go and arrays.go port its input and
//     output functions, so what the server accepts is stored as it would
//     store it and what it rejects fails with its SQLSTATE. A value of
//     another type than the column's (declared in Parse, cast, or a
//     literal's own) is converted as the server's casts and operators
//     convert it, or refused as the server refuses it (declared.go). What
//     depends on DateStyle and TimeZone is read under the settings the
//     server last reported, and refused while a statement that may change
//     them is in flight (settings.go).
//   - Prepared statements are tracked by the server's answers, never by
//     what the client asked (statements.go): a Bind whose statement cannot
//     be known is refused rather than guessed.
//   - A statement the proxy refuses is made to fail on the server (raise.go),
//     so a transaction block is aborted exactly as by a server error.
//   - COPY FROM STDIN data (copyin.go, through proxy.CopyInterceptor) is
//     read row by row as PostgreSQL reads it (copyread.go), its PHI values
//     checked, encrypted and indexed, and sent on in the server's default
//     text format; a row the proxy cannot take fails the COPY with
//     CopyFail, so nothing of it is stored.
//
// And on serverToClient, through each expectation's Responder (result.go):
//
//   - ParameterDescription shows the types the client declared (else a
//     cast's, else the logical type) and RowDescription the logical types;
//     blind-index columns are hidden. Rows are decrypted by the table OID
//     and attribute number that PostgreSQL reports for each column, never by
//     query shape, and encoded in the format the client asked for. When a
//     client executes a portal it never described, the proxy describes it
//     itself (a hidden expectation) to learn where its columns come from.
//     A SQL cursor's portal, which the client never bound, is described and
//     executed the same way; the cursors declared over policy tables are
//     remembered by name until PostgreSQL drops them (cursor.go).
//   - A value that fails to decrypt ends that result with XX001 naming the
//     column; the session goes on.
//   - COPY TO STDOUT rows (copyout.go, a proxy.CopyTransformer) are
//     decrypted as DataRows are and written in the client's format; the
//     COPY's Responder (copy.go) rewrites its CopyInResponse and
//     CopyOutResponse for the client's columns, and the server's answer to
//     a CopyFail of the proxy's into the client's error.
//
// Per-role access (access.go) and the audit trail (audit.go) ride on both
// paths: the session's roles, read at its start, decide per column whether
// it reads plaintext, a mask or nothing, and whether it may search; every
// statement that reads, writes or searches PHI, and every refusal, gives
// one audit record, made by a Responder around the statement's result.
//
// # Invariants
//
//   - No PHI plaintext is sent upstream: a value bound for a policy column
//     is encrypted or indexed, or the statement is refused.
//   - No statement that relies on the catalog runs, and no result is
//     decrypted, unless the server's catalog is the session's (the guard),
//     up to the documented window of the simple protocol (guard.go).
//   - A policy table with a problem is refused (55000, with its fix), and
//     so is every statement naming a second name for it.
//   - Errors, logs and audit records name tables, columns, types and
//     SQLSTATEs, never values or SQL text (errors.go, audit.go).
//   - A value is exact or refused: the proxy never stores or shows a value
//     other than the one PostgreSQL would, and a blind index is computed
//     from the value's equality key (values.go), so = means what it means
//     on the server.
//   - Keys are resolved once per column at startup (keys.go); nothing on
//     the per-value path derives a key or calls a KMS.
package phi
