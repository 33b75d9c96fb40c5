package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// A frame is one protocol message after startup, as on the wire:
//
//	type (1 byte) || length (int32, big endian, counts itself and the body) || body
//
// The relay forwards frames as raw bytes; only the messages a handler must
// inspect are decoded.
const frameHeaderLen = 5

// A session holds buffers only while it is busy. Each reader has a small
// buffer of its own, which holds the messages of a typical OLTP round trip;
// larger batches borrow a pooled buffer until they are consumed, and each
// writer borrows one from its first write to its flush. So an idle
// session holds two small buffers, not four large ones (issue 13), and a
// busy one pays a pool Get and Put per round trip.
const (
	// inlineSize is each frame reader's own buffer.
	inlineSize = 2 << 10
	// poolSize is the size of the pooled buffers.
	poolSize = 32 << 10
	// keepBigBuffer is the largest oversize buffer a reader keeps between
	// frames; bigger ones are dropped after use.
	keepBigBuffer = 1 << 20
)

// bufPool holds the session buffers of poolSize. A buffer is cleared (the
// part used) before it returns, so no message of one session, PHI or
// password, lingers in memory another session borrows.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, poolSize)
	return &b
}}

func putBuffer(b *[]byte, used int) {
	clear((*b)[:used])
	bufPool.Put(b)
}

// frameReader reads frames with a bounded size and without allocating: it
// returns a slice of its buffer, valid until the next call.
type frameReader struct {
	rd io.Reader
	// buf is inline[:] or a pooled buffer (pooled set); its unread bytes
	// are buf[r:w].
	buf    []byte
	pooled *[]byte
	r, w   int
	inline [inlineSize]byte
	// max is the largest frame accepted, header included.
	max int
	// server is true when reading from the upstream (errors say so).
	server bool
	// valid, when set, lists the acceptable message types: anything else
	// fails at the header, before its body is awaited.
	valid *[256]bool
	// flush is called before any read that may block, so nothing the peer
	// is waiting for stays in an output buffer while we wait for input.
	flush func() error
	// big holds a frame larger than a pooled buffer.
	big []byte
}

func newFrameReader(rd io.Reader, max int, server bool, flush func() error) *frameReader {
	if flush == nil {
		flush = func() error { return nil }
	}
	r := &frameReader{rd: rd, max: max, server: server, flush: flush}
	r.buf = r.inline[:]
	return r
}

// next returns the next frame's type and its bytes, header included. At a
// frame boundary a closed stream gives io.EOF; inside a frame,
// io.ErrUnexpectedEOF.
func (r *frameReader) next() (byte, []byte, error) {
	if r.r == r.w {
		r.release()
	}
	if cap(r.big) > keepBigBuffer {
		r.big = nil
	}
	if err := r.ensure(frameHeaderLen); err != nil {
		if errors.Is(err, io.EOF) && r.w > r.r {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	hdr := r.buf[r.r : r.r+frameHeaderLen]
	typ := hdr[0]
	if r.valid != nil && !r.valid[typ] {
		return 0, nil, r.errorf("invalid message type %q", typ)
	}
	n := int64(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 {
		return 0, nil, r.errorf("invalid length %d in message of type %q", n, typ)
	}
	size := n + 1
	if size > int64(r.max) {
		return 0, nil, r.errorf("message too large: %d bytes of type %q exceed the limit of %d", size, typ, r.max)
	}
	total := int(size)
	if total <= poolSize {
		if err := r.ensure(total); err != nil {
			return 0, nil, unexpectedEOF(err)
		}
		frame := r.buf[r.r : r.r+total]
		r.r += total
		return typ, frame, nil
	}
	// Larger than any buffer: read it whole into big.
	if cap(r.big) < total {
		r.big = make([]byte, total)
	}
	frame := r.big[:total]
	c := copy(frame, r.buf[r.r:r.w])
	r.r += c
	if err := r.flush(); err != nil {
		return 0, nil, err
	}
	if _, err := io.ReadFull(r.rd, frame[c:]); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return typ, frame, nil
}

// ensure makes n (at most poolSize) unread bytes available, reading as
// much as the stream gives. Before reading it flushes.
func (r *frameReader) ensure(n int) error {
	if r.w-r.r >= n {
		return nil
	}
	if err := r.flush(); err != nil {
		return err
	}
	if n > len(r.buf) && r.pooled == nil {
		p := bufPool.Get().(*[]byte)
		r.w = copy(*p, r.buf[r.r:r.w])
		r.r, r.buf, r.pooled = 0, *p, p
	} else if r.r+n > len(r.buf) {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	for r.w-r.r < n {
		m, err := r.rd.Read(r.buf[r.w:])
		r.w += m
		if r.w-r.r >= n {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// release returns a pooled buffer, all of it consumed, and goes back to
// the inline one.
func (r *frameReader) release() {
	if r.pooled != nil {
		putBuffer(r.pooled, r.w)
		r.pooled, r.buf = nil, r.inline[:]
	}
	r.r, r.w = 0, 0
}

// frameWriter buffers output between flushes in a pooled buffer, which it
// holds only while it has bytes to send.
type frameWriter struct {
	w      io.Writer
	buf    []byte
	pooled *[]byte
}

func newFrameWriter(w io.Writer) *frameWriter { return &frameWriter{w: w} }

// Write buffers p; a p too large to buffer is written at once, after what
// is buffered.
func (f *frameWriter) Write(p []byte) (int, error) {
	if len(f.buf)+len(p) > poolSize {
		if err := f.Flush(); err != nil {
			return 0, err
		}
		if len(p) > poolSize/2 {
			return f.w.Write(p)
		}
	}
	if f.pooled == nil {
		f.pooled = bufPool.Get().(*[]byte)
		f.buf = (*f.pooled)[:0]
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

// Buffered reports how many bytes wait for Flush.
func (f *frameWriter) Buffered() int { return len(f.buf) }

// Flush writes what is buffered and returns the buffer to the pool.
func (f *frameWriter) Flush() error {
	if f.pooled == nil {
		return nil
	}
	var err error
	if len(f.buf) > 0 {
		_, err = f.w.Write(f.buf)
	}
	putBuffer(f.pooled, len(f.buf))
	f.pooled, f.buf = nil, nil
	return err
}

func (r *frameReader) errorf(format string, args ...any) error {
	if r.server {
		return serverProtocolErrorf(format, args...)
	}
	return protocolErrorf(format, args...)
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// CString splits b at its first NUL: the string before it and the bytes
// after it. ok is false when b holds no NUL.
func CString(b []byte) (str, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}
