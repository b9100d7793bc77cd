//go:build linux && !pgferry_nopark

// Accepting clients for logins on the relay loop without a net.Conn, and
// on the loop itself.

package router

import (
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/pgferry/pgferry/internal/epoll"
)

// rawListener is a TCP listener that can accept a client as a bare
// descriptor, for a login on the relay loop: a net.Conn would register the
// socket in Go's netpoller, look up its local address and set TCP_NODELAY,
// and the loop would then take it out of the netpoller again (a duplicate,
// a deregistration, a close), six system calls per client that a
// connection storm pays in full. Accepted sockets inherit keepalive and
// TCP_NODELAY from the listening socket (ListenConfig).
//
// In loop mode (chosen at Listen, when the configuration lets the loop take
// logins) Go's listener is closed at once and lfd, a duplicate, is the
// listening socket's only descriptor, out of Go's netpoller: the relay
// loop itself waits for clients on it (parker.takeListener, acceptOn), so
// a client costs no wake-up of the accept goroutine, nor of a thread
// waiting in Go's netpoller, which would be woken by the socket's
// registration there even with nobody accepting. Otherwise, and in loop
// mode while the loop does not take logins, the accept goroutine waits
// for clients on f, a duplicate in Go's netpoller (acceptFD): in loop mode
// it then serves each on a goroutine as a net.Conn (serveFD), and
// otherwise, with the loop off, Go's own Accept serves.
type rawListener struct {
	net.Listener
	tl       *net.TCPListener
	loopMode bool
	lfd      int // loop mode only
	// back tells the accept goroutine that the loop gave accepting back.
	back chan struct{}
	// Guarded by mu: f, opened on first use by usable (with the loop off
	// it would only be a second registration of the socket in Go's
	// netpoller) and closed again when the loop takes the listener
	// (closeWaiterLocked), and rc its RawConn; failed: it could not be
	// opened and Go's listener serves instead (not in loop mode, where
	// usable tries again at each call); openErr: why it could not;
	// inLoop: lfd is in the parker's epoll set, where the loop accepts;
	// idx: the listener's place in the parker's list (-1: none yet);
	// lfdClosed: closed by Close or, while the loop had it, by the loop.
	mu                        sync.Mutex
	f                         *os.File
	rc                        syscall.RawConn
	closed, failed, lfdClosed bool
	openErr                   error
	inLoop                    bool
	idx                       int
	// The result of the accept in progress, for acceptFn (a method value
	// made once: no allocation per client). The accepting goroutine's
	// only.
	fd       int
	sa       syscall.Sockaddr
	err      error
	acceptFn func(uintptr) bool
}

// newRawListener wraps a TCP listener, in loop mode if loopMode, or
// returns l as it is.
func newRawListener(l net.Listener, loopMode bool) net.Listener {
	tl, ok := l.(*net.TCPListener)
	if !ok || !loopLoginsOn {
		return l
	}
	rl := &rawListener{Listener: l, tl: tl, lfd: -1, idx: -1, back: make(chan struct{}, 1)}
	rl.acceptFn = rl.accept1
	if loopMode {
		if rl.lfd = dupListener(tl); rl.lfd >= 0 {
			rl.loopMode = true
			tl.Close() // the socket lives on in lfd, out of Go's netpoller
		}
	}
	return rl
}

// dupListener returns a duplicate of a listener's descriptor, or -1.
func dupListener(tl *net.TCPListener) int {
	rc, err := tl.SyscallConn()
	if err != nil {
		return -1
	}
	dup := -1
	rc.Control(func(fd uintptr) {
		d, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if errno == 0 {
			dup = int(d)
		}
	})
	return dup
}

// usable reports whether acceptFD can be used: the duplicate is open, or
// could be opened now. Only the accepting goroutine calls it.
func (l *rawListener) usable() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil || l.failed || l.closed {
		return l.f != nil
	}
	// Go's listener serves instead, unless it was closed (loop mode):
	// then the next call tries again (out of descriptors, say).
	l.failed = !l.loopMode
	dup := -1
	if l.loopMode {
		d, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(l.lfd), syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			l.openErr = os.NewSyscallError("fcntl", errno)
			return false
		}
		dup = int(d)
	} else if dup = dupListener(l.tl); dup < 0 {
		l.openErr = errors.New("cannot duplicate the listening socket")
		return false
	}
	f := os.NewFile(uintptr(dup), "listener") // non-blocking: pollable
	frc, err := f.SyscallConn()
	if err == nil {
		err = f.SetReadDeadline(time.Time{}) // fails if not in the netpoller
	}
	if err != nil {
		f.Close()
		l.openErr = err
		return false
	}
	l.f, l.rc, l.failed, l.openErr = f, frc, false, nil
	return true
}

// closeWaiterLocked closes f, the duplicate the accept goroutine waits on, while
// the loop accepts: left in Go's netpoller, it would wake a thread there
// at every client. usable opens it again. rl.mu is held.
func (l *rawListener) closeWaiterLocked() {
	if l.f != nil {
		l.f.Close()
		l.f, l.rc = nil, nil
	}
}

// accept1 is one non-blocking accept on the listening socket; it reports
// whether it is done (anything but "no client waiting").
func (l *rawListener) accept1(fd uintptr) bool {
	l.fd, l.sa, l.err = accept4(int(fd))
	return l.err != syscall.EAGAIN
}

// accept4 accepts a client on the listening socket lfd as a non-blocking
// descriptor. It goes on past a client gone before it was accepted, or a
// signal, as Go's own Accept does (more may be waiting, which the
// netpoller will not announce again).
func accept4(lfd int) (int, syscall.Sockaddr, error) {
	for {
		fd, sa, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != syscall.ECONNABORTED && err != syscall.EINTR {
			return fd, sa, err
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
		if l.isClosed() || errors.Is(err, os.ErrClosed) {
			err = net.ErrClosed // (the wait ends with poll's own error)
		}
		return -1, nil, err
	}
	if l.err != nil {
		return -1, nil, os.NewSyscallError("accept4", l.err)
	}
	return l.fd, sockaddrAddr(l.sa), nil
}

// waitErr is why usable could not open the duplicate last time.
func (l *rawListener) waitErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.openErr
}

func (l *rawListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops listening. In loop mode while the loop accepts, the socket
// is shut down (no more clients; Go's Accept behaves alike: the port
// refuses at once) and the loop, woken by it, closes lfd and gives
// accepting back (acceptOn): closing the descriptor here could pull it from
// under an accept the loop is making, or a reuse of its number.
func (l *rawListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f != nil {
		l.f.Close()
	}
	if !l.loopMode {
		return l.Listener.Close()
	}
	if l.inLoop {
		return syscall.Shutdown(l.lfd, syscall.SHUT_RD)
	}
	l.lfdClosed = true
	return syscall.Close(l.lfd)
}

// listenKeyBit marks the epoll data of a listening socket the loop accepts
// on (the rest is its place in parker.listeners). Sessions' keys never
// have it (see slotGenMask), and nudgeKey, which has every bit, is looked
// at first.
const listenKeyBit = 1 << 63

// takeListener puts a loop-mode listener's socket in the loop's epoll set,
// where the loop accepts its clients (acceptOn), and reports whether it
// did; the accept goroutine then waits on rl.back.
func (p *parker) takeListener(rl *rawListener) bool {
	if !p.start() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.failed {
		return false
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.closed {
		return false
	}
	if rl.idx < 0 {
		rl.idx = len(p.listeners)
		p.listeners = append(p.listeners, rl)
	}
	// Level-triggered and kept: a client not accepted at one event is
	// announced again at the next wait.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	epoll.SetKey(&ev, listenKeyBit|uint64(rl.idx))
	if syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, rl.lfd, &ev) != nil {
		return false
	}
	rl.inLoop = true
	rl.closeWaiterLocked()
	return true
}

// acceptOn accepts a client on the listener at index i of the loop's list
// and logs it in on the loop (takeFD), one client per event: the socket's
// registration is level-triggered, so the next wait announces the next
// client, without a failed accept to learn that there is none. The loop
// gives accepting back to the listener's goroutine when the listener was
// closed, the loop takes no logins any more (a reload), or accepting
// fails (out of descriptors: the goroutine backs off).
func (p *parker) acceptOn(i int) {
	p.mu.Lock()
	var rl *rawListener
	if i < len(p.listeners) {
		rl = p.listeners[i]
	}
	p.mu.Unlock()
	if rl == nil {
		return
	}
	rl.mu.Lock()
	inLoop, closed := rl.inLoop, rl.closed
	rl.mu.Unlock()
	switch {
	case !inLoop:
		return // given back already
	case closed || !p.loopLogins():
		p.giveBack(rl)
		return
	}
	fd, sa, err := accept4(rl.lfd)
	switch err {
	case nil:
		// (The accept goroutine, waiting on back, holds its WaitGroup
		// slot: the count cannot be zero here.)
		p.loopAccepts.Add(1)
		p.srv.wg.Add(1)
		p.srv.takeFD(fd, sockaddrAddr(sa))
	case syscall.EAGAIN:
	default:
		p.giveBack(rl)
	}
}

// giveBack takes a listener's socket out of the loop's epoll set, closes it
// if Close came meanwhile, and wakes the listener's goroutine.
func (p *parker) giveBack(rl *rawListener) {
	rl.mu.Lock()
	if !rl.inLoop {
		rl.mu.Unlock()
		return // given back already
	}
	rl.inLoop = false
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, rl.lfd, nil)
	closed := rl.closed
	if closed && !rl.lfdClosed {
		rl.lfdClosed = true
		syscall.Close(rl.lfd)
	}
	rl.mu.Unlock()
	if closed {
		p.mu.Lock()
		p.listeners[rl.idx] = nil // for good
		p.mu.Unlock()
	}
	select {
	case rl.back <- struct{}{}:
	default:
	}
}

// giveBackListeners gives every listener the loop accepts on back (the
// parker stops).
func (p *parker) giveBackListeners() {
	p.mu.Lock()
	ls := append([]*rawListener(nil), p.listeners...)
	p.mu.Unlock()
	for _, rl := range ls {
		if rl != nil {
			p.giveBack(rl)
		}
	}
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
