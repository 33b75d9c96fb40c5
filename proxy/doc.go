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
// learns how the server answered (Answered, and with the optional
// CommandCompleter each command tag). A non-fatal error from RowDescription
// or a RowTransformer refuses that result. Hidden expectations stand for
// messages the proxy sent itself; their answers are not forwarded, except
// errors, and the ReadyForQuery that answers a client's Query the server
// skipped after such an error. NewSession may return no SessionInterceptor
// for a session it leaves alone. An Interceptor that is a
// ReadinessChecker is asked by /readyz.
// Conn tells the interceptor who the client is (User, Database,
// RemoteAddr, ClientCertSubject), for its own records.
//
// serverToClient's position in the answers is a named state (s2cState):
// between results, inside a result, muted after a result failed in the
// proxy (up to ReadyForQuery), or closing after the server's FATAL.
//
// # Authentication
//
// upstream.scram chooses how SCRAM-SHA-256 logins cross the proxy
// (scram.go): auto asks the client for its password inside TLS and runs
// SCRAM with the server, caching the derived keys (scram_password.go,
// scram_cache.go); verifier is the SCRAM server for the client with the
// role's secret and proves the client upstream with the ClientKey its proof
// reveals (scram_verifier.go, secrets.go); relay passes SCRAM through.
// listen.tls.client_cert_roles makes a verified client certificate the
// login (clientcert.go); such sessions, and only they, present the proxy's
// own client certificate upstream. A login the proxy refuses itself gets
// PostgreSQL's own SQLSTATE and message (LoginError).
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
//   - SCRAM-SHA-256-PLUS towards the client in the auto and relay modes
//     (the client's channel binding cannot survive TLS termination; the
//     verifier mode offers it, bound to the proxy's own certificate),
//     GSSAPI/SSPI authentication;
//   - in the verifier mode, a server that asks for a cleartext password
//     (pg_hba "password"): the mode never lets a password reach the proxy;
//   - with client_cert_roles, a certificate that maps to no role, or not to
//     the startup user (28000);
//   - malformed or oversized messages: FATAL 08P01, that session only;
//     before login, startup packets over 10,000 bytes and authentication
//     messages over 64 KiB, as PostgreSQL.
//
// # Invariants
//
//   - Nothing logged carries message contents, query text, parameter
//     values, passwords, SCRAM keys or secrets.
//   - No code path of the verifier mode receives a cleartext password
//     (TestVerifierModeNeverSeesAPassword checks the call graph); the key
//     cache never stores a password and never serves a login whose password
//     differs from the one the server accepted.
//   - A panic in a session ends that session only.
//   - Every client-facing error comes from Classify.
package proxy
