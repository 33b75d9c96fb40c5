package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"testing"
	"testing/iotest"
)

func frame(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func TestFrameReader(t *testing.T) {
	big := string(bytes.Repeat([]byte("x"), 3*poolSize))
	mid := string(bytes.Repeat([]byte("y"), 2*inlineSize)) // needs a pooled buffer
	input := bytes.Join([][]byte{frame('Q', "select 1\x00"), frame('S', ""), frame('d', mid), frame('d', big), frame('d', mid), frame('H', "")}, nil)
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(input),
		"one byte": iotest.OneByteReader(bytes.NewReader(input)),
	} {
		t.Run(name, func(t *testing.T) {
			flushes := 0
			fr := newFrameReader(r, 1<<20, false, func() error { flushes++; return nil })
			var got []byte
			for {
				typ, msg, err := fr.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if typ != msg[0] {
					t.Errorf("type %q, frame starts with %q", typ, msg[0])
				}
				got = append(got, msg...)
			}
			if !bytes.Equal(got, input) {
				t.Error("frames do not reassemble the input")
			}
			if flushes == 0 {
				t.Error("flush never called before blocking")
			}
			if fr.pooled != nil {
				t.Error("a pooled buffer is kept after everything was read")
			}
		})
	}
}

func TestFrameReaderErrors(t *testing.T) {
	cases := []struct {
		name  string
		input []byte
		want  func(error) bool
	}{
		{"clean EOF", nil, func(err error) bool { return err == io.EOF }},
		{"EOF in header", []byte{'Q', 0, 0}, func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"EOF in body", frame('Q', "select")[:8], func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"EOF in big body", frame('d', string(make([]byte, 2*poolSize)))[:poolSize+10], func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"short length", []byte{'Q', 0, 0, 0, 3}, isProtocolError},
		{"too large", frame('Q', string(make([]byte, 2000))), isProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			limit := 1 << 20
			if tc.name == "too large" {
				limit = 1024
			}
			fr := newFrameReader(bytes.NewReader(tc.input), limit, false, nil)
			_, _, err := fr.next()
			if !tc.want(err) {
				t.Errorf("error %v", err)
			}
		})
	}
}

func isProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

// FuzzReadFrame feeds arbitrary bytes to the frontend message reader and
// the client-to-server handlers: no panic, frames are well formed, and the
// only errors are EOFs and protocol errors.
func FuzzReadFrame(f *testing.F) {
	for _, seed := range [][]byte{
		frame('Q', "select 1\x00"),
		append(frame('P', "\x00select $1\x00\x00\x00"), frame('S', "")...),
		frame('D', "S\x00"),
		frame('C', "P\x00"),
		{'Q', 0xff, 0xff, 0xff, 0xff},
		frame('X', ""),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 1 << 12
		s := benchSession(bytes.NewReader(data), bytes.NewReader(nil))
		s.clientR.max = max
		s.clientR.valid = &frontendTypes
		consumed := 0
		for {
			typ, msg, err := s.clientR.next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !isProtocolError(err) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(msg) < frameHeaderLen || len(msg) > max || msg[0] != typ ||
				int(binary.BigEndian.Uint32(msg[1:]))+1 != len(msg) {
				t.Fatalf("malformed frame %x", msg)
			}
			consumed += len(msg)
			if consumed > len(data) {
				t.Fatal("returned more bytes than read")
			}
			if err := s.handleFrontend(typ, msg); err != nil {
				if !isProtocolError(err) && !errors.Is(err, errClientTerminated) {
					t.Fatalf("handler error %v", err)
				}
				return
			}
		}
	})
}

// repeatReader yields data over and over without allocating.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

// benchSession is a session wired to in-memory streams: client input from
// c, server input from sv, both outputs discarded.
func benchSession(c, sv io.Reader) *Session {
	m, _ := NewMetrics(nil)
	srv := &Server{metrics: m, log: slog.New(slog.DiscardHandler)}
	srv.cfg.SetDefaults()
	s := &Session{srv: srv, log: srv.log, errc: make(chan error, 1)}
	s.serverW = newFrameWriter(io.Discard)
	s.clientW = newFrameWriter(io.Discard)
	s.clientR = newFrameReader(c, DefaultMaxMessageBytes, false, s.flushServer)
	s.serverR = newFrameReader(sv, DefaultMaxServerMessageBytes, true, s.flushClient)
	return s
}

// TestFrameWriter: bytes are buffered in a pooled buffer until Flush, which
// returns it; a write too large to buffer goes out at once, in order.
func TestFrameWriter(t *testing.T) {
	var out bytes.Buffer
	w := newFrameWriter(&out)
	w.Write([]byte("ab"))
	if w.Buffered() != 2 || out.Len() != 0 || w.pooled == nil {
		t.Fatalf("after a small write: buffered %d, written %d", w.Buffered(), out.Len())
	}
	big := bytes.Repeat([]byte("z"), poolSize)
	w.Write(big)
	if out.Len() != 2+len(big) || w.Buffered() != 0 {
		t.Fatalf("after a large write: written %d, buffered %d", out.Len(), w.Buffered())
	}
	w.Write([]byte("c"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.pooled != nil || !bytes.Equal(out.Bytes(), append(append([]byte("ab"), big...), 'c')) {
		t.Fatal("flush kept its buffer or lost the order")
	}
}
