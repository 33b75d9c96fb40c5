package proxy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"
)

// exactError is a ClientError with every optional method.
type exactError struct{}

func (exactError) Error() string         { return "syntax error" }
func (exactError) SQLState() string      { return "42601" }
func (exactError) ClientMessage() string { return "syntax error" }
func (exactError) Hint() string          { return "Use separate LIMIT and OFFSET clauses." }
func (exactError) Reason() string        { return "syntax" }
func (exactError) ExactMessage() string  { return `syntax error at or near "Doe"` }
func (exactError) ErrorPosition() int    { return 42 }

// plainError has none of them.
type plainError struct{}

func (plainError) Error() string         { return "refused" }
func (plainError) SQLState() string      { return "0A000" }
func (plainError) ClientMessage() string { return "refused" }

// TestClassifyClientError: a ClientError's optional hint, exact message
// and position reach the client's ErrorResponse; the exact message
// replaces "phiproxy: " + ClientMessage, which stays in Message (what
// may be logged).
func TestClassifyClientError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		info ErrorInfo
		resp pgproto3.ErrorResponse
	}{
		{"exact", exactError{},
			ErrorInfo{Code: "42601", Message: "phiproxy: syntax error", Hint: "Use separate LIMIT and OFFSET clauses.", Reason: "syntax",
				Exact: `syntax error at or near "Doe"`, Position: 42},
			pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42601", Message: `syntax error at or near "Doe"`,
				Hint: "Use separate LIMIT and OFFSET clauses.", Position: 42}},
		{"plain", plainError{},
			ErrorInfo{Code: "0A000", Message: "phiproxy: refused", Reason: "other"},
			pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "0A000", Message: "phiproxy: refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := Classify(tt.err)
			if diff := cmp.Diff(tt.info, info); diff != "" {
				t.Fatalf("Classify (-want +got):\n%s", diff)
			}
			out := appendErrorResponse(nil, info)
			var got pgproto3.ErrorResponse
			if err := got.Decode(out[5:]); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.resp, got); diff != "" {
				t.Fatalf("ErrorResponse (-want +got):\n%s", diff)
			}
		})
	}
}
