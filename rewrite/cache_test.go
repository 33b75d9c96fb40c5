package rewrite

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

func TestCache(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(2, pol, seedCatalog)
	q1 := "SELECT * FROM patients WHERE email = $1"
	p1, err := c.Analyze(q1)
	if err != nil || p1.Passthrough {
		t.Fatalf("q1: %v %+v", err, p1)
	}
	if p, _ := c.Analyze(q1); p != p1 {
		t.Error("second lookup did not return the cached plan")
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 1 {
		t.Errorf("stats %+v", s)
	}
	// Fast-path texts pass without parsing and are not stored: they must
	// not evict the plans of texts that name policy tables.
	if p, _ := c.Analyze("SELECT 1"); !p.Passthrough || c.Len() != 1 || c.Stats().Bypass != 1 {
		t.Errorf("bypass: %+v len %d", p, c.Len())
	}
	for i := range 100 {
		c.Analyze(fmt.Sprintf("SELECT bbalance FROM pgbench_branches WHERE bid = %d", i))
	}
	if p, _ := c.Analyze(q1); p != p1 {
		t.Error("texts naming no policy table evicted a plan")
	}
	c = NewCache(2, pol, seedCatalog)
	c.Analyze(q1)
	// Rejections are cached too.
	bad := "SELECT * FROM patients WHERE email LIKE $1"
	_, err1 := c.Analyze(bad)
	_, err2 := c.Analyze(bad)
	if !errors.Is(err1, ErrUnsupported) || err1 != err2 {
		t.Errorf("rejection not cached: %v %v", err1, err2)
	}
	// Eviction: q1 is least recently used now.
	c.Analyze("DELETE FROM patients WHERE ssn = $1")
	if c.Len() != 2 {
		t.Errorf("len %d, want 2", c.Len())
	}
	before := c.Stats().Misses
	c.Analyze(q1)
	if c.Stats().Misses != before+1 {
		t.Error("q1 should have been evicted")
	}
}

func TestCacheConcurrent(t *testing.T) {
	pol, _ := policy.Parse([]byte(seedPolicy))
	c := NewCache(8, pol, seedCatalog)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				q := fmt.Sprintf("SELECT * FROM patients WHERE email = $1 AND id = %d", (g+i)%16)
				if p, err := c.Analyze(q); err != nil || p.Passthrough {
					t.Errorf("%q: %v", q, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if c.Len() > 8 {
		t.Errorf("len %d exceeds bound", c.Len())
	}
}

func TestCacheHitAllocs(t *testing.T) {
	pol, _ := policy.Parse([]byte(seedPolicy))
	c := NewCache(8, pol, seedCatalog)
	q := "SELECT * FROM patients WHERE email = $1"
	c.Analyze(q)
	if n := testing.AllocsPerRun(100, func() { c.Analyze(q) }); n != 0 {
		t.Errorf("cache hit allocates %v times", n)
	}
}

func TestErrorUnwrap(t *testing.T) {
	pol, _ := policy.Parse([]byte(seedPolicy))
	_, err := Analyze("SELECT * FROM patients WHERE", pol, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeSyntaxError || !errors.Is(err, ErrSyntax) {
		t.Fatalf("got %v", err)
	}
	_, err = Analyze("SELECT * FROM patients WHERE email < 'zed'", pol, nil)
	if !errors.As(err, &e) || e.Code != CodeFeatureNotSupported || e.Table != "public.patients" || e.Column != "email" || e.Position != 30 {
		t.Fatalf("got %#v", err)
	}
}
