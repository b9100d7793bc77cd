//go:build linux && !pgferry_nopark

package router

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// A client the loop accepts for its login while its epoll set has failed
// goes to a goroutine straight from takeFD, on the goroutine that accepted
// it (the loop's or the accept goroutine), which no turn's recover covers:
// a panic before the loop let go of the login must end that login (the
// client told, its socket closed, its count and WaitGroup slot given
// back), not the process.
func TestAPanicAsALoginTheLoopCannotWaitForGoesToAGoroutineEndsOnlyThatLogin(t *testing.T) {
	srv, err := New(unreachableConfig(t, "relay_loop = true"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &srv.parker
	if !p.start() {
		t.Fatal("the parker did not start")
	}
	p.fail() // as when its epoll wait fails: the loop waits for no client any more
	accepted, client := tcpPair(t)
	fd := detachedFD(t, accepted)

	undo := setFault(func(ss *session, where string) {
		if ss.srv == srv && where == "handing off login" {
			panic("a fault injected at " + where)
		}
	})
	defer undo()
	srv.wg.Add(1) // the client's slot, which takeFD's callers take
	if r := takeFDRecovering(srv, fd, client.LocalAddr()); r != nil {
		t.Fatalf("the panic reached the goroutine that accepted the client: %v", r)
	}
	undo()

	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("the client's connection did not end (%v; read %q)", err, b)
	}
	if len(b) == 0 || b[0] != 'E' || !bytes.Contains(b, []byte("CXX000\x00")) || len(b) != 1+int(b[1])<<24+int(b[2])<<16+int(b[3])<<8+int(b[4]) {
		t.Fatalf("the client whose login panicked read %q; want one ErrorResponse with SQLSTATE XX000", b)
	}
	if n := srv.panics.Load(); n != 1 {
		t.Fatalf("%d panics counted; want the one", n)
	}
	if n := srv.clients.Load(); n != 0 {
		t.Fatalf("%d clients counted; want 0", n)
	}

	// Nothing holds a WaitGroup slot: Shutdown returns at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		srv.Shutdown(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return: the login was never let go of")
	}
	if ctx.Err() != nil {
		t.Fatal("Shutdown returned only at its deadline")
	}
}

// takeFDRecovering runs takeFD, recovering a panic that reaches its caller,
// and returns it.
func takeFDRecovering(s *Server, fd int, peer net.Addr) (r any) {
	defer func() { r = recover() }()
	s.takeFD(fd, peer)
	return nil
}
