package proxy

import (
	"io"
	"net"
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
// (README, "Performance"). The socket is non-blocking (the runtime's
// poller owns it), so a raw call never blocks: EAGAIN parks the goroutine
// in the poller as net.Conn does, and deadlines and Close work as before.
//
// The state of a call lives in the struct, so a call allocates nothing;
// rmu and wmu keep net.Conn's promise that goroutines may read and write
// at once (the relay never has two readers or two writers: uncontended).
type rawIOConn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(uintptr) bool

	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(uintptr) bool
}

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
	c.readFn, c.writeFn = c.read, c.write
	return c
}

func (c *rawIOConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errno}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// read is the RawConn callback of Read: false asks the poller to wait.
func (c *rawIOConn) read(fd uintptr) bool {
	p := c.rbuf
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			c.rn = int(r)
		default:
			c.rerrno = e
		}
		return true
	}
}

func (c *rawIOConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werrno = p, 0, 0
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, c.werrno
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errno}
	}
	return n, nil
}

// write is the RawConn callback of Write: it writes until p is sent, an
// error, or a full socket buffer (false: wait for room, then again).
func (c *rawIOConn) write(fd uintptr) bool {
	p := c.wbuf
	for c.wn < len(p) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[c.wn])), uintptr(len(p)-c.wn))
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = e
			return true
		}
	}
	return true
}
