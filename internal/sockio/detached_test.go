package sockio_test

import (
	"errors"
	"io"
	"net"
	"os"
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
