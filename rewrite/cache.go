package rewrite

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/novamind/phiproxy/policy"
)

// Cache is a bounded LRU of plans (and rejections) keyed by SQL text, never
// by parameter values. Safe for concurrent use. A hit takes one mutex and
// does not allocate.
//
// Texts that the fast path passes through (no policy table name in them)
// are not stored: each costs a byte scan and no allocation (they share one
// passthrough plan), and literal-heavy traffic on other tables cannot evict
// the plans that matter. They are counted as Bypass.
type Cache struct {
	pol *policy.Policy
	cat Catalog
	max int

	mu    sync.Mutex
	items map[string]*cacheEntry
	head  cacheEntry // sentinel: head.next is the most recent

	hits, misses, bypass atomic.Uint64

	// keyMentions: no table name of pol holds "$" or a digit, so a text
	// of a cached shape mentions the policy (simple_template.go).
	keyMentions bool
}

type cacheEntry struct {
	key        string
	plan       *Plan
	err        error
	prev, next *cacheEntry
	// inst is how texts of the shape key are made from plan
	// (AnalyzeSimple), made the first time it is needed.
	inst atomic.Pointer[shapeInstance]
}

// bypassPlan is the plan of every text the byte scan passes through: the
// caller forwards its own text. Shared and immutable, like every plan.
var bypassPlan = &Plan{Passthrough: true}

// bypassEntry stands for bypassPlan where an entry is returned; it is
// never in the cache.
var bypassEntry = &cacheEntry{plan: bypassPlan}

// NewCache returns a cache of at most size plans for pol and cat.
func NewCache(size int, pol *policy.Policy, cat Catalog) *Cache {
	if size < 1 {
		size = 1
	}
	c := &Cache{pol: pol, cat: cat, max: size, items: make(map[string]*cacheEntry, size), keyMentions: true}
	for _, t := range pol.Tables() {
		if strings.ContainsAny(t.Name, "$0123456789") {
			c.keyMentions = false
		}
	}
	c.head.next, c.head.prev = &c.head, &c.head
	return c
}

// Analyze returns the cached plan for sql, analyzing it on a miss. The
// returned plan is shared: callers must not modify it.
func (c *Cache) Analyze(sql string) (*Plan, error) {
	e := c.entry(sql)
	return e.plan, e.err
}

// entry returns the cache entry of sql, analyzing it on a miss, or
// bypassEntry for a text the byte scan passes through.
func (c *Cache) entry(sql string) *cacheEntry {
	if e := c.lookupEntry(sql); e != nil {
		return e
	}
	if c.pol.Empty() || !mentionsPolicy(sql, c.pol) {
		c.bypass.Add(1)
		return bypassEntry
	}
	key := strings.Clone(sql) // the caller's string may alias a reused buffer
	c.misses.Add(1)
	plan, err := Analyze(key, c.pol, c.cat)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok { // raced with another miss
		return e
	}
	e := &cacheEntry{key: key, plan: plan, err: err}
	c.items[key] = e
	c.pushFront(e)
	for len(c.items) > c.max {
		old := c.head.prev
		c.unlink(old)
		delete(c.items, old.key)
	}
	return e
}

// lookupEntry returns the entry of exactly sql, counting a hit, or nil.
func (c *Cache) lookupEntry(sql string) *cacheEntry {
	c.mu.Lock()
	e, ok := c.items[sql]
	if !ok {
		c.mu.Unlock()
		return nil
	}
	c.unlink(e)
	c.pushFront(e)
	c.mu.Unlock()
	c.hits.Add(1)
	return e
}

// lookupKey is lookupEntry of a key built in a buffer: the lookup does
// not copy it.
func (c *Cache) lookupKey(key []byte) *cacheEntry {
	c.mu.Lock()
	e, ok := c.items[string(key)]
	if !ok {
		c.mu.Unlock()
		return nil
	}
	c.unlink(e)
	c.pushFront(e)
	c.mu.Unlock()
	c.hits.Add(1)
	return e
}

// Len returns the number of cached plans.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// CacheStats are the cache's counters since it was made.
type CacheStats struct {
	Hits   uint64 // plan found
	Misses uint64 // text parsed and analyzed
	Bypass uint64 // not found, no policy table named: passed through without parsing
}

// Stats returns the counters (for the proxy's metrics).
func (c *Cache) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Bypass: c.bypass.Load()}
}

func (c *Cache) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (c *Cache) pushFront(e *cacheEntry) {
	e.prev, e.next = &c.head, c.head.next
	c.head.next.prev = e
	c.head.next = e
}
