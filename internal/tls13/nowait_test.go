//go:build linux

package tls13

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pgferry/pgferry/internal/sockio"
)

// nowaitConn is one end of a loopback connection read and written as the
// relay loop does, with raw non-blocking calls (sockio.Raw).
type nowaitConn struct {
	net.Conn
	raw sockio.Raw
}

func (c *nowaitConn) Read(p []byte) (int, error)  { return c.raw.Read(p) }
func (c *nowaitConn) Write(p []byte) (int, error) { return c.raw.Write(p) }

// nowait has c read and write its socket with raw non-blocking calls.
func nowait(t *testing.T, c *Conn) {
	t.Helper()
	if !sockio.Available {
		t.Skip("raw socket calls are not built in")
	}
	tc := c.raw.(*net.TCPConn)
	sc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	sc.Control(func(f uintptr) { fd = int(f) }) // (Go made it non-blocking)
	c.raw = &nowaitConn{Conn: tc, raw: sockio.Raw{FD: fd}}
}

func TestARecordTheSocketTakesInPartGoesOutWholeOnceDrained(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	nowait(t, server)
	// Fixed buffers, which 1 MiB cannot fit.
	server.raw.(*nowaitConn).Conn.(*net.TCPConn).SetWriteBuffer(32 << 10)
	client.raw.(*net.TCPConn).SetReadBuffer(64 << 10)

	want := pattern(1<<20, 11)
	firstBlock := make(chan struct{})
	got := make(chan []byte, 1)
	go func() {
		<-firstBlock // the client reads nothing until the socket is full
		b := make([]byte, len(want))
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.ReadFull(client, b)
		if err != nil {
			t.Errorf("the client's read after %d bytes: %v", n, err)
		}
		got <- b[:n]
	}()

	blocked, p := 0, want
	for len(p) > 0 || server.Unsent() > 0 {
		var err error
		if len(p) > 0 {
			var n int
			n, err = server.Write(p)
			p = p[n:]
		} else {
			err = server.Drain()
		}
		if err == nil {
			continue
		}
		if err != sockio.ErrWouldBlock {
			t.Fatalf("writing with %d bytes left: %v", len(p), err)
		}
		if blocked++; blocked == 1 {
			if server.Unsent() == 0 {
				t.Fatal("the socket took part of a record, and nothing is reported unsent")
			}
			// Nothing more is sealed while a record waits: the next write
			// takes none of p.
			if n, err := server.Write(p); n != 0 || err != sockio.ErrWouldBlock {
				t.Fatalf("a write behind an unsent record: %d, %v; want 0 and ErrWouldBlock", n, err)
			}
			close(firstBlock)
		}
		time.Sleep(100 * time.Microsecond) // (for room)
	}
	if blocked == 0 {
		t.Fatal("the socket never refused a write: the test proves nothing")
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the client read %d bytes, equal to what was written: %v", len(b), bytes.Equal(b, want))
	}
}

func TestAReadThatWouldBlockLosesNothingAndReadableSaysWhatTheSocketWouldNot(t *testing.T) {
	server, client := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	nowait(t, server)
	buf := make([]byte, 256)

	if n, err := server.Read(buf); n != 0 || err != sockio.ErrWouldBlock {
		t.Fatalf("reading an empty socket: %d, %v; want ErrWouldBlock", n, err)
	}
	if server.Readable() || server.Pending() {
		t.Fatal("an empty connection reports input")
	}

	// Half a record: the read would block, and the half stays.
	first := pattern(100, 1)
	cut := &cutConn{Conn: client.raw, cut: 30, rest: make(chan struct{})}
	client.raw = cut
	wrote := make(chan error, 1)
	go func() { _, err := client.Write(first); wrote <- err }()
	waitFor(t, func() bool {
		n, err := server.Read(buf)
		if n != 0 || err != sockio.ErrWouldBlock {
			t.Fatalf("reading half a record: %d, %v; want ErrWouldBlock", n, err)
		}
		return server.Pending()
	})
	if server.Readable() {
		t.Fatal("half a record is reported readable")
	}
	close(cut.rest)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}

	// Two records arrive together: after the first is read in part, the
	// rest of it and the second are readable without the socket.
	second := pattern(100, 2)
	if _, err := client.Write(second); err != nil {
		t.Fatal(err)
	}
	// Both records' bytes in the socket before the first read, which then
	// takes them together.
	fd := server.raw.(*nowaitConn).raw.FD
	unread := len(first) + len(second) + 2*(recordHeader+1+tagLen) - (server.rend - server.rpos)
	waitFor(t, func() bool { return socketHolds(t, fd) >= unread })
	var n int
	waitFor(t, func() bool {
		var err error
		n, err = server.Read(buf[:60])
		if err != nil && err != sockio.ErrWouldBlock {
			t.Fatal(err)
		}
		return n > 0
	})
	if !bytes.Equal(buf[:n], first[:60]) {
		t.Fatalf("read %q; want the first record's start", buf[:n])
	}
	for _, want := range [][]byte{first[60:], second} {
		if !server.Readable() {
			t.Fatal("data held by the connection is not reported readable")
		}
		n, err := server.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("read %d bytes, %v", n, err)
		}
	}
	if server.Readable() {
		t.Fatal("an emptied connection reports readable")
	}
	if n, err := server.Read(buf); n != 0 || err != sockio.ErrWouldBlock {
		t.Fatalf("reading an emptied socket: %d, %v; want ErrWouldBlock", n, err)
	}
}

// socketHolds reports how many bytes socket fd has received and not yet
// given to a read (FIONREAD).
func socketHolds(t *testing.T, fd int) int {
	t.Helper()
	var n int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	return int(n)
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
	}
}
