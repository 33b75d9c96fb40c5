package rewrite

import (
	"errors"
	"fmt"
)

// SQLSTATE codes the rewriter reports.
const (
	CodeFeatureNotSupported = "0A000" // a PHI use that cannot be rewritten safely
	CodeSyntaxError         = "42601" // pg_query could not parse the text
	CodeUndefinedParameter  = "42P02" // $0 or a $n beyond 65535 in the input
	CodeUndefinedColumn     = "42703" // a target column a policy table does not have
)

// ErrUnsupported is matched (errors.Is) by every 0A000 *Error, and
// ErrSyntax by every 42601 *Error and every error of the parser.
var (
	ErrUnsupported = errors.New("rewrite: unsupported use of a PHI column")
	ErrSyntax      = errors.New("rewrite: syntax error")
)

// Error is a rejection: the proxy answers the client with an ErrorResponse
// built from it and never forwards the statement. Message and HintText
// are client-safe: they name tables, columns and constructs, never SQL
// literal values. A refusal's Message says why in short; the forms that
// are supported instead go to HintText.
type Error struct {
	Code     string // SQLSTATE
	Message  string
	HintText string // the ErrorResponse's HINT, "" for none
	Table    string // "schema.table" of the PHI column concerned, if any
	Column   string // the column name, if any
	// Position is the 1-based character offset in the input of the
	// construct (as in ErrorResponse 'P'), 0 when unknown.
	Position int
	// Exact is PostgreSQL's own message for a text its parser refuses,
	// word for word (syntax.go): the client is sent it instead of
	// Message. It may quote the input near the error, so it is for the
	// client who sent the input alone: never logged nor sent upstream.
	Exact string

	parser bool // the parser refused the text
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code)
}

// Unwrap lets callers test the class with errors.Is.
func (e *Error) Unwrap() error {
	if e.parser {
		return ErrSyntax
	}
	switch e.Code {
	case CodeFeatureNotSupported:
		return ErrUnsupported
	case CodeSyntaxError:
		return ErrSyntax
	}
	return nil
}

// SQLState is the error's SQLSTATE.
func (e *Error) SQLState() string { return e.Code }

// ClientMessage is the message for the client: it names tables, columns and
// constructs, never values.
func (e *Error) ClientMessage() string { return e.Message }

// Hint is the ErrorResponse's HINT (proxy.ClientError).
func (e *Error) Hint() string { return e.HintText }

// ExactMessage is PostgreSQL's own message, for the client alone
// (proxy.ClientError).
func (e *Error) ExactMessage() string { return e.Exact }

// ErrorPosition is the ErrorResponse's Position (proxy.ClientError).
func (e *Error) ErrorPosition() int { return e.Position }

// Reason labels the refusal in metrics: syntax or unsupported.
func (e *Error) Reason() string {
	if e.Code == CodeSyntaxError || e.parser {
		return "syntax"
	}
	return "unsupported"
}
