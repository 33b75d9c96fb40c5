// Package proxy is phiproxy's PostgreSQL wire-protocol proxy: listeners, TLS
// both ways, the startup and authentication relay, one Session per client
// connection with its own upstream connection, protocol state, cancel
// requests, metrics and health endpoints.
//
// # Message flow
//
// A session has two goroutines, clientToServer and serverToClient. Messages
// that need no change are forwarded as raw bytes, never decoded; writes are
// buffered and flushed when the reading side has nothing more buffered. The
// two directions share one FIFO of expectations (expect.go): each frontend
// message that the server answers pushes an entry, and each response pops
// or updates the head. That is what lets later stages attach result
// transformations to the right statement under pipelining.
//
// # PHI (WithPHI)
//
// With a policy, each session first reads the catalog of the policy's
// tables (catalog.go: OIDs, attribute numbers, storage types), invisibly to
// the client, and reads it again after DDL at the next idle moment. Then:
//
//   - Query and Parse texts go through the rewriter's plan cache
//     (rewrite.Cache, one per distinct catalog). Texts that name no policy
//     table pass through as raw bytes after a byte scan.
//   - PHI literals are spliced into the rewritten text as ciphertext or
//     blind-index literals; Parse declares the storage type for PHI
//     parameters; Bind values are read in the client's format and type,
//     canonicalized (values.go), then encrypted or indexed (phi_values.go).
//   - ParameterDescription and RowDescription show the logical types;
//     blind-index columns are hidden. Rows are decrypted by the table OID and
//     attribute number that PostgreSQL reports for each column, never by
//     query shape, and encoded in the format the client asked for. When a
//     client executes a portal it never described, the proxy describes it
//     itself (a hidden expectation) to learn where its columns come from.
//   - A statement the proxy refuses is made to fail on the server (raise.go),
//     so a transaction block is aborted exactly as by a server error.
//   - A value that fails to decrypt ends that result with XX001 naming the
//     column; the session goes on.
//
// # What it refuses
//
//   - plaintext clients, unless listen.tls.allow_plaintext;
//   - plaintext to the upstream unless upstream.tls.mode is disable: no
//     fallback when the server refuses TLS;
//   - SCRAM-SHA-256-PLUS towards the client (channel binding cannot survive
//     TLS termination), GSSAPI/SSPI authentication;
//   - malformed or oversized messages: FATAL 08P01, that session only.
//
// # Invariants
//
//   - Nothing logged carries message contents, query text, parameter
//     values or passwords.
//   - No PHI plaintext is sent upstream: a value bound for a policy column
//     is encrypted or indexed, or the statement is refused.
//   - A panic in a session ends that session only.
//   - Every client-facing error comes from toErrorResponse.
package proxy
