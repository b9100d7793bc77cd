package protocol

import (
	"errors"
	"net"
	"syscall"
)

// ReadinessWait returns a function that blocks until conn has data to read
// (or EOF, or an error) without reading it, or nil when conn does not expose
// its file descriptor (TLS). It honours conn's read deadline. Reader.Wait
// uses it so an idle client costs no read buffer.
func ReadinessWait(conn net.Conn) func() error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var probe [1]byte
	return func() error {
		return rc.Read(func(fd uintptr) bool {
			_, _, err := syscall.Recvfrom(int(fd), probe[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			// EAGAIN: nothing yet, let the poller wait. Anything else (data,
			// EOF, a socket error) means the next Read will not block.
			return !errors.Is(err, syscall.EAGAIN)
		})
	}
}

// Alive reports whether an idle connection looks usable: nothing to read and
// no EOF pending. Any byte a server sends on an idle connection (a FATAL
// before it exits, EOF) makes the connection unusable for a new client, so
// the check is a non-blocking peek. Connections without a file descriptor
// are assumed alive.
func Alive(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var probe [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), probe[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = errors.Is(err, syscall.EAGAIN)
		return true
	})
	return alive && err == nil
}

// PeerClosed reports whether the peer has closed conn: a non-blocking peek
// finds EOF or a reset and no data before it. Bytes still to be read mean
// the peer is not (known to be) gone. Connections without a file
// descriptor report false.
func PeerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var probe [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), probe[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = (err == nil && n == 0) || errors.Is(err, syscall.ECONNRESET)
		return true
	})
	return closed
}
