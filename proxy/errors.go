package proxy

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
)

// ErrShuttingDown ends sessions that outlive the drain timeout.
var ErrShuttingDown = errors.New("phiproxy is shutting down")

var (
	// errTLSRequired refuses a plaintext client when allow_plaintext is off.
	errTLSRequired = errors.New("phiproxy requires TLS: connect with sslmode=require or stronger")
	// errTLSHandshake marks a failed client TLS handshake.
	errTLSHandshake = errors.New("client tls handshake failed")
	// errCancelRequest ends a connection that carried a CancelRequest.
	errCancelRequest = errors.New("cancel request")
	// errClientTerminated ends a session on the client's Terminate or EOF.
	errClientTerminated = errors.New("client terminated the session")
	// errAuthFailed: the server refused the login (its ErrorResponse was
	// relayed).
	errAuthFailed = errors.New("server refused the login")
)

// ProtocolError is a malformed, oversized or out-of-order message from a
// client (or, with Server set, from the upstream). Msg is client-safe: it
// never holds message contents.
type ProtocolError struct {
	Msg    string
	Server bool // the upstream broke the protocol, not the client
}

func (e *ProtocolError) Error() string {
	if e.Server {
		return "upstream protocol violation: " + e.Msg
	}
	return "protocol violation: " + e.Msg
}

func protocolErrorf(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

func serverProtocolErrorf(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...), Server: true}
}

// UpstreamError is a failure to reach or keep the PostgreSQL connection.
type UpstreamError struct {
	// Connected is false when the connection (TCP, TLS or its negotiation)
	// never got established, true when an established one failed.
	Connected bool
	Err       error

	unreachable bool // TCP connect failed
	tls         bool // TLS negotiation failed
	handshake   bool // the TLS handshake itself failed, within the time allowed
}

// Unreachable reports whether the upstream did not accept a TCP connection.
func (e *UpstreamError) Unreachable() bool { return e.unreachable }

func (e *UpstreamError) Error() string {
	if e.Connected {
		return "upstream connection lost: " + e.Err.Error()
	}
	return "connect to upstream: " + e.Err.Error()
}

func (e *UpstreamError) Unwrap() error { return e.Err }

// AuthError refuses an authentication method or exchange the proxy cannot
// relay. Msg is client-safe.
type AuthError struct{ Msg string }

func (e *AuthError) Error() string { return "authentication: " + e.Msg }

// LoginError is a login the proxy refuses as PostgreSQL would refuse it:
// Code, Message and Detail are what PostgreSQL sends in the same case (a
// wrong password: 28P01 `password authentication failed for user "x"`),
// without the "phiproxy:" prefix, so clients and their users see no
// difference. Message and Detail are client-safe.
type LoginError struct {
	Code    string
	Message string
	Detail  string
}

func (e *LoginError) Error() string { return "login refused: " + e.Message }

// AuthLookupError is a failure to read a role's SCRAM secret in verifier
// mode (the auth_user's connection or query failed, or timed out). The
// client is told the proxy could not authenticate it, not why.
type AuthLookupError struct{ Err error }

func (e *AuthLookupError) Error() string { return "look up SCRAM secret: " + e.Err.Error() }
func (e *AuthLookupError) Unwrap() error { return e.Err }

// clientIOError is a read or write failure on the client connection.
type clientIOError struct{ err error }

func (e *clientIOError) Error() string { return "client i/o: " + e.err.Error() }
func (e *clientIOError) Unwrap() error { return e.err }

// panicError wraps a recovered panic. Its value is logged by the session,
// never sent to the client.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// ClientError is implemented by errors of other packages (an interceptor's,
// the rewriter's) that reach a client as a non-fatal ErrorResponse.
// ClientMessage and Hint are client-safe: they name tables, columns and
// constructs, never values, SQL text or secrets.
//
// Optional methods, found by Classify:
//   - Hint() string: the HINT field (client-safe), where a refusal lists
//     the forms that are supported;
//   - Reason() string: the metrics label;
//   - ExactMessage() string: PostgreSQL's own words for the error, sent in
//     place of "phiproxy: " + ClientMessage (a syntax error's `syntax
//     error at or near "FORM"`). It may quote the client's SQL text, which
//     may hold a value: it goes to that client only, never into a log, a
//     metric, an audit record or a statement sent upstream;
//   - ErrorPosition() int: the ErrorResponse's Position (P): the 1-based
//     character position of the error in the client's query text, 0 for
//     none.
type ClientError interface {
	error
	SQLState() string
	ClientMessage() string
}

// ErrorInfo is what Classify makes of an error.
type ErrorInfo struct {
	// Code is the SQLSTATE; empty when the client is sent nothing (it
	// left, its connection failed, or it already has the server's error).
	Code    string
	Message string // client-safe
	Detail  string // client-safe, optional
	Hint    string // client-safe, optional
	// Exact, when set, is sent to the client in place of Message
	// (ClientError's ExactMessage). It may quote the client's own SQL
	// text: never log it, count it or send it upstream.
	Exact string
	// Position is the ErrorResponse's P field: the 1-based character
	// position in the client's query text, 0 for none.
	Position int32
	// Fatal: the session ends with this error. A non-fatal error answers
	// one statement and the session goes on.
	Fatal bool
	// Reason labels the error in metrics: a phiproxy_connections_total
	// outcome for fatal errors, a refusal reason (the error's Reason
	// method, else "other") for ClientErrors.
	Reason string
}

// Classify is the one place that maps errors to what the client sees and
// how metrics count them. Known errors get their SQLSTATE and a
// client-safe message; a ClientError is answered with its own; anything
// else is XX000 "internal error" (the session logs the details under its
// conn_id).
func Classify(err error) ErrorInfo {
	var (
		pe  *ProtocolError
		ue  *UpstreamError
		ae  *AuthError
		le  *LoginError
		ale *AuthLookupError
		pa  *panicError
		cio *clientIOError
		ce  ClientError
	)
	fatal := func(reason, code, msg string) ErrorInfo {
		return ErrorInfo{Code: code, Message: msg, Fatal: true, Reason: reason}
	}
	switch {
	case err == nil, errors.Is(err, errClientTerminated):
		return ErrorInfo{Fatal: true, Reason: outcomeOK}
	case errors.Is(err, errCancelRequest):
		return ErrorInfo{Fatal: true, Reason: outcomeCancel}
	case errors.As(err, &pa):
		return fatal(outcomePanic, pgerrcode.InternalError, "phiproxy: internal error")
	case errors.Is(err, ErrShuttingDown):
		return fatal(outcomeShutdown, pgerrcode.AdminShutdown, "phiproxy: terminating connection because the proxy is shutting down")
	case errors.Is(err, errAuthFailed):
		return ErrorInfo{Fatal: true, Reason: outcomeAuthFailed}
	case errors.Is(err, errTLSHandshake):
		return ErrorInfo{Fatal: true, Reason: outcomeRefused}
	case errors.Is(err, errTLSRequired):
		return fatal(outcomeRefused, pgerrcode.InvalidAuthorizationSpecification, errTLSRequired.Error())
	case errors.As(err, &le):
		reason := outcomeAuthFailed
		if le.Code == pgerrcode.ProtocolViolation {
			reason = outcomeProtocolError
		}
		info := fatal(reason, le.Code, le.Message)
		info.Detail = le.Detail
		return info
	case errors.As(err, &ale):
		return fatal(outcomeUpstreamError, pgerrcode.SQLClientUnableToEstablishSQLConnection, "phiproxy: could not look up the role's authentication secret")
	case errors.As(err, &ae):
		return fatal(outcomeRefused, pgerrcode.InvalidAuthorizationSpecification, "phiproxy: "+ae.Msg)
	case errors.As(err, &pe):
		if pe.Server {
			return fatal(outcomeProtocolError, pgerrcode.ProtocolViolation, "phiproxy: the database server broke the protocol")
		}
		return fatal(outcomeProtocolError, pgerrcode.ProtocolViolation, "phiproxy: "+pe.Msg)
	case errors.As(err, &ue):
		if ue.Connected {
			return fatal(outcomeUpstreamError, pgerrcode.ConnectionFailure, "phiproxy: connection to the database server was lost")
		}
		return fatal(outcomeUpstreamError, pgerrcode.SQLClientUnableToEstablishSQLConnection, "phiproxy: could not connect to the database server")
	case errors.As(err, &cio), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, os.ErrDeadlineExceeded):
		return ErrorInfo{Fatal: true, Reason: outcomeClientError}
	case errors.As(err, &ce):
		info := ErrorInfo{Code: ce.SQLState(), Message: "phiproxy: " + ce.ClientMessage(), Reason: "other"}
		if h, ok := ce.(interface{ Hint() string }); ok {
			info.Hint = h.Hint()
		}
		if r, ok := ce.(interface{ Reason() string }); ok {
			info.Reason = r.Reason()
		}
		if x, ok := ce.(interface{ ExactMessage() string }); ok {
			info.Exact = x.ExactMessage()
		}
		if p, ok := ce.(interface{ ErrorPosition() int }); ok {
			if pos := p.ErrorPosition(); pos > 0 && pos <= math.MaxInt32 {
				info.Position = int32(pos)
			}
		}
		return info
	}
	return fatal(outcomeInternal, pgerrcode.InternalError, "phiproxy: internal error")
}

// ClientText is the message the client is sent: Exact if set, else
// Message.
func (info ErrorInfo) ClientText() string {
	if info.Exact != "" {
		return info.Exact
	}
	return info.Message
}

// appendErrorResponse appends the ErrorResponse for info.
func appendErrorResponse(dst []byte, info ErrorInfo) []byte {
	severity := "ERROR"
	if info.Fatal {
		severity = "FATAL"
	}
	resp := pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity,
		Code: info.Code, Message: info.ClientText(), Detail: info.Detail, Hint: info.Hint, Position: info.Position}
	out, err := resp.Encode(dst)
	if err != nil {
		// Encode fails only on a message larger than the protocol allows,
		// which client-safe texts never are.
		return dst
	}
	return out
}
