package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress reports a long scan: on a terminal a bar redrawn in place with
// the rate and the time left, otherwise a plain line every few seconds (for
// logs and CI). It counts rows, never shows values.
type progress struct {
	w        io.Writer
	label    string
	total    int64 // an estimate; 0 when unknown
	tty      bool
	start    time.Time
	last     time.Time // of the last output
	interval time.Duration
	drawn    bool
}

// newProgress reports to w; total is the expected number of rows (0 when
// unknown).
func newProgress(w io.Writer, label string, total int64) *progress {
	now := time.Now()
	p := &progress{w: w, label: label, total: total, start: now, last: now, interval: 5 * time.Second}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty, p.interval = true, 200*time.Millisecond
		}
	}
	return p
}

// update reports that done rows have been processed.
func (p *progress) update(done int64) {
	now := time.Now()
	if now.Sub(p.last) < p.interval {
		return
	}
	p.last = now
	p.write(done, false)
}

// finish reports the final count and ends the bar's line.
func (p *progress) finish(done int64) {
	if p.tty || p.drawn {
		p.write(done, true)
	}
}

func (p *progress) write(done int64, final bool) {
	elapsed := time.Since(p.start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed.Seconds()
	}
	total := max(p.total, done)
	eta := "?"
	switch {
	case final:
		eta = "done in " + elapsed.Round(100*time.Millisecond).String()
	case rate > 0 && total > 0:
		eta = "ETA " + time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second).String()
	}
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	p.drawn = true
	if !p.tty {
		fmt.Fprintf(p.w, "%s: %d/%d rows (%.0f%%), %.0f rows/s, %s\n", p.label, done, total, pct, rate, eta)
		return
	}
	const width = 30
	fill := int(pct / 100 * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	if fill > 0 && fill < width {
		bar = bar[:fill-1] + ">" + bar[fill:]
	}
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %d/%d rows  %.0f rows/s  %s\033[K", p.label, bar, pct, done, total, rate, eta)
	if final {
		fmt.Fprintln(p.w)
	}
}
