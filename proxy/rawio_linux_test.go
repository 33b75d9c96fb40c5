package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
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
	c, peer := plainPair(t)
	raw, ok := withRawIO(c).(*rawIOConn)
	if !ok {
		t.Fatalf("withRawIO(%T) did not wrap", c)
	}
	return raw, peer
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

// plainPair is rawPair without the wrapper: the reference behaviour.
func plainPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
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
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c.(*net.TCPConn), peer.(*net.TCPConn)
}

// nonBlocking reports whether the socket of c has O_NONBLOCK set.
func nonBlocking(t *testing.T, c *net.TCPConn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		flags, ferr = fcntl(fd, syscall.F_GETFL, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags&syscall.O_NONBLOCK != 0
}

func fcntl(fd uintptr, cmd, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, uintptr(cmd), uintptr(arg))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// setBlocking clears O_NONBLOCK on the socket of c, as (*os.File).Fd on
// the result of c.File() does (the duplicate shares the open file
// description, and so its flags).
func setBlocking(t *testing.T, c *net.TCPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

// TestRawIOSocketsNonBlocking: the sockets the relay wraps (accepted by a
// net.Listener, dialled by a net.Dialer) are non-blocking, so a raw call
// returns EAGAIN rather than blocking a thread that holds a processor.
// It also records how that property can be lost: File().Fd() on the
// connection makes the shared socket blocking.
func TestRawIOSocketsNonBlocking(t *testing.T) {
	dialled, accepted := plainPair(t)
	if !nonBlocking(t, dialled) || !nonBlocking(t, accepted) {
		t.Fatalf("O_NONBLOCK: dialled %v, accepted %v; want both", nonBlocking(t, dialled), nonBlocking(t, accepted))
	}
	f, err := dialled.File()
	if err != nil {
		t.Fatal(err)
	}
	f.Fd()
	f.Close()
	if nonBlocking(t, dialled) {
		t.Skip("File().Fd() no longer clears O_NONBLOCK on the shared socket")
	}
	t.Log("File().Fd() cleared O_NONBLOCK on the connection's own socket")
}

// TestRawIOBlockingSocket: the raw calls never block in the kernel, even
// on a socket that lost O_NONBLOCK (TestRawIOSocketsNonBlocking). A call
// that blocked there would hold its processor: with GOMAXPROCS 1 (the
// adaptive default at rest) nothing else would run, not even the timer
// of the deadline that should end it, nor a GC's stop-the-world. The
// watchdog only keeps a failing run from hanging; the assertion is on the
// error.
func TestRawIOBlockingSocket(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		raw, peer := rawPair(t)
		setBlocking(t, raw.TCPConn)
		watchdog := time.AfterFunc(10*time.Second, func() { peer.Write([]byte{0}) })
		defer watchdog.Stop()
		raw.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := raw.Read(make([]byte, 1))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read of an idle blocking socket = %d, %v; want the deadline's timeout (the read blocked in the kernel)", n, err)
		}
	})
	t.Run("write", func(t *testing.T) {
		raw, peer := rawPair(t)
		setBlocking(t, raw.TCPConn)
		watchdog := time.AfterFunc(10*time.Second, func() { io.Copy(io.Discard, peer) })
		defer watchdog.Stop()
		raw.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := raw.Write(make([]byte, 64<<20))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write to a full blocking socket = %d, %v; want the deadline's timeout (the write blocked in the kernel)", n, err)
		}
	})
}

// drainCount reads peer to its end and returns the count.
func drainCount(t *testing.T, peer net.Conn) int64 {
	t.Helper()
	n, err := io.Copy(io.Discard, peer)
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	return n
}

// TestRawIOPartialWrite: a Write stopped by its deadline, or by Close,
// while the socket buffer is full reports exactly the bytes the peer then
// receives: nothing lost, nothing counted twice.
func TestRawIOPartialWrite(t *testing.T) {
	for _, stop := range []string{"deadline", "close"} {
		t.Run(stop, func(t *testing.T) {
			raw, peer := rawPair(t)
			// Far more than the socket buffers hold while the peer does
			// not read: the write must wait in the poller.
			big := make([]byte, 64<<20)
			type result struct {
				n   int
				err error
			}
			done := make(chan result, 1)
			go func() {
				n, err := raw.Write(big)
				done <- result{n, err}
			}()
			// The write has begun once the peer has a byte.
			if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			want := os.ErrDeadlineExceeded
			if stop == "close" {
				want = net.ErrClosed
				raw.Close()
			} else {
				raw.SetWriteDeadline(time.Now())
			}
			r := <-done
			if !errors.Is(r.err, want) || r.n <= 0 || r.n >= len(big) {
				t.Fatalf("Write = %d, %v; want a partial count and %v", r.n, r.err, want)
			}
			var oe *net.OpError
			if !errors.As(r.err, &oe) || oe.Op != "write" {
				t.Fatalf("%v is not a write *net.OpError", r.err)
			}
			raw.Close()
			if got := 1 + drainCount(t, peer); got != int64(r.n) {
				t.Fatalf("peer received %d bytes; Write reported %d", got, r.n)
			}
		})
	}
}

// TestRawIOHalfClose: the peer's FIN is io.EOF, after which writes still
// go through; CloseWrite (of the embedded TCPConn) ends the other way.
func TestRawIOHalfClose(t *testing.T) {
	raw, peer := rawPair(t)
	peer.Write([]byte("X\x00\x00\x00\x04")) // Terminate
	peer.CloseWrite()
	b, err := io.ReadAll(raw)
	if err != nil || string(b) != "X\x00\x00\x00\x04" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	if _, err := raw.Write([]byte("after")); err != nil {
		t.Fatalf("Write after the peer's FIN: %v", err)
	}
	if err := raw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(peer)
	if err != nil || string(b) != "after" {
		t.Fatalf("peer ReadAll = %q, %v", b, err)
	}
}

// TestRawIOErrorsLikeTCPConn: each way a call ends gives the error a
// *net.TCPConn gives: same Op, same wrapped error, so logs and the
// callers' errors.Is/As and net.Error checks see no difference.
func TestRawIOErrorsLikeTCPConn(t *testing.T) {
	type pair struct {
		c    net.Conn
		peer *net.TCPConn
	}
	cases := []struct {
		name string
		run  func(p pair) error
	}{
		{"read deadline", func(p pair) error {
			p.c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			_, err := p.c.Read(make([]byte, 1))
			return err
		}},
		{"write deadline", func(p pair) error {
			p.c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
			_, err := p.c.Write(make([]byte, 64<<20))
			return err
		}},
		{"read closed", func(p pair) error {
			p.c.Close()
			_, err := p.c.Read(make([]byte, 1))
			return err
		}},
		{"write closed", func(p pair) error {
			p.c.Close()
			_, err := p.c.Write(make([]byte, 1))
			return err
		}},
		{"eof", func(p pair) error {
			p.peer.Close()
			_, err := p.c.Read(make([]byte, 1))
			return err
		}},
		{"read reset", func(p pair) error {
			p.peer.SetLinger(0)
			p.peer.Close()
			_, err := p.c.Read(make([]byte, 1))
			return err
		}},
		{"write reset", func(p pair) error {
			p.peer.SetLinger(0)
			p.peer.Close()
			// The first write may be taken before the RST is seen; the
			// read makes sure it was.
			p.c.Read(make([]byte, 1))
			_, err := p.c.Write([]byte("x"))
			return err
		}},
	}
	describe := func(err error) string {
		var oe *net.OpError
		if !errors.As(err, &oe) {
			return fmt.Sprintf("%T %v", err, err)
		}
		var ne net.Error
		errors.As(err, &ne)
		return fmt.Sprintf("OpError{Op: %s, Net: %s, Err: %T %v} timeout=%v", oe.Op, oe.Net, oe.Err, oe.Err, ne.Timeout())
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := plainPair(t)
			want := describe(tc.run(pair{c, peer}))
			raw, rpeer := rawPair(t)
			if got := describe(tc.run(pair{raw, rpeer})); got != want {
				t.Errorf("rawIOConn: %s\n      TCPConn: %s", got, want)
			}
		})
	}
}

// TestRawIOUnderTLS: tls.Conn on a rawIOConn, as the relay uses it: a read
// deadline is a temporary error (the session can go on after it is
// cleared, as the handshake timeout relies on), and data after it is intact.
func TestRawIOUnderTLS(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	cert := mustKeyPair(t, certFile, keyFile)
	raw, peer := rawPair(t)
	srv := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
	cli := tls.Client(peer, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	errc := make(chan error, 1)
	go func() { errc <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := srv.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v", err)
	}
	srv.SetReadDeadline(time.Time{})
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: many records
	go func() {
		_, err := cli.Write(want)
		errc <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(srv, got); err != nil {
		t.Fatalf("Read after the cleared deadline: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("TLS stream corrupted")
	}
	go func() {
		_, err := srv.Write(want)
		errc <- err
	}()
	if _, err := io.ReadFull(cli, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("TLS stream corrupted (server to client)")
	}
}

// TestRawIOBrokenPipe: writing on after the peer reset the connection
// reaches EPIPE (the write that raises SIGPIPE with write(2)); the process
// lives on and the error is a write *net.OpError.
func TestRawIOBrokenPipe(t *testing.T) {
	raw, peer := rawPair(t)
	peer.SetLinger(0)
	peer.Close()
	raw.Read(make([]byte, 1)) // the RST has arrived
	var err error
	for range 3 {
		if _, err = raw.Write([]byte("x")); errors.Is(err, syscall.EPIPE) {
			break
		}
	}
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Write after a reset = %v; want EPIPE", err)
	}
}

// TestRawIORaceOrder: what a goroutine wrote before sending on a socket,
// the one that received it may use, and the race detector agrees (under
// go test -race this fails without rawio_race_linux.go).
func TestRawIORaceOrder(t *testing.T) {
	raw, peer := rawPair(t)
	other := withRawIO(peer)
	var shared []string
	go func() {
		shared = []string{"set before the write"}
		raw.Write([]byte{1})
	}()
	if _, err := io.ReadFull(other, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if len(shared) != 1 {
		t.Fatalf("shared = %q", shared)
	}
}

// TestRawIOYields: each direction lets other goroutines run after each
// yieldBytes or more it moves, however the bytes are split into calls, so a
// stream whose peer keeps up (and never parks it in the poller) does not
// hold the processor until the runtime preempts it. Measured at
// GOMAXPROCS 1, 64 KiB writes to a `cat` process for 3 s: a sleeper's
// wake-up was 19.7 ms late at the median (p99 40 ms) without the yields,
// 0.04 ms (p99 0.27 ms) with them.
func TestRawIOYields(t *testing.T) {
	raw, peer := rawPair(t)
	var wrote, read int
	raw.w.yield = func() { wrote++ }
	raw.r.yield = func() { read++ }
	const chunks = 2*yieldBytes/(24<<10) + 1 // just over twice yieldBytes
	msg := make([]byte, 24<<10)
	go func() {
		for range chunks {
			peer.Write(msg)
		}
	}()
	got := make([]byte, chunks*len(msg))
	if _, err := io.ReadFull(raw, got); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, peer)
	for range chunks {
		if _, err := raw.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	// Writes of 24 KiB cross yieldBytes exactly twice; reads return what
	// has arrived, so a read may carry it further before the count
	// starts again: once or twice.
	if wrote != 2 || read < 1 || read > 2 {
		t.Fatalf("yielded %d times writing and %d reading %d bytes; want 2 and 1 or 2 (after each %d bytes or more)", wrote, read, chunks*len(msg), yieldBytes)
	}
}
