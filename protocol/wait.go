package protocol

import (
	"net"
	"syscall"
)

// Peeker looks at a socket's receive queue without consuming it, with a
// non-blocking recv(MSG_PEEK): the liveness check of an idle server
// connection and the did-the-client-leave check of a queued client, once
// per loan. It is built once per connection so a check allocates nothing.
// A Peeker is not safe for concurrent use.
type Peeker struct {
	rc    syscall.RawConn // nil: the connection has no file descriptor
	probe [1]byte
	n     int
	err   error
	peek  func(fd uintptr)
}

// NewPeeker returns a Peeker for conn's socket. For a connection without a
// file descriptor (a TLS-wrapped or in-memory conn) the checks report a
// live, open peer.
func NewPeeker(conn net.Conn) *Peeker {
	pk := &Peeker{}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return pk
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return pk
	}
	pk.rc = rc
	pk.peek = func(fd uintptr) {
		pk.n, pk.err = peekSocket(fd, pk.probe[:])
	}
	return pk
}

// do runs one peek; it reports false when the socket could not be used
// (closed). The peek never blocks, so it runs under RawConn.Control: that
// only keeps the descriptor from being closed meanwhile, where Read would
// also take the read lock, reset the poller's readiness and check the
// read deadline, none of which a peek needs.
func (pk *Peeker) do() bool {
	if pk.rc == nil {
		return false
	}
	return pk.rc.Control(pk.peek) == nil
}

// Idle reports whether the socket looks usable for a new request: nothing
// to read and no EOF pending. Any byte a server sends on an idle
// connection (a FATAL before it exits, EOF) makes it unusable for a new
// client.
func (pk *Peeker) Idle() bool {
	if pk.rc == nil {
		return true
	}
	return pk.do() && pk.err == syscall.EAGAIN // (an Errno: no unwrapping)
}

// PeerClosed reports whether the peer has closed the connection: EOF or a
// reset and no data before it. Bytes still to be read mean the peer is not
// (known to be) gone.
func (pk *Peeker) PeerClosed() bool {
	if !pk.do() {
		return false
	}
	return (pk.err == nil && pk.n == 0) || pk.err == syscall.ECONNRESET
}

// Alive reports whether an idle connection looks usable (see Peeker.Idle).
// It builds a Peeker for one check; connections checked on every loan keep
// their own.
func Alive(conn net.Conn) bool { return NewPeeker(conn).Idle() }
