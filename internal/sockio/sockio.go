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

import (
	"io"
	"net"
)

// ErrWouldBlock is what the non-waiting reads and writes below return when
// the socket has nothing to read or no room to write (EAGAIN). It is a
// net.Error whose Temporary is true, so crypto/tls passes it up from under
// a TLS connection without failing the connection for good: the partial
// record stays buffered and the next read goes on.
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "socket not ready (would block)" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

var _ net.Error = wouldBlock{}

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
// last read saw it, or of one Detach returned, and whether it knows one
// (not before a wrapped connection's first read, nor for a connection
// Wrap left as it was, nor after Close).
func FD(c net.Conn) (int, bool) { return fd(c) }

// Available reports whether this build makes raw socket calls: without
// them, Raw fails every call and NoWait has no reader to give.
const Available = available

// SetNoWait makes the reads of c, a connection Wrap or Detach returned, return
// ErrWouldBlock when the socket has nothing to read, instead of waiting
// (on), or wait again (off), for a reader that waits for readiness itself.
// Deadlines and close still apply. Over a TLS connection on c, reads of
// the TLS connection return it too. It reports false, changing nothing,
// for a connection Wrap left as it was or where the platform has none.
func SetNoWait(c net.Conn, on bool) bool { return setNoWait(c, on) }

// Detach returns a connection on c's socket that stays out of Go's
// netpoller (an FDConn, on Linux), for a socket an event loop waits on in
// its own epoll set: a socket registered with Go's netpoller wakes Go's
// idle thread on every packet, whoever reads it. c is closed (the socket
// lives on in a duplicate of its descriptor). c must be a TCP connection,
// as dialed or as Wrap returned it, not yet read from concurrently. On
// error c is left as it was.
func Detach(c net.Conn) (net.Conn, error) { return detach(c) }

// DetachAvailable reports whether this build has Detach.
const DetachAvailable = detachAvailable

// Raw is a socket descriptor read and written with raw non-blocking
// system calls, for a caller that waits for readiness itself (an epoll
// loop) and owns the descriptor: nothing else may close it while Raw is in
// use. Reads and writes that would block return ErrWouldBlock (a write,
// with the count of bytes it wrote before); a read of 0 bytes is io.EOF.
// Writes pass MSG_NOSIGNAL: a closed peer fails them with EPIPE.
type Raw struct{ FD int }

// Read reads what the socket holds, without waiting.
func (r *Raw) Read(b []byte) (int, error) { return rawRead(r.FD, b) }

// Write writes as much of b as the socket takes, without waiting.
func (r *Raw) Write(b []byte) (int, error) { return rawWrite(r.FD, b) }

// PeerClosed reports whether the peer has closed the connection and sent
// nothing before (EOF or a reset next in the socket), with a peek that
// neither waits nor consumes.
func (r *Raw) PeerClosed() bool { return rawPeerClosed(r.FD) }

var _ io.ReadWriter = (*Raw)(nil)
