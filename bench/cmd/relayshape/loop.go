//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// end is one socket of a session as an event loop sees it.
type end struct {
	fd int
	// conn, if set, still owns fd: the socket stays registered in Go's
	// netpoller while the loop reads and writes it, and closing conn
	// closes fd.
	conn    net.Conn
	peer    *end
	pending []byte // read from peer, not yet written to fd
	events  uint32 // interest registered with epoll
}

// handover is a new session on its way from the acceptor to a loop.
type handover struct {
	client, server end
}

// sockets says how the acceptor makes a session's descriptors, which
// decides whether Go's netpoller still has them registered while a loop
// owns them.
type sockets struct {
	// keepServer and keepClient keep the net.Conn open and hand the loop
	// its descriptor (SyscallConn().Control): Go's netpoller (edge-
	// triggered epoll) stays registered for the socket, and every event
	// on it also wakes the netpoller if a thread is blocked in it. Unset,
	// the loop gets a duplicate and the net.Conn is closed (detach).
	keepServer, keepClient bool
	// rawDial makes the server socket with socket(2) and connect(2): it is
	// never in Go's netpoller.
	rawDial bool
}

// eventLoop owns an epoll set and the sessions registered in it. All its
// fields but inbox and wakeW belong to the loop goroutine.
type eventLoop struct {
	epfd int
	// inbox carries new sessions from the acceptor; a byte written to
	// wakeW makes the loop look at it.
	inbox        chan handover
	wakeR, wakeW int
	ends         []*end // indexed by fd
	buf          []byte
	// raw makes read and write use syscall.RawSyscall, skipping the
	// runtime's entersyscall/exitsyscall: the sockets are non-blocking, so
	// the calls never block.
	raw bool
	// epollFile, with netpoll, is epfd registered with Go's netpoller: the
	// loop never blocks a thread in epoll_wait but parks its goroutine
	// until the epoll set has something ready.
	epollFile *os.File
	epollConn syscall.RawConn
	events    []syscall.EpollEvent
	// pollReady, nready and waitErr serve epollConn.Read; made once, so
	// that waiting allocates nothing.
	pollReady func(uintptr) bool
	nready    int
	waitErr   error
}

func startLoops(n int, raw, netpoll bool) ([]*eventLoop, error) {
	var ls []*eventLoop
	for range max(n, 1) {
		l, err := newEventLoop(raw, netpoll)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		go l.run() // runs until the process is killed
	}
	return ls, nil
}

func newEventLoop(raw, netpoll bool) (*eventLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	l := &eventLoop{epfd: epfd, inbox: make(chan handover, 4096), wakeR: p[0], wakeW: p[1], buf: make([]byte, 16<<10), raw: raw,
		events: make([]syscall.EpollEvent, 256)}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wakeR)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.wakeR, &ev); err != nil {
		return nil, fmt.Errorf("epoll_ctl wake pipe: %w", err)
	}
	if netpoll {
		// os.NewFile registers a non-blocking descriptor with the netpoller.
		if err := syscall.SetNonblock(epfd, true); err != nil {
			return nil, err
		}
		l.epollFile = os.NewFile(uintptr(epfd), "epoll")
		if l.epollConn, err = l.epollFile.SyscallConn(); err != nil {
			return nil, fmt.Errorf("epoll fd: %w", err)
		}
		l.pollReady = func(uintptr) bool {
			l.nready, l.waitErr = syscall.EpollWait(l.epfd, l.events, 0)
			return l.nready != 0 || l.waitErr != nil
		}
	}
	return l, nil
}

// acceptToLoops accepts clients, dials their server connections and hands
// both descriptors to the loops in turn, taken away from Go's netpoller
// unless how keeps them there.
func acceptToLoops(ln net.Listener, serverAddr string, ls []*eventLoop, how sockets) error {
	var raddr *net.TCPAddr
	if how.rawDial {
		var err error
		if raddr, err = net.ResolveTCPAddr("tcp4", serverAddr); err != nil {
			return err
		}
	}
	for i := 0; ; i++ {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		var h handover
		if how.rawDial {
			h.server.fd, err = dialRaw(raddr)
		} else if s, derr := net.Dial("tcp", serverAddr); derr != nil {
			err = derr
		} else {
			h.server, err = takeOver(s, how.keepServer)
		}
		if err != nil {
			c.Close()
			continue
		}
		if h.client, err = takeOver(c, how.keepClient); err != nil {
			return err // the process ends: no need to close the server socket
		}
		l := ls[i%len(ls)]
		l.inbox <- h
		// A full pipe already holds a wake-up: EAGAIN is fine.
		_, _ = syscall.Write(l.wakeW, []byte{0})
	}
}

// takeOver gives the loop c's socket: with keep, c's own descriptor, c
// staying open (and in Go's netpoller) to be closed by the loop; without,
// a detached duplicate.
func takeOver(c net.Conn, keep bool) (end, error) {
	if !keep {
		fd, err := detach(c)
		return end{fd: fd}, err
	}
	sc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		c.Close()
		return end{}, err
	}
	fd := -1
	if err := sc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		c.Close()
		return end{}, err
	}
	return end{fd: fd, conn: c}, nil // net sockets are non-blocking already
}

// detach returns a non-blocking duplicate of c's descriptor and closes c,
// as pgferry's parker detaches a parked client (router/park_linux.go):
// closing c removes the original from Go's netpoller (epoll_ctl DEL before
// close) but leaves the connection open in the duplicate.
func detach(c net.Conn) (int, error) {
	defer c.Close()
	sc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var errno syscall.Errno
	if err := sc.Control(func(f uintptr) {
		var r uintptr
		r, _, errno = syscall.Syscall(syscall.SYS_FCNTL, f, syscall.F_DUPFD_CLOEXEC, 0)
		fd = int(r)
	}); err != nil {
		return -1, err
	}
	if errno != 0 {
		return -1, fmt.Errorf("dup: %w", errno)
	}
	return fd, syscall.SetNonblock(fd, true)
}

// dialRaw connects a TCP socket to addr without the net package, so it is
// never registered in Go's netpoller. The connect blocks the acceptor;
// the socket is then made non-blocking, with TCP_NODELAY as net.Dial sets.
func dialRaw(addr *net.TCPAddr) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	sa := &syscall.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	err = syscall.Connect(fd, sa)
	if err == nil {
		err = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}
	if err == nil {
		err = syscall.SetNonblock(fd, true)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("dial %s: %w", addr, err)
	}
	return fd, nil
}

func (l *eventLoop) run() {
	if l.epollConn == nil {
		// A thread of its own, blocked in epoll_wait between bursts.
		runtime.LockOSThread()
	}
	for {
		n, err := l.wait()
		if err != nil && errnoOf(err) != syscall.EINTR {
			panic(fmt.Sprintf("epoll_wait: %v", err))
		}
		for i := range l.events[:max(n, 0)] {
			l.handle(l.events[i])
		}
	}
}

func (l *eventLoop) wait() (int, error) {
	if l.epollConn == nil {
		return syscall.EpollWait(l.epfd, l.events, -1)
	}
	// RawConn.Read calls pollReady first and parks the goroutine in the
	// netpoller only when it returns false.
	if err := l.epollConn.Read(l.pollReady); err != nil {
		return 0, err
	}
	return l.nready, l.waitErr
}

func (l *eventLoop) handle(ev syscall.EpollEvent) {
	fd := int(ev.Fd)
	if fd == l.wakeR {
		l.register()
		return
	}
	e := l.ends[fd]
	if e == nil {
		return // closed earlier in this batch
	}
	if ev.Events&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		// With the peer backed up, EPOLLIN is off (or was switched off
		// earlier in this batch): only a hang-up or error is acted on.
		backedUp := len(e.peer.pending) > 0
		if backedUp && ev.Events&(syscall.EPOLLHUP|syscall.EPOLLERR) != 0 || !backedUp && !l.readable(e) {
			l.closeSession(e)
			return
		}
	}
	if ev.Events&syscall.EPOLLOUT != 0 && !l.writable(e) {
		l.closeSession(e)
	}
}

// register takes the new sessions out of the inbox.
func (l *eventLoop) register() {
	var b [64]byte
	for {
		if n, _ := syscall.Read(l.wakeR, b[:]); n <= 0 {
			break
		}
	}
	for {
		select {
		case h := <-l.inbox:
			c, srv := &h.client, &h.server
			c.events, srv.events = syscall.EPOLLIN, syscall.EPOLLIN
			c.peer, srv.peer = srv, c
			for max(c.fd, srv.fd) >= len(l.ends) {
				l.ends = append(l.ends, nil)
			}
			l.ends[c.fd], l.ends[srv.fd] = c, srv
			for _, e := range []*end{c, srv} {
				ev := syscall.EpollEvent{Events: e.events, Fd: int32(e.fd)}
				if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, e.fd, &ev); err != nil {
					l.closeSession(c)
					break
				}
			}
		default:
			return
		}
	}
}

// readable reads what is there (one read; level-triggered epoll reports the
// rest again) and writes it to the peer, keeping what the peer's socket
// does not take. It returns false when the session must end.
func (l *eventLoop) readable(e *end) bool {
	p := e.peer
	n, errno := l.read(e.fd, l.buf)
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		return true
	case errno != 0 || n == 0:
		return false
	}
	w, errno := l.write(p.fd, l.buf[:n])
	switch {
	case errno == syscall.EAGAIN:
		w = 0
	case errno != 0:
		return false
	}
	if w < n {
		p.pending = append(p.pending, l.buf[w:n]...)
		l.update(p)
		l.update(e)
	}
	return true
}

// writable writes pending bytes; once they are all out, the peer is read
// again.
func (l *eventLoop) writable(e *end) bool {
	if len(e.pending) == 0 {
		return true
	}
	w, errno := l.write(e.fd, e.pending)
	switch {
	case errno == syscall.EAGAIN:
		return true
	case errno != 0:
		return false
	}
	e.pending = append(e.pending[:0], e.pending[w:]...)
	if len(e.pending) == 0 {
		l.update(e)
		l.update(e.peer)
	}
	return true
}

// update registers e's interest: input unless its peer is backed up,
// output while it has bytes pending.
func (l *eventLoop) update(e *end) {
	var want uint32
	if len(e.peer.pending) == 0 {
		want |= syscall.EPOLLIN
	}
	if len(e.pending) > 0 {
		want |= syscall.EPOLLOUT
	}
	if want == e.events {
		return
	}
	e.events = want
	ev := syscall.EpollEvent{Events: want, Fd: int32(e.fd)}
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, e.fd, &ev)
}

// closeSession closes both ends; closing a descriptor (the only one to its
// socket) also removes it from the epoll set.
func (l *eventLoop) closeSession(e *end) {
	for _, x := range []*end{e, e.peer} {
		if x.fd >= 0 && l.ends[x.fd] == x {
			l.ends[x.fd] = nil
			if x.conn != nil {
				x.conn.Close()
			} else {
				syscall.Close(x.fd)
			}
			x.fd = -1
		}
	}
}

func (l *eventLoop) read(fd int, b []byte) (int, syscall.Errno) {
	if l.raw {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		return int(r), e
	}
	n, err := syscall.Read(fd, b)
	return n, errnoOf(err)
}

func (l *eventLoop) write(fd int, b []byte) (int, syscall.Errno) {
	if l.raw {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		return int(r), e
	}
	n, err := syscall.Write(fd, b)
	return max(n, 0), errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok { // syscall returns bare Errnos
		return e
	}
	return syscall.EIO
}
