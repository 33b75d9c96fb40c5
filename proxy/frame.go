package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// A frame is one protocol message after startup, as on the wire:
//
//	type (1 byte) || length (int32, big endian, counts itself and the body) || body
//
// The relay forwards frames as raw bytes; only the messages a handler must
// inspect are decoded.
const frameHeaderLen = 5

// bufferSize is the size of each bufio reader and writer of a session.
const bufferSize = 16 << 10

// keepBigBuffer is the largest oversize buffer a reader keeps between frames;
// bigger ones are dropped after use so an idle session does not pin memory.
const keepBigBuffer = 1 << 20

// frameReader reads frames with a bounded size and without allocating for
// frames that fit in its bufio.Reader: it returns a slice of the reader's own
// buffer, valid until the next call.
type frameReader struct {
	br *bufio.Reader
	// max is the largest frame accepted, header included.
	max int
	// server is true when reading from the upstream (errors say so).
	server bool
	// valid, when set, lists the acceptable message types: anything else
	// fails at the header, before its body is awaited.
	valid *[256]bool
	// flush is called before any read that would block, so nothing the peer
	// is waiting for stays in an output buffer while we wait for input.
	flush func() error
	// pending is the size of the frame returned last, discarded on the next
	// call (it was peeked, not consumed).
	pending int
	// big holds a frame larger than br's buffer.
	big []byte
}

func newFrameReader(r io.Reader, max int, server bool, flush func() error) *frameReader {
	if flush == nil {
		flush = func() error { return nil }
	}
	return &frameReader{br: bufio.NewReaderSize(r, bufferSize), max: max, server: server, flush: flush}
}

// next returns the next frame's type and its bytes, header included. At a
// frame boundary a closed stream gives io.EOF; inside a frame,
// io.ErrUnexpectedEOF.
func (r *frameReader) next() (byte, []byte, error) {
	if r.pending > 0 {
		// Cannot fail: the bytes were peeked.
		_, _ = r.br.Discard(r.pending)
		r.pending = 0
	}
	if cap(r.big) > keepBigBuffer {
		r.big = nil
	}
	if r.br.Buffered() < frameHeaderLen {
		if err := r.flush(); err != nil {
			return 0, nil, err
		}
	}
	hdr, err := r.br.Peek(frameHeaderLen)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
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
	if total <= r.br.Size() {
		if r.br.Buffered() < total {
			if err := r.flush(); err != nil {
				return 0, nil, err
			}
		}
		frame, err := r.br.Peek(total)
		if err != nil {
			return 0, nil, unexpectedEOF(err)
		}
		r.pending = total
		return typ, frame, nil
	}
	if err := r.flush(); err != nil {
		return 0, nil, err
	}
	if cap(r.big) < total {
		r.big = make([]byte, total)
	}
	frame := r.big[:total]
	if _, err := io.ReadFull(r.br, frame); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return typ, frame, nil
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
