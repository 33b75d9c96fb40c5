// Package proxy is phiproxy's PostgreSQL wire-protocol relay: listeners,
// TLS both ways, the startup and authentication relay, one Session per
// client connection with its own upstream connection, the FIFO of
// expectations, cancel requests, relay metrics and health endpoints. It
// knows the protocol, not what the messages mean: it imports nothing of
// phiproxy's SQL analysis, cryptography or policy.
//
// # Message flow
//
// A session has two goroutines, clientToServer and serverToClient. Messages
// that need no change are forwarded as raw bytes, never decoded; writes are
// buffered and flushed when the reading side has nothing more buffered. The
// two directions share one FIFO of expectations (expect.go): each message
// sent upstream that the server answers pushes an entry, and each response
// pops or updates the head. That is what lets a transformation follow the
// right statement under pipelining. The FIFO is bounded: a client that
// pipelines without reading its answers is not read from until the server's
// answers make room, as PostgreSQL itself does.
//
// # The seam (intercept.go)
//
// An Interceptor (WithInterceptor; proxy/phi is the one phiproxy uses)
// starts each session's SessionInterceptor after authentication, before the
// client has its first ReadyForQuery, so it may run its own queries
// (Conn.Query) before the client can send or cancel anything. The
// interceptor then handles every Query, Parse, Bind, Describe, Execute and
// Close: it sends upstream what it wants (Conn.Send), each with an
// Expectation whose Responder rewrites the server's answers on their way
// back (RowDescription, DataRow, ParameterDescription, ErrorResponse) and
// learns how the server answered (Answered). Hidden expectations stand for
// messages the proxy sent itself; their answers are not forwarded, except
// errors, and the ReadyForQuery that answers a client's Query the server
// skipped after such an error. NewSession may return no SessionInterceptor
// for a session it leaves alone. An Interceptor that is a
// ReadinessChecker is asked by /readyz.
//
// serverToClient's position in the answers is a named state (s2cState):
// between results, inside a result, muted after a result failed in the
// proxy (up to ReadyForQuery), or closing after the server's FATAL.
//
// # Errors
//
// Classify is the one place that turns an error into what the client sees
// (SQLSTATE, message, hint, severity) and how metrics count it. Errors of
// other packages that reach a client implement ClientError; their texts
// are client-safe. Anything unknown is XX000 "internal error".
//
// # What it refuses
//
//   - plaintext clients, unless listen.tls.allow_plaintext;
//   - plaintext to the upstream unless upstream.tls.mode is disable: no
//     fallback when the server refuses TLS;
//   - SCRAM-SHA-256-PLUS towards the client (channel binding cannot survive
//     TLS termination), GSSAPI/SSPI authentication;
//   - malformed or oversized messages: FATAL 08P01, that session only;
//     before login, startup packets over 10,000 bytes and authentication
//     messages over 64 KiB, as PostgreSQL.
//
// # Invariants
//
//   - Nothing logged carries message contents, query text, parameter
//     values or passwords.
//   - A panic in a session ends that session only.
//   - Every client-facing error comes from Classify.
package proxy
