package proxy

import (
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// The SCRAM key cache (auto mode).
//
// In auto mode the client hands the proxy its cleartext password and the
// proxy must turn it into SCRAM keys with PBKDF2 (4,096 HMAC-SHA-256 rounds
// by default, ~2 ms of CPU) for every new connection. The cache memoizes
// that function,
//
//	(role, salt, iterations, password) → (ClientKey, ServerKey),
//
// without keeping the password: an entry is keyed by (role, salt,
// iterations) and holds a tag, HMAC-SHA-256 under a random key of this
// process (tagKey) of the same tuple and the password, beside the two keys.
// A login looks the entry up by (role, salt, iterations) from the server's
// server-first-message and compares the tag of the password the client just
// sent, in constant time.
//
// Why the cache cannot log in a client who does not know the password:
//
//   - A hit needs a tag equal to the stored one. The stored tag is HMAC of a
//     password the server accepted; HMAC under a secret 256-bit key is a
//     PRF, so finding another password with the same tag, without the key,
//     succeeds with probability about 2^-256 per try. A hit therefore means
//     the client sent that very password: what PBKDF2 would have proved,
//     the tag proves.
//   - The cache decides nothing: on a hit the proxy still runs SCRAM with
//     the server, which checks the proof against its current secret. A
//     changed password has a new salt (a miss), and a changed password with
//     the same salt, an expired or a NOLOGIN role are refused by the
//     server as they would be without the cache.
//   - Entries are only added after the server accepted the login and
//     proved itself with its signature (verifyServerFinal), never on a
//     failed one, so a wrong password cannot seed the cache; and the role
//     is part of the key, so one role's entry never serves another.
//
// What a reader of the proxy's memory learns: ClientKey and ServerKey of
// the cached roles (enough to log in to this server as them, as PgBouncer's
// cached SCRAM keys are; the threat model does not protect against a
// compromised proxy host, which also holds the data keys), and tags that let
// them test password guesses at HMAC speed rather than PBKDF2 speed. Entries
// expire (ttl), the cache is bounded (LRU), and Clear (ReloadAuth) empties
// it and draws a new tag key.
type scramKeyCache struct {
	mu     sync.Mutex
	tagKey [32]byte
	max    int
	ttl    time.Duration
	now    func() time.Time
	lru    *list.List // of *scramCacheEntry, most recently used first
	byID   map[scramCacheID]*list.Element
	// retired: replaced by a reload or closed; put no longer adds.
	retired bool
	// onGet reports hits and misses (metrics); may be nil.
	onGet func(hit bool)
}

// scramCacheID identifies the PBKDF2 inputs other than the password.
type scramCacheID struct {
	role       string
	salt       string // raw bytes
	iterations int
}

type scramCacheEntry struct {
	id      scramCacheID
	tag     [sha256.Size]byte
	keys    scramKeys
	expires time.Time
}

// newSCRAMKeyCache returns a cache of at most max entries living ttl each,
// or nil (no caching; its methods accept a nil receiver) when max < 1.
func newSCRAMKeyCache(max int, ttl time.Duration) *scramKeyCache {
	if max < 1 {
		return nil
	}
	c := &scramKeyCache{max: max, ttl: ttl, now: time.Now, lru: list.New(), byID: map[scramCacheID]*list.Element{}}
	c.rekey()
	return c
}

func (c *scramKeyCache) rekey() {
	if _, err := rand.Read(c.tagKey[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never does (Go 1.24+)
	}
}

// tag is HMAC-SHA-256(tagKey, label || role || salt || iterations ||
// password), each length-prefixed so no two tuples share an encoding.
// Called with c.mu held.
func (c *scramKeyCache) tag(id scramCacheID, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.tagKey[:])
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		m.Write(n[:])
		m.Write(b)
	}
	field([]byte("phiproxy scram key cache v1"))
	field([]byte(id.role))
	field([]byte(id.salt))
	binary.BigEndian.PutUint64(n[:], uint64(id.iterations))
	m.Write(n[:])
	field([]byte(password))
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}

// get returns the keys cached for id if password is the one they were
// derived from and the entry has not expired.
func (c *scramKeyCache) get(id scramCacheID, password string) (scramKeys, bool) {
	if c == nil {
		return scramKeys{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	hit := false
	var keys scramKeys
	if el, ok := c.byID[id]; ok {
		e := el.Value.(*scramCacheEntry)
		switch {
		case !c.now().Before(e.expires):
			c.remove(el)
		default:
			t := c.tag(id, password)
			if hmac.Equal(t[:], e.tag[:]) {
				hit, keys = true, e.keys
				c.lru.MoveToFront(el)
			}
		}
	}
	if c.onGet != nil {
		c.onGet(hit)
	}
	return keys, hit
}

// put caches keys for (id, password), replacing what id had.
func (c *scramKeyCache) put(id scramCacheID, password string, keys *scramKeys) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retired {
		return
	}
	if el, ok := c.byID[id]; ok {
		c.remove(el)
	}
	c.sweepLocked()
	e := &scramCacheEntry{id: id, tag: c.tag(id, password), keys: *keys, expires: c.now().Add(c.ttl)}
	c.byID[id] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		c.remove(c.lru.Back())
	}
}

// forget drops id's entry: the server refused keys the cache gave (the
// role's secret changed while keeping its salt).
func (c *scramKeyCache) forget(id scramCacheID) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byID[id]; ok {
		c.remove(el)
	}
}

func (c *scramKeyCache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*scramCacheEntry)
	delete(c.byID, e.id)
	e.keys.wipe()
	clear(e.tag[:])
}

// sweep wipes the expired entries (a janitor calls it, so expired keys do
// not linger in memory until the next login).
func (c *scramKeyCache) sweep() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked()
}

// sweepLocked is sweep with c.mu held. O(entries), run only on a miss
// (which has just cost a PBKDF2) and by the janitor.
func (c *scramKeyCache) sweepLocked() {
	now := c.now()
	for el := c.lru.Back(); el != nil; {
		prev := el.Prev()
		if !now.Before(el.Value.(*scramCacheEntry).expires) {
			c.remove(el)
		}
		el = prev
	}
}

// clear empties the cache and draws a new tag key.
func (c *scramKeyCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.remove(c.lru.Back())
	}
	c.rekey()
}

// retire empties the cache for good: a reload replaced it, or the server
// closed.
func (c *scramKeyCache) retire() {
	if c == nil {
		return
	}
	c.clear()
	c.mu.Lock()
	c.retired = true
	c.mu.Unlock()
}

// len is the number of entries (tests).
func (c *scramKeyCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
