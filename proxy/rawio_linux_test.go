package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rawPair returns a loopback TCP connection wrapped by withRawIO and its
// plain peer.
func rawPair(t *testing.T) (*rawIOConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	raw, ok := withRawIO(c).(*rawIOConn)
	if !ok {
		t.Fatalf("withRawIO(%T) did not wrap", c)
	}
	t.Cleanup(func() { raw.Close(); peer.Close() })
	return raw, peer.(*net.TCPConn)
}

func TestRawIORoundTrip(t *testing.T) {
	raw, peer := rawPair(t)
	// Larger than both socket buffers, so writes meet EAGAIN and wait in
	// the poller, and reads wait for data that is not there yet.
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(rand.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		n, err := raw.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		errc <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("peer read other bytes than were written")
	}

	go func() {
		_, err := peer.Write(want)
		errc <- err
	}()
	if _, err := io.ReadFull(raw, got); err != nil {
		t.Fatalf("Read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Read returned other bytes than the peer wrote")
	}
	if n, err := raw.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if n, err := raw.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
}

func TestRawIOEnds(t *testing.T) {
	t.Run("peer closes: EOF", func(t *testing.T) {
		raw, peer := rawPair(t)
		peer.Write([]byte("last"))
		peer.Close()
		b, err := io.ReadAll(raw)
		if err != nil || string(b) != "last" {
			t.Fatalf("ReadAll = %q, %v; want \"last\", nil", b, err)
		}
		if n, err := raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("Read after EOF = %d, %v", n, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		raw, _ := rawPair(t)
		raw.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := raw.Read(make([]byte, 1))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read past the deadline = %v; want a timeout", err)
		}
	})
	t.Run("closed while reading", func(t *testing.T) {
		raw, _ := rawPair(t)
		time.AfterFunc(20*time.Millisecond, func() { raw.Close() })
		if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read of a closed conn = %v; want net.ErrClosed", err)
		}
	})
	t.Run("peer reset: write fails", func(t *testing.T) {
		raw, peer := rawPair(t)
		peer.SetLinger(0) // RST on close
		peer.Close()
		var err error
		for range 100 { // the first write may still be accepted
			if _, err = raw.Write([]byte("x")); err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("Write to a reset peer = %v; want ECONNRESET or EPIPE", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" {
			t.Fatalf("error %v is not a write *net.OpError", err)
		}
	})
}

func TestRawIONoAllocation(t *testing.T) {
	raw, peer := rawPair(t)
	msg := []byte("Q\x00\x00\x00\x0dSELECT 1\x00")
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := raw.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(raw, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	// The peer's plain reads and writes allocate nothing either.
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip; want 0", allocs)
	}
}

func TestRawIOLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := withRawIO(a); got != a {
		t.Fatalf("withRawIO(net.Pipe) = %T; want it unchanged", got)
	}
}

// TestRawIOConcurrent: as net.Conn, writes from several goroutines at once
// are not interleaved, and reads at once are safe (go test -race).
func TestRawIOConcurrent(t *testing.T) {
	raw, peer := rawPair(t)
	const writes, size = 500, 100
	var wg sync.WaitGroup
	for _, b := range []byte("ab") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := bytes.Repeat([]byte{b}, size)
			for range writes {
				if _, err := raw.Write(rec); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	got := make([]byte, 2*writes*size)
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := 0; i < len(got); i += size {
		if rec := got[i : i+size]; bytes.Count(rec, rec[:1]) != size {
			t.Fatalf("record at %d mixes two writes: %q", i, rec)
		}
	}

	go peer.Write(got)
	var rd sync.WaitGroup
	var total atomic.Int64
	for range 2 {
		rd.Add(1)
		go func() {
			defer rd.Done()
			buf := make([]byte, 777)
			for total.Load() < int64(len(got)) {
				raw.SetReadDeadline(time.Now().Add(time.Second))
				n, err := raw.Read(buf)
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	rd.Wait()
	if total.Load() != int64(len(got)) {
		t.Fatalf("two readers read %d bytes; want %d", total.Load(), len(got))
	}
}
