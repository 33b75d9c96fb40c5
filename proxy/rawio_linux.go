package proxy

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// rawIOConn reads and writes a TCP socket with raw system calls: the
// runtime does not mark the goroutine as in a system call, so its monitor
// (sysmon) cannot take the processor from a thread in a write and wake
// another thread to run the other goroutines. A relay's writes to loopback
// or a LAN include the kernel's delivery to the peer and often outlast the
// monitor's 20 µs tick; each such hand-off cost a context switch or two
// (README, "Performance"). A raw call must never block in the kernel: it
// holds its processor, and a stop-the-world would wait for it, so every
// goroutine would stop (TestRawIOBlockingSocket). The socket is
// non-blocking (the runtime's poller owns it), but that flag belongs to
// the open file description, which anything holding a duplicate can clear
// ((*os.File).Fd on conn.File() does). So the calls are recvfrom and
// sendto with MSG_DONTWAIT, non-blocking whatever the flag, and with
// MSG_NOSIGNAL, so a write to a reset peer is EPIPE without a SIGPIPE.
// EAGAIN parks the goroutine in the poller as net.Conn does; deadlines
// and Close work as before, and errors are those of a *net.TCPConn.
//
// Nor may one call run long: a stop-the-world waits for it too. A
// non-blocking write returns when the socket buffer is full, but on
// loopback the peer empties it while the call copies, and one call took
// the whole of a 64 MiB message (limits.max_message_bytes): a GC's
// stop-the-world waited up to 200 ms, every session with it. So a call
// moves at most rawChunk bytes, and the goroutine can be stopped between
// two.
//
// One goroutine at a time reads (and one writes), as net.Conn promises
// however many call: each direction's rawCall holds its call's state and a
// mutex (uncontended in the relay), so a call allocates nothing.
type rawIOConn struct {
	*net.TCPConn
	rc syscall.RawConn

	r, w rawCall
}

// rawChunk is the most one system call reads or writes: 1 MiB copies in
// well under a millisecond, and smaller ones cost a large write's
// throughput on loopback (256 KiB: a fifth).
const rawChunk = 1 << 20

// rawCall is one direction's call: the buffer, the bytes done, the errno,
// and the RawConn callback, bound once.
type rawCall struct {
	mu    sync.Mutex
	buf   []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
	// moved counts the bytes since the goroutine last yielded (yield:
	// runtime.Gosched).
	moved int
	yield func()
}

// yieldBytes is how much one direction moves before it lets the other
// goroutines run (runtime.Gosched). A raw call never gives up its
// processor, and a stream whose peer keeps up never waits in the poller:
// at GOMAXPROCS 1, a session streaming a large result or COPY kept every
// other session waiting for the runtime's 10 ms preemption (a sleeper's
// wake-up 20 ms late at the median). 256 KiB moves in about 0.1 ms on
// loopback; a round trip of small messages never reaches it.
const yieldBytes = 256 << 10

// withRawIO returns conn reading and writing with raw system calls when
// it is a TCP connection, else conn.
func withRawIO(conn net.Conn) net.Conn {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return conn
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return conn
	}
	c := &rawIOConn{TCPConn: tc, rc: rc}
	c.r.fn, c.w.fn = c.read, c.write
	c.r.yield, c.w.yield = runtime.Gosched, runtime.Gosched
	return c
}

// call runs the callback of r through the poller for p, at most rawChunk
// bytes of it; r.mu is held.
func (c *rawIOConn) call(r *rawCall, p []byte) (int, error) {
	r.buf, r.n, r.errno = p[:min(len(p), rawChunk)], 0, 0
	var err error
	if r == &c.w {
		err = c.rc.Write(r.fn)
	} else {
		err = c.rc.Read(r.fn)
	}
	n, errno := r.n, r.errno
	r.buf = nil
	if err != nil || errno != 0 {
		err = c.opError(r, err, errno)
	}
	if r.moved += n; r.moved >= yieldBytes {
		r.moved = 0
		r.yield()
	}
	return n, err
}

// opError is the error a *net.TCPConn returns where r's call ended with
// err (from the poller: deadline, Close) or errno (from the call).
func (c *rawIOConn) opError(r *rawCall, err error, errno syscall.Errno) error {
	op := "read"
	if r == &c.w {
		op = "write"
	}
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op // "raw-read" or "raw-write"; this error is ours
		return oe
	}
	if err != nil {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.r.mu.Lock()
	n, err := c.call(&c.r, p)
	c.r.mu.Unlock()
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// read is the RawConn callback of Read: false asks the poller to wait.
func (c *rawIOConn) read(fd uintptr) bool {
	p := c.r.buf
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			c.r.n = int(r)
			raceAcquireIO(fd)
		default:
			c.r.errno = e
		}
		return true
	}
}

func (c *rawIOConn) Write(p []byte) (int, error) {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	raceReleaseIO()
	var n int
	for n < len(p) {
		m, err := c.call(&c.w, p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// write is the RawConn callback of Write: it writes until p is sent, an
// error, or a full socket buffer (false: wait for room, then again).
func (c *rawIOConn) write(fd uintptr) bool {
	p := c.w.buf
	for c.w.n < len(p) {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[c.w.n])), uintptr(len(p)-c.w.n), syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.w.n += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.w.errno = e
			return true
		}
	}
	return true
}
