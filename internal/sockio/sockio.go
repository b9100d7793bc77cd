// Package sockio speeds up the socket reads and writes of relayed
// connections.
//
// A net.Conn read or write is a system call the Go scheduler accounts for:
// it detaches the goroutine's processor on the way in and reattaches it on
// the way out, and when the call takes longer than sysmon's 20 µs tick
// (a loopback write that delivers to the peer can), the processor is handed
// to another thread: a wake-up, and later a sleep, of an OS thread. A relay
// makes a handful of such calls per transaction, on non-blocking sockets
// that never wait in the kernel.
//
// Wrap returns a connection whose Read and Write make those calls as raw
// system calls inside syscall.RawConn's Read and Write: the socket's
// readiness waits, deadlines, close and concurrent-use rules stay Go's own,
// only the scheduler's bookkeeping of the call itself goes. Everything
// else (deadlines, addresses, SyscallConn, Close) is the wrapped
// *net.TCPConn's.
package sockio

import "net"

// Wrap returns c with the faster Read and Write when c is a TCP connection
// on a platform that supports them, and c itself otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	return wrap(tc)
}

// FD returns the socket descriptor of a connection Wrap returned, as its
// last read saw it, and whether it knows one (not before the first read,
// nor for a connection Wrap left as it was).
func FD(c net.Conn) (int, bool) { return fd(c) }
