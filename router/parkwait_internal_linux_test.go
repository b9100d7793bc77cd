//go:build linux && !pgferry_nopark

package router

import (
	"syscall"
	"testing"
	"time"
)

// pollWaitOnAPipe returns a pollWait on a new epoll set watching a pipe's
// read end for input (event data 7), and the pipe's write end.
func pollWaitOnAPipe(t *testing.T) (w *pollWait, epfd, writeEnd int) {
	t.Helper()
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Skip("epoll is not available")
	}
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(pipe[0]); syscall.Close(pipe[1]) })
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setEventKey(&ev, 7)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
		t.Fatal(err)
	}
	w, ok := newPollWait(epfd, make([]syscall.EpollEvent, 4))
	t.Cleanup(func() { w.close(epfd) })
	if !ok {
		t.Fatal("the epoll set could not be put in Go's netpoller")
	}
	return w, epfd, pipe[1]
}

func TestTheParkersWaitInGosNetpollerEndsWithItsDeadlineWhenNothingIsReady(t *testing.T) {
	w, epfd, _ := pollWaitOnAPipe(t)
	if n, err := w.wait(epfd, 20); n != 0 || err != nil {
		t.Fatalf("a wait with nothing ready returned %d events, %v", n, err)
	}
}

func TestTheParkersWaitInGosNetpollerReturnsAnEventThatComesWhileItWaits(t *testing.T) {
	w, epfd, writeEnd := pollWaitOnAPipe(t)
	go func() {
		time.Sleep(50 * time.Millisecond) // (the wait is under way by then, most likely)
		syscall.Write(writeEnd, []byte{1})
	}()
	n, err := w.wait(epfd, 60_000)
	if err != nil || n != 1 || eventKey(&w.events[0]) != 7 {
		t.Fatalf("the wait returned %d events (%v); want the pipe's", n, err)
	}
	// Still readable: the next wait returns at once, without waiting.
	if n, err := w.wait(epfd, 60_000); n != 1 || err != nil {
		t.Fatalf("a wait with an event ready returned %d events, %v", n, err)
	}
}
