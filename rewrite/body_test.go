package rewrite

import (
	"sync"
	"testing"

	"github.com/novamind/phiproxy/policy"
)

// TestBodiesConcurrent: the PL/pgSQL parser runs in cgo with per-thread
// state; sessions analyse bodies at the same time and must each get their
// own answer.
func TestBodiesConcurrent(t *testing.T) {
	pol, err := policy.Parse([]byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	bodies := []string{
		"DO $$ BEGIN PERFORM 1; END $$",
		"DO $$ BEGIN INSERT INTO patients (city) VALUES ('x'); END $$",
		"DO $$ BEGIN EXECUTE 'SELECT ' || '1'; END $$",
		"CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created_at := now(); RETURN NEW; END $$",
		"DO $$ BEGIN SELECT 1; $$",
	}
	want := make([]string, len(bodies))
	for i, b := range bodies {
		want[i] = outcome(Analyze(b, pol, seedCatalog))
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 50; n++ {
				i := (n + g) % len(bodies)
				if got := outcome(Analyze(bodies[i], pol, seedCatalog)); got != want[i] {
					t.Errorf("%q: got %s, want %s", bodies[i], got, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
}

func outcome(p *Plan, err error) string {
	if err != nil {
		return err.Error()
	}
	return renderPlan(p)
}
