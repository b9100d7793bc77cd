package sockio_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/protocol"
)

// detachedPair is pair with the wrapped end detached.
func detachedPair(t *testing.T) (orig, detached, peer net.Conn) {
	t.Helper()
	if !sockio.DetachAvailable {
		t.Skip("Detach is Linux-only")
	}
	w, p := pair(t)
	d, err := sockio.Detach(w)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return w, d, p
}

// hangGuard fails the test if ch has nothing within a long time: a hang
// guard, not a timing.
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

func TestADetachedConnectionKeepsTheSocketAndClosesTheOriginal(t *testing.T) {
	orig, d, p := detachedPair(t)
	if _, err := orig.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the original after Detach: %v, want net.ErrClosed", err)
	}
	if _, err := p.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(d, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the detached end read %q, %v", buf, err)
	}
	if _, err := d.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(p, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("the peer read %q, %v", buf, err)
	}
	if fd, ok := sockio.FD(d); !ok || fd < 0 {
		t.Fatalf("FD of a detached connection: %d, %v", fd, ok)
	}
	if d.LocalAddr().String() != p.RemoteAddr().String() {
		t.Fatalf("local address %v, the peer sees %v", d.LocalAddr(), p.RemoteAddr())
	}
}

func TestADetachedReadWaitsForDataAndAPastDeadlineSetMeanwhileEndsIt(t *testing.T) {
	_, d, p := detachedPair(t)
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		n, _ := d.Read(buf)
		got <- string(buf[:n])
	}()
	select {
	case s := <-got:
		t.Fatalf("a waiting read returned %q before the peer wrote", s)
	case <-time.After(50 * time.Millisecond):
	}
	p.Write([]byte("data"))
	if s := hangGuard(t, got, "a waiting read"); s != "data" {
		t.Fatalf("the waiting read got %q", s)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := d.Read(make([]byte, 16))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it wait (either order must work)
	d.SetReadDeadline(time.Unix(1, 0))
	err := hangGuard(t, errc, "a read interrupted by a past deadline")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the interrupted read: %v, want a timeout", err)
	}
	// Cleared, the deadline is gone: the next read gets the data.
	d.SetReadDeadline(time.Time{})
	p.Write([]byte("more"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(d, buf); err != nil || string(buf) != "more" {
		t.Fatalf("after clearing the deadline: %q, %v", buf, err)
	}
}

func TestADetachedReadTimesOutAtAFutureDeadline(t *testing.T) {
	_, d, _ := detachedPair(t)
	d.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := d.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a read past its deadline: %v", err)
	}
}

func TestClosingADetachedConnectionEndsAWaitingRead(t *testing.T) {
	_, d, _ := detachedPair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := d.Read(make([]byte, 16))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := hangGuard(t, errc, "a read waiting on a closed connection"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the read: %v, want net.ErrClosed", err)
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a second Close: %v", err)
	}
	if err := d.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetDeadline after Close: %v", err)
	}
}

func TestADetachedWriteToAPeerThatDoesNotReadEndsAtItsDeadline(t *testing.T) {
	_, d, p := detachedPair(t)
	d.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := d.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write nobody reads: %d bytes, %v", n, err)
	}
	if n == 0 {
		t.Fatal("the write reports no bytes written before the deadline")
	}
	// What it reports written arrives whole.
	p.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	got, err := io.Copy(io.Discard, io.LimitReader(p, int64(n)))
	if err != nil || got != int64(n) {
		t.Fatalf("the peer read %d of the %d bytes written: %v", got, n, err)
	}
}

func TestClosingADetachedConnectionEndsAWaitingWrite(t *testing.T) {
	_, d, _ := detachedPair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := d.Write(make([]byte, 64<<20)) // nobody reads: it waits
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	d.Close()
	if err := hangGuard(t, errc, "a write waiting on a closed connection"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the write: %v, want net.ErrClosed", err)
	}
}

func TestADetachedConnectionCanStopWaiting(t *testing.T) {
	_, d, p := detachedPair(t)
	if !sockio.SetNoWait(d, true) {
		t.Fatal("SetNoWait refused a detached connection")
	}
	if _, err := d.Read(make([]byte, 1)); err != sockio.ErrWouldBlock {
		t.Fatalf("a no-wait read with nothing to read: %v", err)
	}
	p.Write([]byte("z"))
	sockio.SetNoWait(d, false)
	buf := make([]byte, 1)
	if _, err := d.Read(buf); err != nil || buf[0] != 'z' {
		t.Fatalf("a waiting read again: %q, %v", buf, err)
	}
}

func TestTLSRunsOverADetachedConnectionAndItsPeekerSeesThePeerLeave(t *testing.T) {
	_, d, p := detachedPair(t)
	cli, srv := tlsOver(t, d, p)
	go srv.Write([]byte("secret"))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(cli, buf); err != nil || string(buf) != "secret" {
		t.Fatalf("read over TLS: %q, %v", buf, err)
	}
	pk := protocol.NewPeeker(d)
	if !pk.Idle() || pk.PeerClosed() {
		t.Fatal("the peeker of an idle detached connection does not see it idle")
	}
	p.Close()
	for i := 0; !pk.PeerClosed(); i++ {
		if i > 2000 {
			t.Fatal("the peeker never saw the peer leave")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAGoroutineWaitingOnADetachedConnectionWaitsInGosNetpollerNotInASystemCall(t *testing.T) {
	_, d, p := detachedPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := d.Read(make([]byte, 16))
		done <- err
	}()
	// Parked in the netpoller, the goroutine shows as "IO wait"; blocked in
	// a system call (ppoll), as "syscall", holding its thread.
	for i := 0; ; i++ {
		state := waitingReadState()
		if state == "IO wait" {
			break
		}
		if i == 2000 {
			t.Fatalf("the goroutine waiting in FDConn.Read is in state %q; want IO wait", state)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Write([]byte("x"))
	if err := hangGuard(t, done, "the waiting read"); err != nil {
		t.Fatal(err)
	}
}

// waitingReadState is the scheduler state of the goroutine in FDConn.Read,
// from a dump of all goroutines ("" when there is none).
func waitingReadState() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "sockio.(*FDConn).Read") {
			continue
		}
		head, _, _ := strings.Cut(g, "\n") // goroutine 7 [IO wait]:
		_, state, _ := strings.Cut(head, "[")
		state, _, _ = strings.Cut(state, "]")
		state, _, _ = strings.Cut(state, ",") // [IO wait, 2 minutes]
		return state
	}
	return ""
}

func TestADetachedConnectionWaitsAgainAndAgainAndItsWritesWaitForRoom(t *testing.T) {
	_, d, p := detachedPair(t)
	// A thousand round trips: each read waits for the peer's answer, so
	// each arms the wait anew.
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := io.ReadFull(p, buf); err != nil {
				return
			}
			p.Write(buf)
		}
	}()
	buf := make([]byte, 1)
	for i := range 1000 {
		if _, err := d.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(d, buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("round trip %d: %v, %v", i, buf, err)
		}
	}
	p.Close()

	// A write far larger than the socket buffers waits for room, more than
	// once, and arrives whole.
	_, d, p = detachedPair(t)
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i % 251)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(p)
		got <- b
	}()
	if n, err := d.Write(big); err != nil || n != len(big) {
		t.Fatalf("the large write: %d, %v", n, err)
	}
	d.Close()
	if b := hangGuard(t, got, "the peer's read"); !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(big))
	}
}
