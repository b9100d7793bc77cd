//go:build linux && !386 && !pgferry_nosockio

package sockio

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestAWaitThatEndsAtItsDeadlineLeavesTheSocketUnarmed(t *testing.T) {
	fc, peer := aDetachedConnection(t)
	d := net.Conn(fc)
	d.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := d.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a read nobody answers: %v", err)
	}
	// Left armed, every packet the peer sends from now on (to an event
	// loop that reads the socket itself) would wake Go's netpoller.
	if ev := registeredEvents(t, &fc.rw, fc.fd); ev&0x1 != 0 { // EPOLLIN
		t.Fatalf("after the wait, the socket is registered for events %#x: still armed for input", ev)
	}
	d.SetReadDeadline(time.Time{})
	peer.Write([]byte("x"))
	if _, err := d.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the next read: %v", err)
	}
}

// registeredEvents reads the events sock is registered for in w's epoll
// set, from /proc/self/fdinfo.
func registeredEvents(t *testing.T, w *waiter, sock int) uint64 {
	t.Helper()
	var ep uintptr
	if err := w.rc.Control(func(fd uintptr) { ep = fd }); err != nil {
		t.Fatal(err)
	}
	info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(ep)))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line) // tfd: 7 events: 2019 data: ...
		if len(f) >= 4 && f[0] == "tfd:" && f[1] == strconv.Itoa(sock) && f[2] == "events:" {
			ev, err := strconv.ParseUint(f[3], 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
	}
	t.Fatalf("the socket is not in its waiter's epoll set:\n%s", info)
	return 0
}

// A kill (a past deadline) and the borrower's own deadline, set at once on
// a read that waits: whichever is set last rules both copies of the
// deadline, the stored one and the netpoller's, and so the wait. Each test
// sets one while the other is half stored, and holds the read where it has
// looked at the stored copy and not yet at the netpoller's.

func TestABorrowersDeadlineSetAmidAKillsLeavesTheWaitWaitingNotSpinning(t *testing.T) {
	// Stored apart (not under one lock), the borrower's deadline would be
	// the stored one and the kill's the netpoller's: the netpoller would
	// end each wait at once and the stored deadline send it back, until the
	// borrower's deadline. The lock and wait's taking the stored deadline
	// again each prevent that; this test needs neither one alone (the next
	// one needs the lock).
	read, peer := aRacedRead(t, time.Unix(1, 0), time.Now().Add(time.Hour))
	peer.Write([]byte("x"))
	if r := awaitRead(t, read); r.err != nil || r.data != "x" {
		t.Fatalf("the read, set to the borrower's deadline last, got %q, %v; want the peer's x", r.data, r.err)
	}
}

func TestAKillsPastDeadlineSetAmidABorrowersEndsTheWait(t *testing.T) {
	// Stored apart (not under one lock), the kill's deadline would be the
	// stored one, which the read has looked at already, and the borrower's
	// the netpoller's: the read would wait, killed, until the borrower's
	// deadline.
	read, _ := aRacedRead(t, time.Now().Add(time.Hour), time.Unix(1, 0))
	if r := awaitRead(t, read); !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("the read, killed last, got %q, %v; want a timeout", r.data, r.err)
	}
}

type readResult struct {
	data string
	err  error
}

// aRacedRead starts a read with no deadline on a detached connection,
// holds it where it has looked at the stored deadline and not yet at the
// netpoller's, sets the read deadline to first and, while first is half
// stored, to second, and lets the read go on. It returns the read's result
// and the connection's peer.
func aRacedRead(t *testing.T, first, second time.Time) (<-chan readResult, net.Conn) {
	t.Helper()
	// (Reset after the connection's Close, which waits for the read: until
	// then, the read may set its deadline again, and call the hook.)
	t.Cleanup(func() { betweenDeadlineStores = nil })
	fc, peer := aDetachedConnection(t)
	var nested atomic.Bool
	secondDone := make(chan struct{})
	betweenDeadlineStores = func() {
		if !nested.CompareAndSwap(false, true) {
			return // the second setter's own stores, or the read's
		}
		go func() {
			defer close(secondDone)
			fc.SetReadDeadline(second)
		}()
		// The second setter goes as far as it can: to its end, or until it
		// waits for a lock, which only the first, stopped here, can hold.
		for limit := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
			select {
			case <-secondDone:
				return
			default:
			}
			for _, state := range otherGoroutinesIn("sockio.(*FDConn).setDeadline") {
				if strings.HasPrefix(state, "sync.") { // sync.Mutex.Lock
					return
				}
			}
			if time.Now().After(limit) {
				t.Error("the second setter neither returned nor waited for the first")
				return
			}
		}
	}

	// The set's file lets one reader in at a time: one of the test's own,
	// staying in, holds the read at its door, after the read's look at the
	// stored deadline (none).
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	letIn := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letIn) // (before Close, which waits for it)
	go fc.rw.rc.Read(func(uintptr) bool {
		close(inside)
		<-release
		return true
	})
	hangGuard(t, inside, "the test's reader of the set")
	read := make(chan readResult, 1)
	go func() {
		buf := make([]byte, 16)
		n, err := fc.Read(buf)
		read <- readResult{string(buf[:n]), err}
	}()
	for limit := time.Now().Add(20 * time.Second); len(otherGoroutinesIn("sockio.(*FDConn).Read", "internal/poll.(*fdMutex).rwlock")) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatal("the read never came to the set's file")
		}
	}

	fc.SetReadDeadline(first)
	hangGuard(t, secondDone, "the second setter")
	letIn()
	return read, peer
}

// aDetachedConnection returns a detached connection and its peer, both
// closed when the test ends.
func aDetachedConnection(t *testing.T) (*FDConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	d, err := Detach(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d.(*FDConn), peer
}

// awaitRead is hangGuard for a read, and says what a read that never
// returns does: runs (it spins) or waits.
func awaitRead(t *testing.T, read <-chan readResult) readResult {
	t.Helper()
	select {
	case r := <-read:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("the read never returned; its goroutine's state: %q", otherGoroutinesIn("sockio.(*FDConn).Read"))
		panic("unreachable")
	}
}

// hangGuard fails the test if ch has nothing within a long time: a hang
// guard, not a timing (the external tests' own, which this package cannot
// see).
func hangGuard[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("%s never returned", what)
		panic("unreachable")
	}
}

// otherGoroutinesIn lists the scheduler states ("running", "IO wait",
// "sync.Mutex.Lock", ...) of the goroutines, other than the caller, in all
// of the functions fns, from a dump of all goroutines.
func otherGoroutinesIn(fns ...string) []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var states []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the caller
			continue
		}
		in := true
		for _, fn := range fns {
			in = in && strings.Contains(g, fn+"(")
		}
		if !in {
			continue
		}
		head, _, _ := strings.Cut(g, "\n") // goroutine 7 [IO wait]:
		_, state, _ := strings.Cut(head, "[")
		state, _, _ = strings.Cut(state, "]")
		state, _, _ = strings.Cut(state, ",") // [IO wait, 2 minutes]
		states = append(states, state)
	}
	return states
}
