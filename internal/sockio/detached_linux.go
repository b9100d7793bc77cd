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
// netpoller (see Detach). Reads and writes are raw non-blocking system
// calls. One that must wait waits through a waiter: an epoll set of its
// own that holds the socket, armed one-shot for that wait only, and that
// Go's netpoller watches (an epoll descriptor is itself pollable). The
// goroutine parks as on a net.Conn, its thread serves others meanwhile,
// and deadlines and Close reach it through the netpoller, so they and
// SetNoWait behave as net.Conn's do. Between waits the socket is armed in
// no set Go watches: its packets wake none of Go's threads, whatever else
// (an event loop) waits on it. It holds three descriptors (the socket and
// the two sets) until Close, which its owner must call.
type FDConn struct {
	fd     int
	rw, ww waiter // wait for input / for room to write, with their deadlines
	nowait atomic.Bool
	closed atomic.Bool
	// life is read-held by every call that uses the descriptors and
	// write-held by Close while it closes them, so a descriptor number is
	// never used after its close (and maybe reuse).
	life         sync.RWMutex
	rmu, wmu     sync.Mutex // one reader and one writer at a time
	laddr, raddr net.Addr
	once         sync.Once
}

// A waiter is how one direction of an FDConn waits (see FDConn): the epoll
// set that holds the socket, as an *os.File in Go's netpoller.
type waiter struct {
	f      *os.File // owns ep
	rc     syscall.RawConn
	events uint32 // what the socket is armed for at each wait
	ready  [1]syscall.EpollEvent
	look   func(uintptr) bool // lookFD, made once
	// sock is the socket to arm at the next look (-1: armed already);
	// errno, arming's failure.
	sock  int
	errno syscall.Errno
	// dl is the deadline, as monoNanos (0: none), which f's read deadline
	// mirrors for the netpoller; dmu orders changes to the pair.
	dl  atomic.Int64
	dmu sync.Mutex
}

// Waited for before (measured, two CPUs): ppoll(2) on the socket and an
// eventfd, which held the goroutine's thread in the system call. With a
// thousand TLS clients, whose goroutines wait for servers an event loop
// also serves, that cost about a fifth of the throughput.

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
	// The duplicate shares the open file description, so the socket is
	// already non-blocking (Go made it so); say it anyway.
	if err := syscall.SetNonblock(dfd, true); err != nil {
		syscall.Close(dfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	fc := &FDConn{fd: dfd, laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	if err := fc.rw.open(dfd, syscall.EPOLLIN|syscall.EPOLLRDHUP); err != nil {
		syscall.Close(dfd)
		return nil, err
	}
	if err := fc.ww.open(dfd, syscall.EPOLLOUT); err != nil {
		fc.rw.f.Close()
		syscall.Close(dfd)
		return nil, err
	}
	c.Close()
	return fc, nil
}

// open makes w's epoll set, adds the socket sock to it unarmed, and hands
// the set to Go's netpoller.
func (w *waiter) open(sock int, events uint32) error {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	// One-shot with no events: armed only by wait (a hang-up is reported
	// anyway, once: it wakes the netpoller, and no goroutine).
	ev := syscall.EpollEvent{Events: syscall.EPOLLONESHOT}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, sock, &ev); err != nil {
		syscall.Close(ep)
		return os.NewSyscallError("epoll_ctl", err)
	}
	if err := syscall.SetNonblock(ep, true); err != nil {
		syscall.Close(ep)
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(ep), "sockio wait")
	rc, err := f.SyscallConn()
	if err == nil && f.SetReadDeadline(time.Time{}) != nil {
		err = errors.New("sockio: the netpoller does not take an epoll set")
	}
	if err != nil {
		f.Close()
		return err
	}
	*w = waiter{f: f, rc: rc, events: events | syscall.EPOLLONESHOT, sock: -1}
	w.look = w.lookFD
	return nil
}

// lookFD, called by the netpoller's Read with the set's descriptor ep (open
// until it returns), arms the socket in the set at a wait's first look,
// then takes the socket's event if the set has one, and reports whether
// the wait is over. The first look also takes an event queued before the
// wait, or left by a wait that ended otherwise, which the netpoller may
// not report again.
func (w *waiter) lookFD(ep uintptr) bool {
	if w.sock >= 0 {
		ev := syscall.EpollEvent{Events: w.events}
		_, _, w.errno = syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, ep, syscall.EPOLL_CTL_MOD, uintptr(w.sock), uintptr(unsafe.Pointer(&ev)), 0, 0)
		w.sock = -1
		if w.errno != 0 {
			return true
		}
	}
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, ep, uintptr(unsafe.Pointer(&w.ready[0])), 1, 0, 0, 0)
		if e != syscall.EINTR {
			return e != 0 || n != 0 // (an error: the caller's next call sees the socket's)
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
		if err := c.usable(&c.rw); err != nil {
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
		if err := c.wait(&c.rw); err != nil {
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
		if err := c.usable(&c.ww); err != nil {
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
		if err := c.wait(&c.ww); err != nil {
			return done, c.opError("write", err)
		}
	}
}

// usable reports why a call cannot go on: the connection is closed or the
// deadline of w has passed.
func (c *FDConn) usable(w *waiter) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	if d := w.dl.Load(); d != 0 && monoNanos() >= d {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// wait waits until the socket may be ready for w's events, w's deadline
// passes, or the connection is closed; the caller then tries again. Only
// one goroutine waits on a given waiter (rmu, wmu).
func (c *FDConn) wait(w *waiter) error {
	for {
		if err := c.usable(w); err != nil {
			return err
		}
		w.sock, w.errno = c.fd, 0 // (look arms it, under the set's reference)
		err := w.rc.Read(w.look)
		if err == nil && w.errno == 0 {
			return nil // ready, or an error the next call reports
		}
		w.disarm(c.fd)
		switch {
		case w.errno != 0:
			return os.NewSyscallError("epoll_ctl", w.errno)
		case c.closed.Load():
			return net.ErrClosed
		case errors.Is(err, os.ErrDeadlineExceeded):
			if c.usable(w) == nil {
				// The file's deadline passed but dl did not: a setter
				// changed both meanwhile. Take dl's again.
				w.setDeadline(w.dl.Load())
			}
		default:
			return err
		}
	}
}

// disarm takes the socket out of w's set's events after a wait that ended
// without one (a deadline, Close): armed, it would wake Go's netpoller at
// every packet until the next wait.
func (w *waiter) disarm(sock int) {
	w.rc.Control(func(ep uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLONESHOT}
		syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, ep, syscall.EPOLL_CTL_MOD, uintptr(sock), uintptr(unsafe.Pointer(&ev)), 0, 0)
		syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, ep, uintptr(unsafe.Pointer(&w.ready[0])), 1, 0, 0, 0) // (one queued meanwhile)
	})
}

// setDeadline sets w's deadline d (monoNanos, 0: none) and the netpoller's
// copy of it, so that the two agree whoever else sets them meanwhile.
func (w *waiter) setDeadline(d int64) {
	t := time.Time{}
	if d != 0 {
		t = monoBase.Add(time.Duration(d)) // (the same reading: a step of the wall clock moves neither)
	}
	w.dmu.Lock()
	w.dl.Store(d)
	if betweenDeadlineStores != nil {
		betweenDeadlineStores()
	}
	w.f.SetReadDeadline(t)
	w.dmu.Unlock()
}

// betweenDeadlineStores, nil but in tests, is called between a setter's
// two stores: a test starts another setter there, to race it against one
// half done (detached_internal_test.go), which no scheduling does on
// demand. It costs a nil check.
var betweenDeadlineStores func()

// Close closes the connection; a waiting Read or Write returns
// net.ErrClosed.
func (c *FDConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.closed.Store(true)
		c.rw.f.Close() // ends a wait (once it has, Close returns)
		c.ww.f.Close()
		c.life.Lock()
		syscall.Close(c.fd)
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
	// The netpoller keeps the waiters' deadlines: one set ends a wait at
	// once if it is past, and at its time if not (no system call).
	if read {
		c.rw.setDeadline(d)
	}
	if write {
		c.ww.setDeadline(d)
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
