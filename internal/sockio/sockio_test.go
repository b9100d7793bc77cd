package sockio_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/sockio"
)

// pair returns both ends of a loopback TCP connection, the first wrapped.
func pair(t *testing.T) (wrapped, peer net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-accepted
	if p == nil {
		t.Fatal("accept failed")
	}
	w := sockio.Wrap(c)
	if _, ok := w.(*net.TCPConn); ok && isLinux {
		t.Fatal("Wrap returned the plain TCP connection on Linux")
	}
	t.Cleanup(func() { w.Close(); p.Close() })
	return w, p
}

func TestAWrappedConnectionCarriesBytesBothWaysAndSeesEOF(t *testing.T) {
	w, p := pair(t)
	if _, err := w.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(p, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	if _, err := p.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(w, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("wrapped read %q, %v", buf, err)
	}
	p.Close()
	if n, err := w.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v; want 0, io.EOF", n, err)
	}
}

func TestAWriteLargerThanTheSocketBuffersWaitsForThePeerAndArrivesWhole(t *testing.T) {
	w, p := pair(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(big)
		done <- err
	}()
	got, err := io.ReadAll(io.LimitReader(p, int64(len(big))))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("the peer got %d bytes that differ from the %d written", len(got), len(big))
	}
}

func TestAReadDeadlineEndsABlockedReadWithATimeout(t *testing.T) {
	w, _ := pair(t)
	w.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := w.Read(make([]byte, 8))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v; want a timeout", err)
	}
	// A cleared deadline lets the next read wait for data again.
	w.SetReadDeadline(time.Time{})
	w.SetReadDeadline(time.Unix(1, 0))
	if _, err := w.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a past deadline: %v; want a timeout at once", err)
	}
}

func TestCloseEndsABlockedRead(t *testing.T) {
	w, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := w.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	w.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read interrupted by Close: %v; want net.ErrClosed", err)
	}
}

func TestWritingToAPeerThatLeftFailsWithoutKillingTheProcess(t *testing.T) {
	w, p := pair(t)
	p.(*net.TCPConn).SetLinger(0) // reset, not FIN
	p.Close()
	time.Sleep(20 * time.Millisecond)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = w.Write([]byte("after the peer left"))
	}
	if err == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("write error %v is not a *net.OpError for write", err)
	}
}

func TestReadAndWriteAllocateNothing(t *testing.T) {
	w, p := pair(t)
	msg, buf := []byte("Q\x00\x00\x00\x0dselect 1\x00"), make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(w, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("a write and a read on the wrapped connection allocate %.1f times, want 0", allocs)
	}
}

func TestFDIsTheSocketsDescriptorOnceItWasRead(t *testing.T) {
	w, p := pair(t)
	if fd, ok := sockio.FD(w); ok {
		t.Fatalf("FD = %d before any read, want none", fd)
	}
	if !isLinux {
		return
	}
	p.Write([]byte("x"))
	if _, err := w.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	got, ok := sockio.FD(w)
	if !ok {
		t.Fatal("FD knows no descriptor after a read")
	}
	rc, err := w.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := -1
	rc.Control(func(fd uintptr) { want = int(fd) })
	if got != want {
		t.Errorf("FD = %d, the socket's descriptor is %d", got, want)
	}
}
