//go:build linux

package epoll

import (
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// Wait is syscall.EpollWait, or, when raw, the same wait as a raw
// system call: the Go scheduler then does not hand the loop's processor
// (P) to another thread while the loop waits, nor make the loop's thread
// queue for one when it wakes: a busy loop waits and wakes about a
// hundred times per thousand transactions, and that hand-over cost more
// than the relaying (bench/cmd/relayshape). The loop keeps its P; the
// others run the rest of pgferry, so the parker waits raw only with more
// than one P, and only while busy (the relay loop's loopBusyHold): sysmon interrupts a
// goroutine that holds its P for long (a signal, EINTR) about every 10 ms,
// which an idle pgferry must not pay.
//
// events must not be empty.
func Wait(epfd int, events []syscall.EpollEvent, msec int, raw bool) (int, error) {
	if !raw {
		return syscall.EpollWait(epfd, events, msec)
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Waiter waits for the parker's epoll set in Go's netpoller: an epoll
// descriptor is itself pollable (readable while events are ready), so the
// loop's goroutine parks on it as on a socket, and its P runs other
// goroutines meanwhile. Waiting in epoll_wait instead keeps the P in the
// system call until Go's sysmon takes it back, and sysmon, having taken
// one back, polls every 20 µs for a while: in a connection storm, where
// the parker waits between logins, that was about a tenth of pgferry's
// samples (perf).
//
// The set is in Go's netpoller only while the loop waits through it: a
// duplicate of its descriptor is registered there (open) and closed
// again (Release) when the relay loop gets busy and waits raw. Registered,
// every event in the set would also wake a thread waiting in Go's
// netpoller, and every EPOLL_CTL_ADD into a set that another set watches
// takes a kernel-wide lock.
type Waiter struct {
	f      *os.File // the duplicate, while registered; nil otherwise
	rc     syscall.RawConn
	failed bool // the netpoller could not take the set: wait in epoll_wait
	events []syscall.EpollEvent
	n      int
	err    error
	look   func(fd uintptr) bool // w.lookFD, made once
}

// NewWaiter returns a Waiter that reads events into events.
func NewWaiter(events []syscall.EpollEvent) *Waiter {
	w := &Waiter{events: events}
	w.look = w.lookFD
	return w
}

// Wait returns the events of the set epfd ready within msec milliseconds
// (0 with none).
func (w *Waiter) Wait(epfd, msec int) (int, error) {
	if w.f == nil && !w.open(epfd) {
		return Wait(epfd, w.events, msec, false)
	}
	// A look first: events left over from a full batch, or ready since,
	// which the netpoller's edge-triggered registration may not report
	// again. Read looks once more after it clears the readiness it had
	// recorded, before it parks: an event that comes between the two
	// looks is not lost.
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

// open registers a duplicate of epfd in Go's netpoller and reports
// whether it could.
func (w *Waiter) open(epfd int) bool {
	if w.failed {
		return false
	}
	dup, err := syscall.Dup(epfd)
	if err != nil {
		return false // (out of descriptors: try again next time)
	}
	syscall.CloseOnExec(dup)
	if syscall.SetNonblock(dup, true) != nil { // (the set's, shared: epoll_wait ignores it)
		syscall.Close(dup)
		w.failed = true
		return false
	}
	f := os.NewFile(uintptr(dup), "parker epoll set")
	rc, err := f.SyscallConn()
	if err != nil || f.SetReadDeadline(time.Time{}) != nil { // not in the netpoller
		f.Close()
		w.failed = true
		return false
	}
	w.f, w.rc = f, rc
	return true
}

// Release takes the set out of Go's netpoller, if it is there.
func (w *Waiter) Release() {
	if w.f != nil {
		w.f.Close()
		w.f, w.rc = nil, nil
	}
}

// lookFD takes the events ready now, without waiting, and reports whether
// the wait is over (events, or an error).
func (w *Waiter) lookFD(fd uintptr) bool {
	for {
		w.n, w.err = Wait(int(fd), w.events, 0, true)
		if w.err != syscall.EINTR {
			return w.n != 0 || w.err != nil
		}
	}
}

// SetKey and Key write and read an epoll event's 64 bits of data.
func SetKey(ev *syscall.EpollEvent, key uint64) {
	ev.Fd, ev.Pad = int32(uint32(key)), int32(uint32(key>>32))
}

// Key reads what SetKey wrote.
func Key(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
