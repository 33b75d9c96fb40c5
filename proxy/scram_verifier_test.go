package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgerrcode"
)

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// testSecret is the secret PostgreSQL stores for password with a random
// salt, and the keys a client derives from the password.
func testSecret(t testing.TB, password string) (*scramSecret, scramKeys) {
	t.Helper()
	salt := make([]byte, 16)
	rand.Read(salt)
	keys, err := passwordKeys(password, salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	v, err := parseSCRAMSecret("SCRAM-SHA-256$4096:" + b64(salt) + "$" + b64(sha256Sum(keys.ClientKey[:])) + ":" + b64(keys.ServerKey[:]))
	if err != nil {
		t.Fatal(err)
	}
	return v, keys
}

// TestSCRAMServer runs the proxy's SCRAM server (verifier mode, facing the
// client) against the proxy's SCRAM client, over every channel-binding
// combination and the failures PostgreSQL reports.
func TestSCRAMServer(t *testing.T) {
	secret, keys := testSecret(t, "correct horse")
	_, wrongKeys := testSecret(t, "wrong horse")
	proxyCert := sha256Sum([]byte("the proxy's certificate"))
	mitmCert := sha256Sum([]byte("a man in the middle's certificate"))

	type tc struct {
		name      string
		secret    *scramSecret // nil: no such role
		offerPlus []byte       // the proxy's cbData (nil: -PLUS not offered)
		mechanism string
		gs2       string
		clientCB  []byte // what the client binds to
		keys      scramKeys
		// wantCode is the SQLSTATE of the *LoginError; "proof" for
		// errSCRAMProof; "" for success.
		wantCode string
		wantMsg  string
		atFirst  bool // fails at client-first
	}
	cases := []tc{
		{name: "PLUS bound to the proxy", secret: secret, offerPlus: proxyCert, mechanism: scramPlus, gs2: "p=tls-server-end-point,,", clientCB: proxyCert, keys: keys},
		{name: "no channel binding support (n)", secret: secret, offerPlus: proxyCert, mechanism: scramSHA256, gs2: "n,,", keys: keys},
		{name: "y when -PLUS not offered", secret: secret, mechanism: scramSHA256, gs2: "y,,", keys: keys},
		{name: "y when -PLUS offered: downgrade", secret: secret, offerPlus: proxyCert, mechanism: scramSHA256, gs2: "y,,", keys: keys,
			wantCode: pgerrcode.InvalidAuthorizationSpecification, wantMsg: "SCRAM channel binding negotiation error", atFirst: true},
		{name: "bound to another certificate", secret: secret, offerPlus: proxyCert, mechanism: scramPlus, gs2: "p=tls-server-end-point,,", clientCB: mitmCert, keys: keys,
			wantCode: pgerrcode.InvalidAuthorizationSpecification, wantMsg: "SCRAM channel binding check failed"},
		{name: "PLUS not offered", secret: secret, mechanism: scramPlus, gs2: "p=tls-server-end-point,,", clientCB: proxyCert, keys: keys,
			wantCode: pgerrcode.ProtocolViolation, wantMsg: "client selected an invalid SASL authentication mechanism", atFirst: true},
		{name: "PLUS without binding data", secret: secret, offerPlus: proxyCert, mechanism: scramPlus, gs2: "n,,", keys: keys,
			wantCode: pgerrcode.ProtocolViolation, wantMsg: "malformed SCRAM message", atFirst: true},
		{name: "binding data without PLUS", secret: secret, offerPlus: proxyCert, mechanism: scramSHA256, gs2: "p=tls-server-end-point,,", clientCB: proxyCert, keys: keys,
			wantCode: pgerrcode.ProtocolViolation, wantMsg: "malformed SCRAM message", atFirst: true},
		{name: "unsupported binding type", secret: secret, offerPlus: proxyCert, mechanism: scramPlus, gs2: "p=tls-unique,,", clientCB: proxyCert, keys: keys,
			wantCode: pgerrcode.ProtocolViolation, wantMsg: "unsupported SCRAM channel-binding type", atFirst: true},
		{name: "authorization identity", secret: secret, mechanism: scramSHA256, gs2: "n,a=admin,", keys: keys,
			wantCode: pgerrcode.FeatureNotSupported, atFirst: true},
		{name: "wrong password", secret: secret, offerPlus: proxyCert, mechanism: scramPlus, gs2: "p=tls-server-end-point,,", clientCB: proxyCert, keys: wrongKeys, wantCode: "proof"},
		{name: "no such role, right keys", secret: nil, offerPlus: proxyCert, mechanism: scramPlus, gs2: "p=tls-server-end-point,,", clientCB: proxyCert, keys: keys, wantCode: "proof"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			salt, iter := secret.salt, secret.iterations
			sv, err := newSCRAMServer(c.secret, salt, iter, c.offerPlus)
			if err != nil {
				t.Fatal(err)
			}
			cl := &scramClient{mechanism: c.mechanism, gs2: c.gs2, cbData: c.clientCB}
			first, err := cl.clientFirst()
			if err != nil {
				t.Fatal(err)
			}
			check := func(err error) {
				t.Helper()
				switch c.wantCode {
				case "proof":
					if !errors.Is(err, errSCRAMProof) {
						t.Fatalf("got %v, want errSCRAMProof", err)
					}
				default:
					var le *LoginError
					if !errors.As(err, &le) || le.Code != c.wantCode || (c.wantMsg != "" && le.Message != c.wantMsg) {
						t.Fatalf("got %v, want LoginError %s %q", err, c.wantCode, c.wantMsg)
					}
				}
			}
			serverFirstMsg, err := sv.clientFirst(c.mechanism, first)
			if c.atFirst {
				check(err)
				return
			}
			if err != nil {
				t.Fatalf("client-first: %v", err)
			}
			sf, err := cl.parseServerFirst(serverFirstMsg)
			if err != nil {
				t.Fatalf("server-first %q: %v", serverFirstMsg, err)
			}
			if !bytes.Equal(sf.salt, salt) || sf.iterations != iter {
				t.Fatalf("server-first %q does not carry the server's salt and iterations", serverFirstMsg)
			}
			final, err := cl.clientFinal(sf, &c.keys)
			if err != nil {
				t.Fatal(err)
			}
			clientKey, serverFinal, err := sv.clientFinal(final)
			if c.wantCode != "" {
				check(err)
				if clientKey != ([32]byte{}) {
					t.Error("a failed exchange returned a ClientKey")
				}
				return
			}
			if err != nil {
				t.Fatalf("client-final: %v", err)
			}
			if clientKey != keys.ClientKey {
				t.Fatal("recovered ClientKey differs from the client's")
			}
			if err := cl.verifyServerFinal(serverFinal); err != nil {
				t.Fatalf("the client refuses the proxy's server signature: %v", err)
			}
		})
	}
}

// TestSCRAMServerMalformed: the client-final checks of auth-scram.c.
func TestSCRAMServerMalformed(t *testing.T) {
	secret, keys := testSecret(t, "pw")
	// Each case gets a fresh exchange and builds its message from the
	// well-formed client-final-message (without proof, proof) and nonce.
	cases := map[string]func(withoutProof, proof, nonce string) string{
		"empty":          func(w, p, n string) string { return "" },
		"NUL":            func(w, p, n string) string { return w + "\x00,p=" + p },
		"no proof":       func(w, p, n string) string { return w },
		"short proof":    func(w, p, n string) string { return w + ",p=AAAA" },
		"garbage after":  func(w, p, n string) string { return w + ",p=" + p + ",x=1" },
		"wrong cbind":    func(w, p, n string) string { return "c=eSws,r=" + n + ",p=" + p },
		"nonce mismatch": func(w, p, n string) string { return "c=biws,r=" + n + "x,p=" + p },
		"first not c":    func(w, p, n string) string { return "r=" + n + ",p=" + p },
		"bad attribute":  func(w, p, n string) string { return w + ",1=x,p=" + p },
		"extension":      func(w, p, n string) string { return w + ",x=ext,p=" + p },
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			sv, _ := newSCRAMServer(secret, secret.salt, secret.iterations, nil)
			cl := &scramClient{mechanism: scramSHA256, gs2: "n,,"}
			first, _ := cl.clientFirst()
			sfm, err := sv.clientFirst(scramSHA256, first)
			if err != nil {
				t.Fatal(err)
			}
			sf, err := cl.parseServerFirst(sfm)
			if err != nil {
				t.Fatal(err)
			}
			good, _ := cl.clientFinal(sf, &keys)
			withoutProof, proof, _ := strings.Cut(string(good), ",p=")
			_, _, err = sv.clientFinal([]byte(build(withoutProof, proof, sf.nonce)))
			if name == "extension" {
				// Extensions are ignored, but the proof covers them: the
				// message parses and fails as a wrong proof.
				if !errors.Is(err, errSCRAMProof) {
					t.Fatalf("got %v, want errSCRAMProof", err)
				}
				return
			}
			var le *LoginError
			if !errors.As(err, &le) || le.Code != pgerrcode.ProtocolViolation {
				t.Fatalf("got %v, want 08P01", err)
			}
		})
	}
}

// FuzzSCRAMServer: arbitrary client messages never panic the SCRAM server
// and never authenticate without the key.
func FuzzSCRAMServer(f *testing.F) {
	f.Add([]byte("n,,n=,r=abc"), []byte("c=biws,r=abcdef,p=AAAA"))
	f.Add([]byte("p=tls-server-end-point,,n=,r=abc"), []byte("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=abc,p="))
	f.Add([]byte("y,,n=u,r=x,ext=1"), []byte(",,,,"))
	secret, _ := testSecret(f, "fuzz")
	cb := sha256Sum([]byte("cert"))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		for _, mech := range []string{scramSHA256, scramPlus} {
			sv, _ := newSCRAMServer(secret, secret.salt, secret.iterations, cb)
			if _, err := sv.clientFirst(mech, first); err != nil {
				continue
			}
			if _, _, err := sv.clientFinal(final); err == nil {
				t.Fatalf("authenticated a fuzzed exchange: %q %q", first, final)
			}
		}
	})
}

func TestParseSCRAMSecret(t *testing.T) {
	secret, _ := testSecret(t, "x")
	good := "SCRAM-SHA-256$4096:" + b64(secret.salt) + "$" + b64(secret.storedKey[:]) + ":" + b64(secret.serverKey[:])
	if _, err := parseSCRAMSecret(good); err != nil {
		t.Fatalf("good secret: %v", err)
	}
	for _, bad := range []string{
		"", "md5" + strings.Repeat("0", 32), "plaintext",
		"SCRAM-SHA-256$0:" + b64(secret.salt) + "$" + b64(secret.storedKey[:]) + ":" + b64(secret.serverKey[:]),
		"SCRAM-SHA-256$4096:$" + b64(secret.storedKey[:]) + ":" + b64(secret.serverKey[:]),
		"SCRAM-SHA-256$4096:" + b64(secret.salt) + "$" + b64(secret.storedKey[:4]) + ":" + b64(secret.serverKey[:]),
		"SCRAM-SHA-256$4096:" + b64(secret.salt) + "$" + b64(secret.storedKey[:]),
		"SCRAM-SHA-256$x:" + b64(secret.salt) + "$" + b64(secret.storedKey[:]) + ":" + b64(secret.serverKey[:]),
	} {
		if _, err := parseSCRAMSecret(bad); !errors.Is(err, errNotSCRAM) {
			t.Errorf("parseSCRAMSecret(%q) = %v, want errNotSCRAM", bad, err)
		}
	}
	// Secrets never print.
	for _, s := range []string{secret.String(), secret.GoString()} {
		if strings.Contains(s, b64(secret.salt)) || !strings.Contains(s, "REDACTED") {
			t.Errorf("secret prints as %q", s)
		}
	}
}

func TestRoleName(t *testing.T) {
	for in, want := range map[string]string{
		"app":                   "app",
		strings.Repeat("b", 63): strings.Repeat("b", 63),
		strings.Repeat("b", 70): strings.Repeat("b", 63),
		// Bytes, not characters, as PostgreSQL cuts.
		strings.Repeat("a", 62) + "éxyz": strings.Repeat("a", 62) + "\xc3",
	} {
		if got := roleName(in); got != want {
			t.Errorf("roleName(%q) = %q, want %q", in, got, want)
		}
	}
}
