package phi

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/novamind/phiproxy/policy"
	"github.com/novamind/phiproxy/proxy"
	"github.com/novamind/phiproxy/rewrite"
)

func TestRaiseSQL(t *testing.T) {
	r := raised{ErrorInfo: proxy.ErrorInfo{Code: "0A000",
		Message: `column public.patients.email: LIKE is not supported; it's "fail closed" \ $phiproxy$`,
		Hint:    "use ="}, schema: "public", table: "patients", column: "email"}
	got := raiseSQL(r)
	want := `DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = E'column public.patients.email: LIKE is not supported; it''s "fail closed" \\ ', HINT = E'use =', SCHEMA = E'public', TABLE = E'patients', COLUMN = E'email'; END$phiproxy$`
	if got != want {
		t.Fatalf("raiseSQL:\n got %s\nwant %s", got, want)
	}
}

// TestRaiseAnswer: the server's answer to a raise gets what only the
// client may see (PostgreSQL's exact message, the position) on its way
// back; the raise itself carries neither.
func TestRaiseAnswer(t *testing.T) {
	pol, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	syntax, err := rewrite.Analyze("INSERT INTO patients (email) VALUES (Pat Doe)", pol, nil)
	if err == nil {
		t.Fatalf("analyzed: %+v", syntax)
	}
	info := proxy.Classify(err)
	r := raised{ErrorInfo: info}
	if sql := raiseSQL(r); strings.Contains(sql, "Doe") || strings.Contains(sql, "at or near") {
		t.Fatalf("the raise quotes the client's text: %s", sql)
	}
	server := func(code, msg string) []byte {
		out, err := (&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: msg,
			Where: "PL/pgSQL function inline_code_block line 1 at RAISE", File: "pl_exec.c", Line: 3907, Routine: "exec_stmt_raise"}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name string
		in   []byte
		want pgproto3.ErrorResponse
	}{
		{"the raise", server("42601", info.Message),
			pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42601", Message: `syntax error at or near "Doe"`, Position: 42}},
		// PostgreSQL parses before it looks at the transaction.
		{"aborted transaction", server("25P02", "current transaction is aborted, commands ignored until end of transaction block"),
			pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42601", Message: `syntax error at or near "Doe"`, Position: 42}},
		{"a cancel", server("57014", "canceling statement due to user request"),
			pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "57014", Message: "canceling statement due to user request"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := r.answer().ErrorResponse(nil, tt.in)
			var got pgproto3.ErrorResponse
			if err := got.Decode(out[5:]); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ErrorResponse (-want +got):\n%s", diff)
			}
		})
	}
}
