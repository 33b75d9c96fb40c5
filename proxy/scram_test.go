package proxy

import (
	"errors"
	"testing"
)

// TestSCRAMClientRFC7677 checks the SCRAM-SHA-256 client against the test
// vector of RFC 7677 section 3.
func TestSCRAMClientRFC7677(t *testing.T) {
	c := &scramClient{mechanism: "SCRAM-SHA-256", gs2: "n,,", user: "user", clientNonce: "rOprNGfwEbeRWgbNEkqO"}
	first, err := c.clientFirst()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(first), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"; got != want {
		t.Errorf("client-first %q, want %q", got, want)
	}
	serverFirst := "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	final, err := c.clientFinal([]byte(serverFirst), normalizeSCRAMPassword("pencil"))
	if err != nil {
		t.Fatal(err)
	}
	want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	if string(final) != want {
		t.Errorf("client-final\n got %s\nwant %s", final, want)
	}
	if err := c.verifyServerFinal([]byte("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); err != nil {
		t.Errorf("valid server signature refused: %v", err)
	}
	var ae *AuthError
	if err := c.verifyServerFinal([]byte("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); !errors.As(err, &ae) {
		t.Errorf("forged server signature: %v, want *AuthError", err)
	}
	if _, err := c.clientFinal([]byte("r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), "pencil"); err == nil {
		t.Error("server nonce not extending the client's was accepted")
	}
}
