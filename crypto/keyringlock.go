//go:build unix

package crypto

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// ErrKeyringLocked reports that another process holds the keyring's lock.
var ErrKeyringLocked = errors.New("the keyring is locked by another phiproxy keys command")

// LockKeyring takes an exclusive lock on the keyring at path, so that two
// key-management commands (each a read, a change and an atomic rewrite of
// the file) cannot interleave and lose one's change. The lock is an
// advisory flock(2) on "<path>.lock", created with mode 0600 and left in
// place; the kernel releases it if the process dies. It does not wait: a
// held lock fails at once with ErrKeyringLocked. Call unlock when done.
func LockKeyring(path string) (unlock func(), err error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock keyring: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s); wait for it to finish", ErrKeyringLocked, name)
		}
		return nil, fmt.Errorf("lock keyring %s: %w", name, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
