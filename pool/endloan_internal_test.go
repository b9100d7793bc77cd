package pool

import (
	"bytes"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// deadlineConn records the read deadlines set on it; the first past one
// blocks until release is closed, after saying so on entered.
type deadlineConn struct {
	net.Conn
	entered, release chan struct{}
	once             sync.Once
	mu               sync.Mutex
	last             time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		c.once.Do(func() {
			close(c.entered)
			<-c.release
		})
	}
	c.mu.Lock()
	c.last = t
	c.mu.Unlock()
	return nil
}

func TestALoanThatEndsWhileItsWatchFiresLeavesNoPastDeadlineOnTheIdleConnection(t *testing.T) {
	c := &deadlineConn{entered: make(chan struct{}), release: make(chan struct{})}
	sc := &ServerConn{Conn: c}
	sc.Watch(1)

	fired := make(chan struct{})
	go func() {
		defer close(fired)
		sc.fireIfOverdue(5) // the watch's goroutine: its deadline is half set
	}()
	<-c.entered
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc.endLoan() // the borrower's transaction ends meanwhile
	}()
	// Let the firing finish only once endLoan has either returned or
	// waits for it (for intMu): it must then clear what the firing set.
	waitReturnedOrBlocked(t, ended, "(*ServerConn).endLoan")
	close(c.release)
	for _, ch := range []chan struct{}{fired, ended} {
		select {
		case <-ch:
		case <-time.After(20 * time.Second): // a hang guard
			t.Fatal("the watch's firing or the loan's end never returned")
		}
	}
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if !last.IsZero() || sc.interrupted.Load() {
		t.Fatalf("after the loan: read deadline %v, interrupted %v; want none left for the next borrower", last, sc.interrupted.Load())
	}
}

// waitReturnedOrBlocked waits until done is closed or a goroutine running
// fn waits for a sync.Mutex, whichever comes first (a 20 s hang guard).
func waitReturnedOrBlocked(t *testing.T, done chan struct{}, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		select {
		case <-done:
			return
		default:
		}
		for _, g := range bytes.Split(buf[:runtime.Stack(buf, true)], []byte("\n\n")) {
			if bytes.Contains(g, []byte(fn)) && bytes.Contains(g, []byte("sync.(*Mutex).Lock")) {
				return
			}
		}
	}
	t.Fatalf("%s neither returned nor waited for a lock", fn)
}
