//go:build linux && !pgferry_nopark

// Accepting clients for logins on the relay loop without a net.Conn.

package router

import (
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// rawListener is a TCP listener that can also accept a client as a bare
// descriptor (acceptFD), for a login on the relay loop: a net.Conn would
// register the socket in Go's netpoller, look up its local address and set
// TCP_NODELAY, and the loop would then take it out of the netpoller again
// (a duplicate, a deregistration, a close), six system calls per client
// that a connection storm pays in full. The listening socket's duplicate
// f waits in Go's netpoller for clients; accepted sockets inherit
// keepalive and TCP_NODELAY from the listening socket (ListenConfig).
// Accept, for logins on goroutines, is the net.Listener's own.
type rawListener struct {
	net.Listener
	tl *net.TCPListener
	// f is the duplicate, opened on the first acceptFD (with the loop off
	// it would only be a second registration of the socket in Go's
	// netpoller) and closed with the listener; rc its RawConn. failed:
	// it could not be opened, so acceptFD is never used. Guarded by mu,
	// which Close takes too.
	mu     sync.Mutex
	f      *os.File
	rc     syscall.RawConn
	closed bool
	failed bool
	// The result of the accept in progress, for acceptFn (a method value
	// made once: no allocation per client). The accepting goroutine's
	// only.
	fd       int
	sa       syscall.Sockaddr
	err      error
	acceptFn func(uintptr) bool
}

// newRawListener wraps a TCP listener, or returns l as it is.
func newRawListener(l net.Listener) net.Listener {
	tl, ok := l.(*net.TCPListener)
	if !ok || !loopLoginsOn {
		return l
	}
	rl := &rawListener{Listener: l, tl: tl}
	rl.acceptFn = rl.accept1
	return rl
}

// usable reports whether acceptFD can be used: the duplicate is open, or
// could be opened now. Only the accepting goroutine calls it.
func (l *rawListener) usable() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil || l.failed || l.closed {
		return l.f != nil
	}
	l.failed = true // unless it works
	rc, err := l.tl.SyscallConn()
	if err != nil {
		return false
	}
	dup := -1
	rc.Control(func(fd uintptr) {
		d, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if errno == 0 {
			dup = int(d)
		}
	})
	if dup < 0 {
		return false
	}
	f := os.NewFile(uintptr(dup), "listener") // non-blocking: pollable
	frc, err := f.SyscallConn()
	if err != nil || f.SetReadDeadline(time.Time{}) != nil { // not in the netpoller
		f.Close()
		return false
	}
	l.f, l.rc, l.failed = f, frc, false
	return true
}

// accept1 is one non-blocking accept on the listening socket; it reports
// whether it is done (anything but "no client waiting").
func (l *rawListener) accept1(fd uintptr) bool {
	for {
		l.fd, l.sa, l.err = syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		// A client gone before it was accepted, or a signal: the next
		// one, as Go's own Accept does (more may be waiting, which the
		// netpoller will not announce again).
		if l.err != syscall.ECONNABORTED && l.err != syscall.EINTR {
			return l.err != syscall.EAGAIN
		}
	}
}

// acceptFD waits for a client and returns its socket, non-blocking, and
// address. After Close it returns net.ErrClosed. usable must have
// reported true.
func (l *rawListener) acceptFD() (int, net.Addr, error) {
	l.mu.Lock()
	rc, closed := l.rc, l.closed
	l.mu.Unlock()
	if closed || rc == nil {
		return -1, nil, net.ErrClosed
	}
	if err := rc.Read(l.acceptFn); err != nil {
		l.mu.Lock()
		closed = l.closed
		l.mu.Unlock()
		if closed || errors.Is(err, os.ErrClosed) {
			err = net.ErrClosed // (the wait ends with poll's own error)
		}
		return -1, nil, err
	}
	if l.err != nil {
		return -1, nil, os.NewSyscallError("accept4", l.err)
	}
	return l.fd, sockaddrAddr(l.sa), nil
}

// Close closes both descriptors of the listening socket, which then stops
// listening.
func (l *rawListener) Close() error {
	l.mu.Lock()
	l.closed = true
	if l.f != nil {
		l.f.Close()
	}
	l.mu.Unlock()
	return l.Listener.Close()
}

// sockaddrAddr is a TCP socket address as a net.Addr.
func sockaddrAddr(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port} // (4 bytes, as Go's own)
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port, Zone: zoneName(a.ZoneId)}
	}
	return &net.TCPAddr{}
}

func zoneName(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return strconv.Itoa(int(id)) // as Go names a zone it cannot look up
}
