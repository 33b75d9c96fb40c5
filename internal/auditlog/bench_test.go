package auditlog

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkEncode is the writer's cost per record: encoding and hashing.
func BenchmarkEncode(b *testing.B) {
	r := testRecord(1)
	prev := lineHash([]byte("x"))
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendRecord(buf[:0], 42, r.Time, r.Type, r, nil, prev)
		prev = lineHash(buf)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkWrite is a session's cost per record (Write) with the writer
// draining to io.Discard meanwhile.
func BenchmarkWrite(b *testing.B) {
	open := func() (io.WriteCloser, tail, error) { return nopCloser{io.Discard}, tail{}, nil }
	cfg := Config{File: "bench"}
	cfg.SetDefaults()
	l, err := newLog(cfg, "bench", open, time.Second, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := testRecord(1)
	b.ReportAllocs()
	for b.Loop() {
		l.Write(r)
	}
}
