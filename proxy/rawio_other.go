//go:build !linux

package proxy

import "net"

// withRawIO returns conn: raw system calls are used on Linux only.
func withRawIO(conn net.Conn) net.Conn { return conn }
