//go:build linux && !pgferry_nopark

// A parked session's socket: letting go of its net.Conn as it parks
// (detach), making one again as it resumes (reattach), and the descriptor
// helpers the parker and SHOW CLIENTS use.

package router

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/protocol"
	"go.uber.org/zap"
)

// detachable reports whether the session can let go of its socket's
// net.Conn as it parks: a plain session, or a TLS 1.3 one whose records
// internal/tls13 carries (crypto/tls's connection holds its net.Conn).
func (ss *session) detachable() bool {
	if !ss.tls {
		return true
	}
	_, ok := ss.conn.(*tls13.Conn)
	return ok
}

// detach lets go of a session's net.Conn as it parks (see detachable): Go's
// netFD, its two addresses and the raw-I/O wrapper are about a third of an
// idle client's heap, and a parked session needs only the descriptor (and,
// under TLS, its keys: tls13.Conn.Park drops the rest). The socket lives on
// in a duplicate of it (ss.fd), which the parker waits on; reattach makes a
// net.Conn of it again when the session resumes. Closing the original
// descriptor does not touch the connection: no FIN, no shutdown, no TLS
// alert. It reports whether it let go.
func (ss *session) detach() bool {
	dfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(ss.fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return false // out of descriptors: park with the conn
	}
	ss.mu.Lock()
	old := ss.raw
	ss.raw = nil
	if c, ok := ss.conn.(*tls13.Conn); ok {
		c.Park() // the records' keys stay; the socket goes
	} else {
		ss.conn = nil
	}
	ss.fd = int32(dfd)
	ss.mu.Unlock()
	if ss.rare != nil {
		ss.rare.peeker = nil // it reads the old conn
	}
	old.Close()
	return true
}

// reattach makes a net.Conn of the descriptor detach kept, as the session
// resumes (or its parking failed), and arms the deadlines the old conn had
// or the session's flags ask for. net.FileConn needs one more descriptor
// for a moment: at the process's limit (a connection storm) it is retried
// for about a second. On failure the client is told so, its socket is
// closed, and raw and conn fail every call: the session ends.
func (ss *session) reattach() error {
	f := os.NewFile(uintptr(ss.fd), "client") // owns the duplicate from here
	var c net.Conn
	settled := false // the number moved on: into raw, or to -1
	defer func() {
		if settled {
			return
		}
		// A panic (a bug here or in what is called) ends the session, and
		// closeSocket would then close ss.fd, and f's finalizer the same
		// number again later, when it may be another connection's (Linux
		// hands out the lowest free number). The number is closed here,
		// once, and so is c's own duplicate of it, which would keep the
		// client connected until the collector found it. raw and conn
		// fail every call, as after a failure (a parked TLS conn does
		// without its socket; end wipes its keys).
		if c != nil {
			c.Close()
		}
		ss.mu.Lock()
		ss.raw, ss.fd = closedConn{}, -1
		if ss.conn == nil {
			ss.conn = closedConn{}
		}
		ss.mu.Unlock()
		f.Close()
	}()
	c, err := net.FileConn(f)
	for wait := 10 * time.Millisecond; err != nil && wait <= time.Second && outOfFDs(err); wait *= 2 {
		time.Sleep(wait)
		c, err = net.FileConn(f)
	}
	if err != nil {
		ss.logger().Warn("a parked client could not be resumed; disconnecting it", zap.Error(err))
		e := protocol.Fatal(protocol.SQLStateInsufficientResources, "pgferry could not resume this idle connection: "+sanitize(err))
		e.Hint = "Reconnect. pgferry may be out of file descriptors (ulimit -n)."
		f.SetWriteDeadline(time.Now().Add(time.Second))
		var w io.Writer = f
		if c, ok := ss.conn.(*tls13.Conn); ok {
			c.Resume(fileConn{f})
			w = c
		}
		w.Write(e.AppendFrame(nil))
		if c, ok := ss.conn.(*tls13.Conn); ok {
			c.Wipe()
		}
		ss.mu.Lock()
		ss.raw, ss.conn, ss.fd = closedConn{}, closedConn{}, -1
		ss.mu.Unlock()
		settled = true
		f.Close()
		return err
	}
	ss.faultAt("reattach")
	raw := sockio.Wrap(c)
	fd := socketFD(raw)
	// Deadlines before the conn is shared: a wake that comes later finds it
	// in raw and sets its own.
	if !ss.idleDeadline.IsZero() {
		raw.SetReadDeadline(ss.idleDeadline.Time())
	}
	ss.noDeadline = ss.idleDeadline.IsZero()
	conn := raw
	if c, ok := ss.conn.(*tls13.Conn); ok {
		c.Resume(raw)
		conn = c
	}
	ss.mu.Lock()
	ss.raw, ss.conn, ss.fd = raw, conn, int32(fd)
	flags := ss.flags.Load()
	ss.mu.Unlock()
	settled = true
	f.Close() // after fd moved on: sockInfo never sees a closed number
	switch {
	case flags&evKill != 0:
		raw.SetDeadline(pastDeadline)
		ss.noDeadline = false
	case flags&evWake != 0:
		raw.SetReadDeadline(pastDeadline)
		ss.noDeadline = false
	}
	if flags&evKill == 0 && flags&evDoomed != 0 { // (any one doom: markDoomed sets one)
		raw.SetWriteDeadline(time.Now().Add(doomGrace))
	}
	return nil
}

// closeSocket closes the client socket at the end of the session: its conn,
// or the bare descriptor of one the relay loop ended, or that ended (a
// panic) between detach and reattach.
func (ss *session) closeSocket() {
	if ss.raw != nil {
		ss.raw.Close()
		return
	}
	ss.mu.Lock()
	fd := ss.fd
	ss.fd = -1 // (sockInfo never sees a closed number)
	ss.mu.Unlock()
	if fd >= 0 {
		syscall.Close(int(fd))
	}
}

// fileConn is a bare descriptor as a net.Conn, for the one message a TLS
// client gets when its session cannot resume.
type fileConn struct{ *os.File }

func (fileConn) LocalAddr() net.Addr  { return nil }
func (fileConn) RemoteAddr() net.Addr { return nil }

// rawConn is the relay loop's raw socket as a net.Conn, for the TLS 1.3
// records of a session the loop serves (see loopConn). The session owns
// the descriptor: Close leaves it open, and deadlines do not apply.
type rawConn struct{ *sockio.Raw }

func (rawConn) Close() error                     { return nil }
func (rawConn) LocalAddr() net.Addr              { return nil }
func (rawConn) RemoteAddr() net.Addr             { return nil }
func (rawConn) SetDeadline(time.Time) error      { return nil }
func (rawConn) SetReadDeadline(time.Time) error  { return nil }
func (rawConn) SetWriteDeadline(time.Time) error { return nil }

func outOfFDs(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// fdLocalAddr is the local address of a socket descriptor, for SHOW CLIENTS
// while a session is parked without its conn.
func fdLocalAddr(fd int) net.Addr {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return nil
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *syscall.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	}
	return nil
}

// socketFD returns the file descriptor of a TCP client socket (under TLS, the
// socket TLS runs over), or -1.
func socketFD(c net.Conn) int {
	if fd, ok := sockio.FD(c); ok {
		return fd
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}
