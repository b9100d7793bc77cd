//go:build linux && !386 && !pgferry_nosockio

package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// FDConn is a TCP connection held as a bare descriptor, outside Go's
// netpoller (see Detach). It holds three descriptors (the socket and two
// eventfds) until Close, which its owner must call. Reads and writes are raw non-blocking system
// calls; one that must wait blocks its thread in ppoll(2) on the socket
// and on an eventfd that a deadline change or Close signals, so deadlines,
// Close and SetNoWait behave as net.Conn's do. A goroutine waiting in it
// holds an OS thread (Go hands its P to another): FDConn is for the few
// server connections an event loop lends, not for thousands of clients.
type FDConn struct {
	fd           int
	rwake, wwake int          // eventfds: wake the read / write waiter
	rdl, wdl     atomic.Int64 // deadlines, as monoNanos; 0 none
	nowait       atomic.Bool
	closed       atomic.Bool
	// life is read-held by every call that uses the descriptors and
	// write-held by Close while it closes them, so a descriptor number is
	// never used after its close (and maybe reuse).
	life         sync.RWMutex
	rmu, wmu     sync.Mutex // one reader and one writer at a time
	laddr, raddr net.Addr
	once         sync.Once
}

const detachAvailable = true

// monoBase is the origin of the deadlines FDConn keeps: nanoseconds since
// it on the monotonic clock, as net.Conn's deadlines are (a step of the
// wall clock moves none). A deadline without a monotonic reading (the
// past one Interrupt sets) compares by the wall clock, and is past.
var monoBase = time.Now()

func monoNanos() int64 { return int64(time.Since(monoBase)) }

func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	d := int64(t.Sub(monoBase))
	if d == 0 {
		d = 1 // (0 is none)
	}
	return d
}

// detach duplicates c's descriptor, closes c (which takes it out of Go's
// netpoller, and does not touch the connection: the duplicate keeps it
// open), and returns an FDConn on the duplicate.
func detach(c net.Conn) (net.Conn, error) {
	var rc syscall.RawConn
	var err error
	switch t := c.(type) {
	case *Conn:
		rc = t.rc
	case *net.TCPConn:
		if rc, err = t.SyscallConn(); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("sockio: not a TCP connection")
	}
	dfd := -1
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		var r uintptr
		r, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if errno == 0 {
			dfd = int(r)
		}
	}); err != nil {
		return nil, err
	}
	if errno != 0 {
		return nil, os.NewSyscallError("fcntl", errno)
	}
	fc := &FDConn{fd: dfd, rwake: -1, wwake: -1, laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	for _, w := range []*int{&fc.rwake, &fc.wwake} {
		r, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
		if errno != 0 {
			fc.closeFDs()
			return nil, os.NewSyscallError("eventfd2", errno)
		}
		*w = int(r)
	}
	// The duplicate shares the open file description, so the socket is
	// already non-blocking (Go made it so); say it anyway.
	if err := syscall.SetNonblock(dfd, true); err != nil {
		fc.closeFDs()
		return nil, os.NewSyscallError("fcntl", err)
	}
	c.Close()
	return fc, nil
}

func (c *FDConn) closeFDs() {
	for _, fd := range []int{c.fd, c.rwake, c.wwake} {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
}

// Read reads like net.Conn's Read: it waits for data (unless SetNoWait
// said not to), up to the read deadline.
func (c *FDConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.life.RLock()
	defer c.life.RUnlock()
	for {
		if err := c.usable(&c.rdl); err != nil {
			return 0, c.opError("read", err)
		}
		n, err := rawRead(c.fd, b)
		if err != ErrWouldBlock {
			if err != nil && err != io.EOF {
				err = c.opError("read", err)
			}
			return n, err
		}
		if c.nowait.Load() {
			return 0, ErrWouldBlock
		}
		if err := c.wait(pollIn, &c.rdl, c.rwake); err != nil {
			return 0, c.opError("read", err)
		}
	}
}

// Write writes all of b like net.Conn's Write, waiting for room up to the
// write deadline.
func (c *FDConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.life.RLock()
	defer c.life.RUnlock()
	done := 0
	for {
		if err := c.usable(&c.wdl); err != nil {
			return done, c.opError("write", err)
		}
		n, err := rawWrite(c.fd, b[done:])
		done += n
		if err != ErrWouldBlock {
			if err != nil {
				err = c.opError("write", err)
			}
			return done, err
		}
		if err := c.wait(pollOut, &c.wdl, c.wwake); err != nil {
			return done, c.opError("write", err)
		}
	}
}

// usable reports why a call cannot go on: the connection is closed or the
// deadline dl has passed.
func (c *FDConn) usable(dl *atomic.Int64) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	if d := dl.Load(); d != 0 && monoNanos() >= d {
		return os.ErrDeadlineExceeded
	}
	return nil
}

const (
	pollIn  = 0x1 // POLLIN
	pollOut = 0x4 // POLLOUT
)

type pollFD struct {
	fd      int32
	events  int16
	revents int16
}

// wait blocks until the socket may be ready for events, the deadline dl
// passes, or wake is signalled (a deadline change or Close); the caller
// then tries again. Only one goroutine waits on a given wake: a signal
// cannot be drained by someone else before its waiter looks.
func (c *FDConn) wait(events int16, dl *atomic.Int64, wake int) error {
	for {
		if err := c.usable(dl); err != nil {
			return err
		}
		var ts *syscall.Timespec
		if d := dl.Load(); d != 0 {
			t := syscall.NsecToTimespec(max(d-monoNanos(), 0))
			ts = &t
		}
		fds := [2]pollFD{{fd: int32(c.fd), events: events}, {fd: int32(wake), events: pollIn}}
		_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return os.NewSyscallError("ppoll", errno)
		case fds[1].revents != 0:
			var v [8]byte
			syscall.Read(wake, v[:]) // drain, then look at the deadline again
			continue
		case fds[0].revents != 0:
			return nil // ready, or an error the next call reports
		}
		// Timed out: the loop finds the deadline passed.
	}
}

// signal wakes the waiter of wake, if any, to look at the deadlines again.
func signal(wake int) {
	v := [8]byte{1}
	syscall.Write(wake, v[:])
}

// Close closes the connection; a waiting Read or Write returns
// net.ErrClosed.
func (c *FDConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.closed.Store(true)
		c.life.RLock()
		signal(c.rwake)
		signal(c.wwake)
		c.life.RUnlock()
		c.life.Lock()
		c.closeFDs()
		c.life.Unlock()
		err = nil
	})
	if err != nil {
		return c.opError("close", err)
	}
	return nil
}

// SetDeadline sets both deadlines.
func (c *FDConn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, true, true)
}

// SetReadDeadline sets the read deadline; a waiting Read looks at it at
// once.
func (c *FDConn) SetReadDeadline(t time.Time) error { return c.setDeadline(t, true, false) }

// SetWriteDeadline sets the write deadline; a waiting Write looks at it at
// once.
func (c *FDConn) SetWriteDeadline(t time.Time) error { return c.setDeadline(t, false, true) }

func (c *FDConn) setDeadline(t time.Time, read, write bool) error {
	d := deadlineNanos(t)
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed.Load() {
		return c.opError("set deadline", net.ErrClosed)
	}
	// A waiter keeps waiting when a deadline goes away (it looks again
	// when its old one passes): a cleared deadline costs no system call,
	// any other wakes the waiter to look.
	if read {
		c.rdl.Store(d)
		if d != 0 {
			signal(c.rwake)
		}
	}
	if write {
		c.wdl.Store(d)
		if d != 0 {
			signal(c.wwake)
		}
	}
	return nil
}

// LocalAddr returns the address the connection had when detached.
func (c *FDConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's address.
func (c *FDConn) RemoteAddr() net.Addr { return c.raddr }

// SyscallConn gives the descriptor to Control (a liveness peek); its Read
// and Write are not supported.
func (c *FDConn) SyscallConn() (syscall.RawConn, error) { return fdRawConn{c}, nil }

type fdRawConn struct{ c *FDConn }

var errRawUnsupported = errors.New("sockio: FDConn's RawConn supports Control only")

func (r fdRawConn) Control(f func(fd uintptr)) error {
	r.c.life.RLock()
	defer r.c.life.RUnlock()
	if r.c.closed.Load() {
		return net.ErrClosed
	}
	f(uintptr(r.c.fd))
	return nil
}

func (fdRawConn) Read(func(uintptr) bool) error  { return errRawUnsupported }
func (fdRawConn) Write(func(uintptr) bool) error { return errRawUnsupported }

func (c *FDConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

var _ net.Conn = (*FDConn)(nil)
var _ syscall.Conn = (*FDConn)(nil)
