package auditlog

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// retryInterval is how often a failed sink is opened again.
const retryInterval = time.Second

// logEvery bounds how often the writer logs that the sink still fails.
const logEvery = 10 * time.Second

// Log writes audit records to one sink. Write, Refusing, Reopen and Close
// are safe for concurrent use; one writer goroutine owns the sink and the
// chain.
type Log struct {
	cfg    Config
	refuse bool
	name   string // for logs: the path, stdout or stderr
	open   func() (io.WriteCloser, tail, error)
	log    *slog.Logger
	m      *metrics
	retry  time.Duration // how often a failed sink is opened again

	ch      chan *Record
	kickAt  int
	kick    chan struct{}   // wakes the writer early (capacity 1)
	reopen  chan chan error // Reopen's requests
	done    chan struct{}   // closed by Close
	stopped chan struct{}   // closed when the writer has returned
	once    sync.Once
	closed  atomic.Bool
	failing atomic.Bool  // records are being lost: refuse while set (on_failure: refuse)
	dropped atomic.Int64 // records lost to a full queue, not yet written as a lost record

	// The writer's, and Open's before the writer starts.
	w         io.WriteCloser // nil while the sink is broken and not reopened
	broken    bool           // the sink failed: records are dropped until it is reopened
	nextRetry time.Time
	lastLog   time.Time
	seq       uint64
	prev      string // h of the last line encoded
	lastGood  string // h of the last line known written
	lost      int64  // records lost since the last start record
	partial   bool   // the sink may end inside a line
	buf       []byte
	lines     []line // the lines in buf
}

// line is one encoded line waiting in the writer's buffer.
type line struct {
	end    int    // offset in buf just after its newline
	hash   string // h(line)
	record bool   // a statement or refusal record (not start or lost)
}

// tail is what a reopened file already holds at its end.
type tail struct {
	known   bool   // a regular file, whose end was read
	last    []byte // the last complete line, without its newline; nil if none
	partial bool   // the file ends without a newline
}

// Open starts the audit log cfg describes (defaults set, validated): it
// opens the file (an error here fails the caller, as a bad path should)
// and writes the start record. If that write fails the log starts failing
// and keeps retrying. Metrics are registered with reg.
func Open(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Log, error) {
	var open func() (io.WriteCloser, tail, error)
	switch cfg.File {
	case "":
		return nil, errors.New("audit: no file configured")
	case FileStdout:
		open = func() (io.WriteCloser, tail, error) { return nopCloser{os.Stdout}, tail{}, nil }
	case FileStderr:
		open = func() (io.WriteCloser, tail, error) { return nopCloser{os.Stderr}, tail{}, nil }
	default:
		path := cfg.File
		open = func() (io.WriteCloser, tail, error) { return openFile(path) }
	}
	return newLog(cfg, cfg.File, open, retryInterval, logger, reg)
}

func newLog(cfg Config, name string, open func() (io.WriteCloser, tail, error), retry time.Duration, logger *slog.Logger, reg prometheus.Registerer) (*Log, error) {
	l := &Log{
		cfg: cfg, refuse: cfg.OnFailure != OnFailureContinue, name: name, open: open, retry: retry,
		log:     logger.With("audit_file", name),
		ch:      make(chan *Record, cfg.QueueSize),
		kickAt:  max(1, cfg.QueueSize/2),
		kick:    make(chan struct{}, 1),
		reopen:  make(chan chan error),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	var err error
	if l.m, err = newMetrics(reg, l); err != nil {
		return nil, fmt.Errorf("register audit metrics: %w", err)
	}
	w, t, err := open()
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", name, err)
	}
	l.w = w
	l.start(t, "open")
	l.flush()
	go l.run()
	return l, nil
}

// Write queues r. It returns at once while the queue has room; when it is
// full it wakes the writer and waits at most Config.MaxWait, then drops r
// (counted, and reported in a lost record) and marks the log failing.
func (l *Log) Write(r *Record) {
	if l.closed.Load() {
		l.m.lost.Inc()
		return
	}
	select {
	case l.ch <- r:
		if len(l.ch) >= l.kickAt {
			l.wake()
		}
		return
	default:
	}
	l.wake()
	t := time.NewTimer(l.cfg.MaxWait)
	defer t.Stop()
	select {
	case l.ch <- r:
	case <-t.C:
		l.dropped.Add(1)
		l.failing.Store(true) // after dropped: see flush
		l.m.failures.WithLabelValues("overflow").Inc()
		l.m.lost.Inc()
	case <-l.done:
		l.m.lost.Inc()
	}
}

func (l *Log) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Refusing reports whether statements on PHI tables must be refused:
// records are being lost and on_failure is refuse.
func (l *Log) Refusing() bool { return l.refuse && l.failing.Load() }

// Reopen writes what is queued, closes the file and opens its path again,
// starting a new segment that continues the old one: after a log rotation
// moved the file away, records go to a new file at the path. It is a no-op
// for stdout and stderr.
func (l *Log) Reopen() error {
	if l.cfg.File == FileStdout || l.cfg.File == FileStderr {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case l.reopen <- reply:
	case <-l.done:
		return errors.New("audit: log closed")
	}
	return <-reply
}

// Close writes what is queued, syncs and closes the file, and logs the
// chain head (seq and hash of the last record) in the proxy's log: the
// anchor against lines cut from the end of the file.
func (l *Log) Close() error {
	l.once.Do(func() {
		l.closed.Store(true)
		close(l.done)
	})
	<-l.stopped
	return nil
}

// run is the writer goroutine.
func (l *Log) run() {
	defer close(l.stopped)
	tick := time.NewTicker(l.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-l.kick:
		case reply := <-l.reopen:
			l.drain()
			reply <- l.doReopen()
			continue
		case <-l.done:
			l.drain()
			l.shutdown()
			return
		}
		if l.broken && !time.Now().Before(l.nextRetry) {
			l.recover()
		}
		l.drain()
	}
}

// drain encodes what is queued and writes it: one write per batch.
func (l *Log) drain() {
	for {
		n := 0
		for ; n < cap(l.ch); n++ {
			select {
			case r := <-l.ch:
				l.add(r)
				continue
			default:
			}
			break
		}
		if d := l.dropped.Swap(0); d > 0 {
			if l.broken {
				l.lost += d
			} else {
				l.encode(TypeLost, nil, &segment{lost: d, reason: "overflow"}, time.Now())
			}
		}
		l.flush()
		if n < cap(l.ch) {
			return
		}
	}
}

// add encodes one record, or counts it lost while the sink is broken.
func (l *Log) add(r *Record) {
	if l.broken {
		l.lost++
		l.m.lost.Inc()
		return
	}
	l.encode(r.Type, r, nil, r.Time)
}

// start encodes a start record for a sink that holds t.
func (l *Log) start(t tail, reason string) {
	seed := make([]byte, 32)
	rand.Read(seed)
	continues := l.lastGood
	if t.last != nil {
		continues = lineHash(t.last)
	}
	if t.partial || (!t.known && l.partial) {
		// End the cut line, so this segment starts on a line of its own;
		// Verify reports the cut one.
		l.buf = append(l.buf, '\n')
	}
	l.partial = false
	sg := &segment{seed: hex.EncodeToString(seed), continues: continues, lost: l.lost, reason: reason}
	l.prev = sg.seed
	l.encode(TypeStart, nil, sg, time.Now())
}

// encode appends one line to the buffer and advances the chain.
func (l *Log) encode(typ string, r *Record, sg *segment, t time.Time) {
	l.seq++
	s := len(l.buf)
	l.buf = appendRecord(l.buf, l.seq, t, typ, r, sg, l.prev)
	h := lineHash(l.buf[s:])
	l.buf = append(l.buf, '\n')
	l.prev = h
	l.lines = append(l.lines, line{end: len(l.buf), hash: h, record: r != nil})
}

// flush writes the buffer. On success the log stops failing (unless the
// queue overflowed meanwhile); on failure the lines not written are
// counted lost, the sink is closed and retried later.
func (l *Log) flush() {
	if len(l.buf) == 0 || l.w == nil {
		return
	}
	n, err := l.w.Write(l.buf)
	if err == nil && n < len(l.buf) {
		err = io.ErrShortWrite
	}
	written := 0
	for written < len(l.lines) && l.lines[written].end <= n {
		l.lastGood = l.lines[written].hash
		written++
	}
	l.m.records.Add(float64(written))
	if err == nil {
		l.buf, l.lines = l.buf[:0], l.lines[:0]
		l.lost = 0
		if l.failing.Load() {
			l.failing.Store(false)
			if l.dropped.Load() > 0 { // an overflow raced with this write
				l.failing.Store(true)
			} else {
				l.log.Info("audit log recovered", "seq", l.seq)
			}
		}
		return
	}
	var lost int64
	for _, ln := range l.lines[written:] {
		if ln.record {
			lost++
		}
	}
	l.partial = n > 0 && (written == 0 || n > l.lines[written-1].end)
	l.lost += lost
	l.m.lost.Add(float64(lost))
	l.buf, l.lines = l.buf[:0], l.lines[:0]
	l.fail("write", err)
}

// fail marks the sink broken after an error of op (write, open).
func (l *Log) fail(op string, err error) {
	l.failing.Store(true)
	l.m.failures.WithLabelValues(op).Inc()
	if l.w != nil {
		l.w.Close()
		l.w = nil
	}
	first := !l.broken
	l.broken = true
	now := time.Now()
	l.nextRetry = now.Add(l.retry)
	if first || now.Sub(l.lastLog) >= logEvery {
		l.lastLog = now
		l.log.Error("audit log failing", "op", op, "error", err.Error(), "lost", l.lost, "refusing", l.refuse)
	}
}

// recover opens the sink again and starts a segment that says how many
// records were lost.
func (l *Log) recover() {
	w, t, err := l.open()
	if err != nil {
		l.fail("open", err)
		return
	}
	l.w, l.broken = w, false
	l.start(t, "recover")
	l.flush()
}

// doReopen serves Reopen on the writer goroutine.
func (l *Log) doReopen() error {
	if l.w != nil {
		if s, ok := l.w.(interface{ Sync() error }); ok {
			s.Sync()
		}
		l.w.Close()
		l.w = nil
	}
	w, t, err := l.open()
	if err != nil {
		l.fail("open", err)
		return fmt.Errorf("audit: reopen %s: %w", l.name, err)
	}
	l.w, l.broken = w, false
	l.start(t, "reopen")
	l.flush()
	if l.broken {
		return fmt.Errorf("audit: reopen %s: the start record could not be written", l.name)
	}
	l.log.Info("audit log reopened", "head_seq", l.seq, "head_hash", l.lastGood)
	return nil
}

// shutdown writes the rest, syncs and closes, and logs the chain head.
func (l *Log) shutdown() {
	if l.w == nil {
		l.log.Warn("audit log closed while failing", "lost", l.lost, "head_seq", l.seq, "head_hash", l.lastGood)
		return
	}
	if s, ok := l.w.(interface{ Sync() error }); ok {
		s.Sync()
	}
	l.w.Close()
	l.w = nil
	l.log.Info("audit log closed", "head_seq", l.seq, "head_hash", l.lastGood)
}

// openFile opens path for appending (created 0600) and reads the end of
// what it holds.
func openFile(path string) (io.WriteCloser, tail, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, tail{}, err
	}
	t, err := readTail(f)
	if err != nil {
		f.Close()
		return nil, tail{}, err
	}
	return f, t, nil
}

// maxLine bounds the lines the proxy writes and reads back.
const maxLine = 1 << 20

// readTail returns the last complete line of a regular file, and whether
// the file ends inside a line. Other files (devices, pipes) have no tail.
func readTail(f *os.File) (tail, error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return tail{}, err
	}
	t := tail{known: true}
	if st.Size() == 0 {
		return t, nil
	}
	n := min(st.Size(), maxLine+1)
	b := make([]byte, n)
	if _, err := f.ReadAt(b, st.Size()-n); err != nil && !errors.Is(err, io.EOF) {
		return tail{}, err
	}
	if b[len(b)-1] != '\n' {
		t.partial = true
		i := bytes.LastIndexByte(b, '\n')
		if i < 0 {
			return t, nil
		}
		b = b[:i+1]
	}
	b = b[:len(b)-1]
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	} else if n < st.Size() {
		return t, nil // longer than any line of ours
	}
	t.last = b
	return t, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// metrics are the audit log's collectors.
type metrics struct {
	records  prometheus.Counter
	failures *prometheus.CounterVec
	lost     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, l *Log) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phiproxy_audit_records_total",
			Help: "Audit log lines written (statement, refusal, start and lost records).",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phiproxy_audit_failures_total",
			Help: "Audit log failures, by kind: overflow (the queue stayed full past audit.max_wait), write, open.",
		}, []string{"reason"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phiproxy_audit_lost_records_total",
			Help: "Audit records that could not be written.",
		}),
	}
	for _, r := range []string{"overflow", "write", "open"} {
		m.failures.WithLabelValues(r)
	}
	failing := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "phiproxy_audit_failing",
		Help: "1 while audit records are being lost (and, with audit.on_failure: refuse, statements on PHI tables refused).",
	}, func() float64 {
		if l.failing.Load() {
			return 1
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.records, m.failures, m.lost, failing} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
