//go:build linux && !pgferry_nopark

// How the parker's loop waits for its epoll set: in Go's netpoller while
// it is idle, with a raw system call while the relay loop is busy.

package router

import (
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// epollWait is syscall.EpollWait, or, when raw, the same wait as a raw
// system call: the Go scheduler then does not hand the loop's processor
// (P) to another thread while the loop waits, nor make the loop's thread
// queue for one when it wakes: a busy loop waits and wakes about a
// hundred times per thousand transactions, and that hand-over cost more
// than the relaying (bench/cmd/relayshape). The loop keeps its P; the
// others run the rest of pgferry, so the parker waits raw only with more
// than one P, and only while busy (see loopBusyHold): sysmon interrupts a
// goroutine that holds its P for long (a signal, EINTR) about every 10 ms,
// which an idle pgferry must not pay.
func epollWait(epfd int, events []syscall.EpollEvent, msec int, raw bool) (int, error) {
	if !raw {
		return syscall.EpollWait(epfd, events, msec)
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// pollWait waits for the parker's epoll set in Go's netpoller: an epoll
// descriptor is itself pollable (readable while events are ready), so the
// loop's goroutine parks on it as on a socket, and its P runs other
// goroutines meanwhile. Waiting in epoll_wait instead keeps the P in the
// system call until Go's sysmon takes it back, and sysmon, having taken
// one back, polls every 20 µs for a while: in a connection storm, where
// the parker waits between logins, that was about a tenth of pgferry's
// samples (perf).
type pollWait struct {
	f      *os.File // owns the epoll descriptor from here on
	rc     syscall.RawConn
	events []syscall.EpollEvent
	n      int
	err    error
	look   func(fd uintptr) bool // w.lookFD, made once
}

// newPollWait puts the epoll set epfd in Go's netpoller, for waits that
// fill events, and reports whether it could; the returned pollWait owns
// epfd either way (close).
func newPollWait(epfd int, events []syscall.EpollEvent) (w *pollWait, ok bool) {
	w = &pollWait{events: events}
	if syscall.SetNonblock(epfd, true) != nil {
		return w, false // (epfd stays blocking: not the file's)
	}
	w.f = os.NewFile(uintptr(epfd), "parker epoll set")
	rc, err := w.f.SyscallConn()
	if err != nil || w.f.SetReadDeadline(time.Time{}) != nil { // not in the netpoller
		return w, false
	}
	w.rc = rc
	w.look = w.lookFD
	return w, true
}

// wait returns the events ready within msec milliseconds (0 with none).
func (w *pollWait) wait(epfd, msec int) (int, error) {
	if w.look(uintptr(epfd)); w.n != 0 || w.err != nil || msec == 0 {
		return w.n, w.err
	}
	w.f.SetReadDeadline(time.Now().Add(time.Duration(msec) * time.Millisecond))
	if err := w.rc.Read(w.look); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		return 0, err
	}
	return w.n, w.err
}

// lookFD takes the events ready now, without waiting, and reports whether
// the wait is over (events, or an error).
func (w *pollWait) lookFD(fd uintptr) bool {
	for {
		w.n, w.err = epollWait(int(fd), w.events, 0, true)
		if w.err != syscall.EINTR {
			return w.n != 0 || w.err != nil
		}
	}
}

// close closes the epoll set.
func (w *pollWait) close(epfd int) {
	if w.f != nil {
		w.f.Close()
		return
	}
	syscall.Close(epfd)
}

// setEventKey and eventKey write and read an epoll event's 64 bits of data.
func setEventKey(ev *syscall.EpollEvent, key uint64) {
	ev.Fd, ev.Pad = int32(uint32(key)), int32(uint32(key>>32))
}

func eventKey(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
