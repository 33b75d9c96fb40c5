package proxy

import (
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
)

// ErrShuttingDown ends sessions that outlive the drain timeout.
var ErrShuttingDown = errors.New("phiproxy is shutting down")

// errTLSRequired refuses a plaintext client when allow_plaintext is off.
var errTLSRequired = errors.New("phiproxy requires TLS: connect with sslmode=require or stronger")

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

// UnsupportedError is a request the proxy refuses by design (fail closed).
// It is answered with a non-fatal ERROR; the session continues.
type UnsupportedError struct{ Msg string }

func (e *UnsupportedError) Error() string { return e.Msg }

// panicError wraps a recovered panic. Its value is logged by the session,
// never sent to the client.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// toErrorResponse is the one place that maps proxy errors to what the client
// sees. Known errors get their SQLSTATE and a client-safe message; anything
// else is XX000 "internal error" (the session logs the details under its
// conn_id). fatal reports whether the session ends after sending it.
func toErrorResponse(err error) (resp *pgproto3.ErrorResponse, fatal bool) {
	resp = &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL"}
	var (
		pe *ProtocolError
		ue *UpstreamError
		ae *AuthError
		un *UnsupportedError
	)
	var de *DecryptError
	switch {
	case errors.As(err, &de):
		resp.Severity, resp.SeverityUnlocalized = "ERROR", "ERROR"
		resp.Code, resp.Message = pgerrcode.DataCorrupted, "phiproxy: "+de.Error()
		return resp, false
	case errors.As(err, &un):
		resp.Severity, resp.SeverityUnlocalized = "ERROR", "ERROR"
		resp.Code, resp.Message = pgerrcode.FeatureNotSupported, un.Msg
		return resp, false
	case errors.As(err, &pe):
		resp.Code = pgerrcode.ProtocolViolation
		if pe.Server {
			resp.Message = "phiproxy: the database server broke the protocol"
		} else {
			resp.Message = "phiproxy: " + pe.Msg
		}
	case errors.Is(err, errTLSRequired):
		resp.Code, resp.Message = pgerrcode.InvalidAuthorizationSpecification, errTLSRequired.Error()
	case errors.As(err, &ae):
		resp.Code, resp.Message = pgerrcode.InvalidAuthorizationSpecification, "phiproxy: "+ae.Msg
	case errors.As(err, &ue):
		if ue.Connected {
			resp.Code, resp.Message = pgerrcode.ConnectionFailure, "phiproxy: connection to the database server was lost"
		} else {
			resp.Code, resp.Message = pgerrcode.SQLClientUnableToEstablishSQLConnection, "phiproxy: could not connect to the database server"
		}
	case errors.Is(err, ErrShuttingDown):
		resp.Code, resp.Message = pgerrcode.AdminShutdown, "phiproxy: terminating connection because the proxy is shutting down"
	default:
		resp.Code, resp.Message = pgerrcode.InternalError, "phiproxy: internal error"
	}
	return resp, true
}

// appendErrorResponse appends err as a client-safe ErrorResponse.
func appendErrorResponse(dst []byte, err error) (out []byte, fatal bool) {
	resp, fatal := toErrorResponse(err)
	out, encErr := resp.Encode(dst)
	if encErr != nil {
		// Encode fails only on a message larger than the protocol allows,
		// which our fixed texts never are.
		return dst, fatal
	}
	return out, fatal
}
