// Package procs adapts GOMAXPROCS to the process's CPU use: the default of
// limits.max_procs (0).
//
// A relay's goroutines block and wake once per message in each direction.
// With more processors than work, every wake-up finds an idle processor
// and the runtime wakes a thread to run it, which looks for work, spins and
// sleeps again: on a 2-core host, two processors cost the proxy 10 to 20%
// more CPU per transaction than one (README, "Performance"). With one
// processor a loaded proxy cannot use a second core. So the proxy starts
// with one and doubles them whenever it keeps the ones it has busy (16
// within four seconds), up to the CPUs available (Go's own default, which
// honours a container's CPU quota), and gives one back after it has used
// much less than the others for a while.
package procs

import (
	"context"
	"log/slog"
	"runtime"
	"syscall"
	"time"
)

// Policy is when to add and when to give back a processor.
type Policy struct {
	// Max is the most processors used.
	Max int
	// Up: the processors double (up to Max) when a sample's CPU use, in
	// cores, is at least Up times the processors in use.
	Up float64
	// Down: one is given back after DownSamples samples in a row used
	// less than Down times one processor fewer.
	Down        float64
	DownSamples int
}

// DefaultPolicy: double at 80% of the processors in use, give one back
// after five samples under half of the others.
func DefaultPolicy(max int) Policy {
	return Policy{Max: max, Up: 0.8, Down: 0.5, DownSamples: 5}
}

// Next returns the processors to use after a sample in which the process
// used busy cores with cur processors; low counts the samples in a row
// that were low enough to give one back (its new value is returned too).
func (p Policy) Next(cur int, busy float64, low int) (int, int) {
	switch {
	case busy >= p.Up*float64(cur) && cur < p.Max:
		return min(2*cur, p.Max), 0
	case cur > 1 && busy < p.Down*float64(cur-1):
		low++
		if low >= p.DownSamples {
			return cur - 1, 0
		}
		return cur, low
	}
	return cur, 0
}

// Run sets GOMAXPROCS to 1 and then adapts it every interval until ctx
// ends, when it restores the value it found. The most it uses is the
// value it found: the CPUs, or the container's CPU quota, when the
// process started (setting GOMAXPROCS ends the runtime's own updates for
// a quota changed later). A host with one CPU, or a quota of one, leaves
// nothing to adapt.
func Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	max := runtime.GOMAXPROCS(0)
	if max <= 1 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	adapt(ctx, DefaultPolicy(max), t.C, cpuTime, runtime.GOMAXPROCS, log)
}

// adapt is Run's loop: set is runtime.GOMAXPROCS, cpu the process's CPU
// time, tick the sampling clock.
func adapt(ctx context.Context, p Policy, tick <-chan time.Time, cpu func() time.Duration, set func(int) int, log *slog.Logger) {
	defer set(p.Max)
	cur, low := 1, 0
	set(cur)
	lastCPU, lastWall := cpu(), time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick:
			c := cpu()
			if !lastWall.IsZero() && now.After(lastWall) {
				busy := float64(c-lastCPU) / float64(now.Sub(lastWall))
				var next int
				next, low = p.Next(cur, busy, low)
				if next != cur {
					log.Debug("GOMAXPROCS changed", "from", cur, "to", next, "cores_used", busy)
					cur = next
					set(cur)
				}
			}
			lastCPU, lastWall = c, now
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
