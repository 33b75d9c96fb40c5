//go:build race

package proxy

import "syscall"

// The race detector learns of the order that a socket gives (what one
// goroutine wrote before a write, another may use after the read that
// returns it) from the syscall package's Read and Write, which the raw
// calls bypass: without these, it reports races the socket orders
// (TestCommandCompleterAndConnInfo did, two runs in three). Race builds
// only; each makes a system call that does nothing.

// raceReleaseIO is what syscall.Write tells the detector before writing:
// the write to fd -1 fails (EBADF) and touches no socket.
func raceReleaseIO() { syscall.Write(-1, nil) }

// raceAcquireIO is what syscall.Read tells it after a read: reading no
// bytes from a socket returns 0 at once, consuming nothing.
func raceAcquireIO(fd uintptr) { syscall.Read(int(fd), nil) }
