package proxy

import (
	"fmt"
	"testing"
	"time"
)

// TestSCRAMKeyCache: an entry serves only the password it was made from,
// for its own role, salt and iteration count, until it expires, is evicted
// or the cache is cleared.
func TestSCRAMKeyCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newSCRAMKeyCache(2, time.Minute)
	c.now = func() time.Time { return now }
	var hits, misses int
	c.onGet = func(hit bool) {
		if hit {
			hits++
		} else {
			misses++
		}
	}
	id := scramCacheID{role: "alice", salt: "salt-1", iterations: 4096}
	keys := scramKeys{ClientKey: [32]byte{1}, ServerKey: [32]byte{2}}
	c.put(id, "s3cret", &keys)

	if got, ok := c.get(id, "s3cret"); !ok || got != keys {
		t.Fatal("the password the entry was made from misses")
	}
	for name, probe := range map[string]struct {
		id       scramCacheID
		password string
	}{
		"another password":        {id, "s3cret "},
		"empty password":          {id, ""},
		"another role":            {scramCacheID{"bob", "salt-1", 4096}, "s3cret"},
		"another salt":            {scramCacheID{"alice", "salt-2", 4096}, "s3cret"},
		"another iteration count": {scramCacheID{"alice", "salt-1", 4097}, "s3cret"},
	} {
		if got, ok := c.get(probe.id, probe.password); ok || got != (scramKeys{}) {
			t.Errorf("%s: hit (keys %v)", name, got)
		}
	}
	// Fields are length-prefixed: moving bytes between role and password
	// does not collide.
	c.put(scramCacheID{role: "ab", salt: "s", iterations: 1}, "c", &keys)
	if _, ok := c.get(scramCacheID{role: "a", salt: "s", iterations: 1}, "bc"); ok {
		t.Error("role/password boundary collides")
	}

	// LRU: size 2.
	c.clear()
	for i := range 3 {
		c.put(scramCacheID{role: fmt.Sprint("r", i), salt: "s", iterations: 1}, "pw", &keys)
		if i == 1 {
			c.get(scramCacheID{role: "r0", salt: "s", iterations: 1}, "pw") // r0 recently used
		}
	}
	if c.len() != 2 {
		t.Fatalf("%d entries, want 2", c.len())
	}
	if _, ok := c.get(scramCacheID{role: "r1", salt: "s", iterations: 1}, "pw"); ok {
		t.Error("least recently used entry not evicted")
	}
	if _, ok := c.get(scramCacheID{role: "r0", salt: "s", iterations: 1}, "pw"); !ok {
		t.Error("recently used entry evicted")
	}

	// Expiry, and the janitor's sweep wipes expired entries.
	now = now.Add(time.Minute)
	if _, ok := c.get(scramCacheID{role: "r0", salt: "s", iterations: 1}, "pw"); ok {
		t.Error("expired entry hit")
	}
	c.sweep()
	if c.len() != 0 {
		t.Errorf("%d entries after expiry and sweep", c.len())
	}

	// clear empties and re-keys.
	c.put(id, "s3cret", &keys)
	oldKey := c.tagKey
	c.clear()
	if c.len() != 0 || c.tagKey == oldKey {
		t.Error("clear kept entries or the tag key")
	}
	if _, ok := c.get(id, "s3cret"); ok {
		t.Error("hit after clear")
	}
	if hits == 0 || misses == 0 {
		t.Errorf("onGet saw %d hits, %d misses", hits, misses)
	}

	// Off: a nil cache never hits.
	var off *scramKeyCache = newSCRAMKeyCache(-1, time.Minute)
	off.put(id, "s3cret", &keys)
	if _, ok := off.get(id, "s3cret"); ok || off != nil {
		t.Error("disabled cache hit")
	}
	off.clear()
	off.sweep()
}

// BenchmarkSCRAMKeys compares what a login costs the proxy in auto mode
// without (PBKDF2) and with a cached entry (one HMAC).
func BenchmarkSCRAMKeys(b *testing.B) {
	salt := []byte("0123456789abcdef")
	b.Run("pbkdf2", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := passwordKeys("correct horse battery staple", salt, 4096); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := newSCRAMKeyCache(10, time.Hour)
		id := scramCacheID{role: "app", salt: string(salt), iterations: 4096}
		keys, _ := passwordKeys("correct horse battery staple", salt, 4096)
		c.put(id, "correct horse battery staple", &keys)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := c.get(id, "correct horse battery staple"); !ok {
				b.Fatal("miss")
			}
		}
	})
}
