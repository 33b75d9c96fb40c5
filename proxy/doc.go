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
//   - A panic in a session ends that session only.
//   - Every client-facing error comes from toErrorResponse.
package proxy
