//go:build linux

package epoll

import (
	"sync"
	"syscall"
	"testing"
	"time"
)

// waiterOnPipes returns a Waiter with slots events on a new epoll set
// watching n pipes' read ends for input (event data 1 to n; flags added to
// EPOLLIN), and the pipes' write ends.
func waiterOnPipes(t *testing.T, n, slots int, flags uint32) (w *Waiter, epfd int, writeEnds []int) {
	t.Helper()
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Skip("epoll is not available")
	}
	w = NewWaiter(make([]syscall.EpollEvent, slots))
	t.Cleanup(func() {
		w.Release()
		syscall.Close(epfd)
	})
	for i := 1; i <= n; i++ {
		var pipe [2]int
		if err := syscall.Pipe2(pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(pipe[0]); syscall.Close(pipe[1]) })
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | flags}
		SetKey(&ev, uint64(i))
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
			t.Fatal(err)
		}
		writeEnds = append(writeEnds, pipe[1])
	}
	return w, epfd, writeEnds
}

func TestTheParkersWaitInGosNetpollerEndsWithItsDeadlineWhenNothingIsReady(t *testing.T) {
	w, epfd, _ := waiterOnPipes(t, 1, 4, 0)
	for i := 0; i < 2; i++ {
		if n, err := w.Wait(epfd, 20); n != 0 || err != nil {
			t.Fatalf("wait %d with nothing ready returned %d events, %v", i, n, err)
		}
		if w.f == nil {
			t.Fatal("the set is not in Go's netpoller while the loop waits through it")
		}
	}
}

func TestTheParkersWaitInGosNetpollerReturnsAnEventThatComesWhileItWaits(t *testing.T) {
	w, epfd, writeEnds := waiterOnPipes(t, 1, 4, 0)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // (before the pipes close: cleanups run last first)
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(50 * time.Millisecond) // (the wait is under way by then, most likely)
		syscall.Write(writeEnds[0], []byte{1})
	}()
	n, err := w.Wait(epfd, 10_000)
	if err != nil || n != 1 || Key(&w.events[0]) != 1 {
		t.Fatalf("the wait returned %d events (%v); want the pipe's", n, err)
	}
	// Still readable (level-triggered): the next wait finds it again.
	if n, err := w.Wait(epfd, 10_000); n != 1 || err != nil {
		t.Fatalf("a wait with an event ready returned %d events, %v", n, err)
	}
}

func TestTheParkersWaitReturnsWhatAFullBatchLeftAndSurvivesLeavingTheNetpoller(t *testing.T) {
	// One-shot registrations, as the parker's: each event comes once.
	w, epfd, writeEnds := waiterOnPipes(t, 6, 4, syscall.EPOLLONESHOT)
	for _, fd := range writeEnds {
		syscall.Write(fd, []byte{1})
	}
	seen := map[uint64]bool{}
	for i, want := range []int{4, 2} {
		n, err := w.Wait(epfd, 10_000)
		if err != nil || n != want {
			t.Fatalf("wait %d returned %d events, %v; want %d", i, n, err, want)
		}
		for _, ev := range w.events[:n] {
			seen[Key(&ev)] = true
		}
		w.Release() // as when the relay loop gets busy; the next wait registers again
		if w.f != nil {
			t.Fatal("release left the set in Go's netpoller")
		}
	}
	if len(seen) != 6 {
		t.Errorf("the two waits named %d different pipes; want all 6", len(seen))
	}
	if n, err := w.Wait(epfd, 20); n != 0 || err != nil {
		t.Errorf("a third wait returned %d events, %v; want none (each came once)", n, err)
	}
}
