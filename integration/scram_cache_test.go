package integration

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// TestSCRAMKeyCache: in auto mode a reconnecting client reuses the SCRAM
// keys derived from its password (no PBKDF2), and the cache never lets a
// login through that PostgreSQL would refuse: a wrong password misses; a
// password changed with a new salt misses; a password changed behind the
// same salt hits, is refused by the server and drops the entry; ReloadAuth
// empties the cache.
func TestSCRAMKeyCache(t *testing.T) {
	authRoles(t)
	ctx := context.Background()
	su := superuser(t)
	setPassword := func(t *testing.T, pw string) {
		t.Helper()
		if _, err := su.Exec(ctx, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", cacheRole.Name, pw)); err != nil {
			t.Fatal(err)
		}
	}
	setPassword(t, cacheRole.Password)
	p, reg := startProxyReg(t)
	counts := func() (hit, miss float64) {
		return metricValue(t, reg, "phiproxy_scram_key_cache_lookups_total", "hit"),
			metricValue(t, reg, "phiproxy_scram_key_cache_lookups_total", "miss")
	}
	login := func(pw string) string {
		r := cacheRole
		r.Password = pw
		return tryConnect(t, p.dsn(r, "postgres"))
	}
	expect := func(t *testing.T, pw, wantErr string, wantHit, wantMiss float64) {
		t.Helper()
		h0, m0 := counts()
		if got := login(pw); got != wantErr {
			t.Fatalf("login: %q, want %q", got, wantErr)
		}
		h, m := counts()
		if h-h0 != wantHit || m-m0 != wantMiss {
			t.Fatalf("cache hits +%v misses +%v, want +%v +%v", h-h0, m-m0, wantHit, wantMiss)
		}
	}
	refused := fmt.Sprintf("FATAL 28P01 password authentication failed for user %q", cacheRole.Name)

	expect(t, cacheRole.Password, "", 0, 1)
	expect(t, cacheRole.Password, "", 1, 0)
	expect(t, cacheRole.Password, "", 1, 0)
	t.Run("wrong password misses", func(t *testing.T) {
		expect(t, "wrong", refused, 0, 1)
		expect(t, cacheRole.Password+" ", refused, 0, 1)
		expect(t, cacheRole.Password, "", 1, 0) // the wrong ones did not evict it
	})
	t.Run("ReloadAuth empties it", func(t *testing.T) {
		if err := p.srv.ReloadAuth(); err != nil {
			t.Fatal(err)
		}
		expect(t, cacheRole.Password, "", 0, 1)
	})
	t.Run("same salt, new password: the server decides", func(t *testing.T) {
		var secret string
		if err := su.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", cacheRole.Name).Scan(&secret); err != nil {
			t.Fatal(err)
		}
		setPassword(t, scramSecretWithSalt(t, secret, "cache-secret-2"))
		expect(t, cacheRole.Password, refused, 1, 0) // cached keys, refused upstream
		expect(t, cacheRole.Password, refused, 0, 1) // the entry is gone
		expect(t, "cache-secret-2", "", 0, 1)
		expect(t, "cache-secret-2", "", 1, 0)
	})
	t.Run("new password, new salt", func(t *testing.T) {
		setPassword(t, "cache-secret-3")
		expect(t, "cache-secret-2", refused, 0, 1)
		expect(t, "cache-secret-3", "", 0, 1)
		expect(t, "cache-secret-3", "", 1, 0)
	})
	if logs := p.logs.String(); strings.Contains(logs, "cache-secret") {
		t.Errorf("a password reached the proxy log:\n%s", logs)
	}
}

// scramSecretWithSalt is the SCRAM secret of password with the salt and
// iteration count of secret (what ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$…'
// accepts).
func scramSecretWithSalt(t *testing.T, secret, password string) string {
	t.Helper()
	rest, _ := strings.CutPrefix(secret, "SCRAM-SHA-256$")
	iterSalt, _, _ := strings.Cut(rest, "$")
	iterS, saltB64, _ := strings.Cut(iterSalt, ":")
	iter, err := strconv.Atoi(iterS)
	if err != nil {
		t.Fatalf("secret %q", secret)
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		t.Fatal(err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(msg string) []byte { m := hmac.New(sha256.New, salted); m.Write([]byte(msg)); return m.Sum(nil) }
	stored := sha256.Sum256(mac("Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, saltB64, b64(stored[:]), b64(mac("Server Key")))
}
