package proxy

import "testing"

func TestRaiseSQL(t *testing.T) {
	got := raiseSQL("0A000", `column public.patients.email: LIKE is not supported; it's "fail closed" $phiproxy$`)
	want := `DO $phiproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'column public.patients.email: LIKE is not supported; it''s "fail closed" '; END$phiproxy$`
	if got != want {
		t.Fatalf("raiseSQL:\n got %s\nwant %s", got, want)
	}
}
