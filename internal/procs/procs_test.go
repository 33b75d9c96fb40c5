package procs

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestPolicyNext(t *testing.T) {
	p := DefaultPolicy(4)
	for _, tc := range []struct {
		name             string
		cur              int
		busy             float64
		low              int
		wantCur, wantLow int
	}{
		{"idle at one stays", 1, 0.05, 0, 1, 0},
		{"half a core at one stays", 1, 0.5, 0, 1, 0},
		{"busy one adds", 1, 0.8, 0, 2, 0},
		{"saturated one adds", 1, 1.3, 0, 2, 0},
		{"busy two doubles", 2, 1.7, 0, 4, 0},
		{"busy three doubles up to max", 3, 2.5, 0, 4, 0},
		{"at max stays", 4, 3.9, 0, 4, 0},
		{"between thresholds stays, resets low", 2, 0.7, 3, 2, 0},
		{"low two counts", 2, 0.3, 0, 2, 1},
		{"low two counts on", 2, 0.3, 3, 2, 4},
		{"fifth low sample gives one back", 2, 0.3, 4, 1, 0},
		{"low three gives back to two", 3, 0.9, 4, 2, 0},
		{"one never goes lower", 1, 0, 10, 1, 0},
	} {
		cur, low := p.Next(tc.cur, tc.busy, tc.low)
		if cur != tc.wantCur || low != tc.wantLow {
			t.Errorf("%s: Next(%d, %.2f, %d) = %d, %d; want %d, %d", tc.name, tc.cur, tc.busy, tc.low, cur, low, tc.wantCur, tc.wantLow)
		}
	}
}

// TestAdapt drives the loop with a scripted clock and CPU time: it starts
// at one processor, adds one under load, gives it back after five quiet
// samples in a row (not four, and not five with a busier one among them),
// and restores the original value at the end.
func TestAdapt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	tick := make(chan time.Time)
	cpus := make(chan time.Duration) // adapt reads one per tick, and one first
	var sets []int                   // only adapt appends, read after done
	done := make(chan struct{})
	go func() {
		defer close(done)
		adapt(ctx, DefaultPolicy(2), tick, func() time.Duration { return <-cpus },
			func(n int) int { sets = append(sets, n); return 0 }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	var cpu time.Duration
	cpus <- cpu
	at := time.Unix(1000, 0)
	// sample is one second in which the process used used.
	sample := func(used time.Duration) {
		cpu += used
		at = at.Add(time.Second)
		tick <- at
		cpus <- cpu
	}
	sample(0)                      // the baseline
	sample(900 * time.Millisecond) // busy: 2
	for range 4 {
		sample(200 * time.Millisecond) // quiet, not yet long enough
	}
	sample(850 * time.Millisecond) // not quiet at two (busy at one): the count starts again
	for range 4 {
		sample(200 * time.Millisecond)
	}
	sample(200 * time.Millisecond) // the fifth in a row: 1
	sample(500 * time.Millisecond) // half a core at one: stays
	cancel()
	<-done
	if want := []int{1, 2, 1, 2}; !slices.Equal(sets, want) {
		t.Fatalf("GOMAXPROCS set to %v; want %v (start, busy, quiet, restore)", sets, want)
	}
}

func TestRunRestores(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: nothing to adapt")
	}
	before := runtime.GOMAXPROCS(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	for runtime.GOMAXPROCS(0) != 1 {
		runtime.Gosched()
	}
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS after Run = %d; want %d restored", got, before)
	}
}
