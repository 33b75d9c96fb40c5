package proxy

import (
	"encoding/base64"
	"errors"
	"testing"
)

// TestSCRAMClientRFC7677 checks the SCRAM-SHA-256 client, and the key
// derivation of the auto mode, against the test vector of RFC 7677
// section 3.
func TestSCRAMClientRFC7677(t *testing.T) {
	c := &scramClient{mechanism: "SCRAM-SHA-256", gs2: "n,,", user: "user", clientNonce: "rOprNGfwEbeRWgbNEkqO"}
	first, err := c.clientFirst()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(first), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"; got != want {
		t.Errorf("client-first %q, want %q", got, want)
	}
	sf, err := c.parseServerFirst([]byte("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := passwordKeys(normalizeSCRAMPassword("pencil"), sf.salt, sf.iterations)
	if err != nil {
		t.Fatal(err)
	}
	final, err := c.clientFinal(sf, &keys)
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
	c.serverKey = keys.ServerKey // verifyServerFinal wipes it
	var ae *AuthError
	if err := c.verifyServerFinal([]byte("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")); !errors.As(err, &ae) {
		t.Errorf("forged server signature: %v, want *AuthError", err)
	}
	if _, err := c.parseServerFirst([]byte("r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")); err == nil {
		t.Error("server nonce not extending the client's was accepted")
	}
	for _, bad := range []string{
		"r=rOprNGfwEbeRWgbNEkqOxx,s=,i=4096",
		"r=rOprNGfwEbeRWgbNEkqOxx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
		"r=rOprNGfwEbeRWgbNEkqOxx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999",
		"r=rOprNGfwEbeRWgbNEkqOxx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=16777217",
	} {
		if _, err := c.parseServerFirst([]byte(bad)); err == nil {
			t.Errorf("server-first %q accepted", bad)
		}
	}
	// The secret PostgreSQL would store for "pencil" with this salt holds
	// the same keys.
	secret := "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + b64(sha256Sum(keys.ClientKey[:])) + ":" + b64(keys.ServerKey[:])
	v, err := parseSCRAMSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	if v.serverKey != keys.ServerKey || v.iterations != 4096 {
		t.Error("parsed secret does not hold the derived keys")
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
