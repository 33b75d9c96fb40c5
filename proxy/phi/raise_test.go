package phi

import (
	"testing"

	"github.com/novamind/phiproxy/proxy"
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
