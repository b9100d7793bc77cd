//go:build linux && !386 && !pgferry_nosockio

package sockio

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAWaitThatEndsAtItsDeadlineLeavesTheSocketUnarmed(t *testing.T) {
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
	defer peer.Close()
	d, err := Detach(c)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fc := d.(*FDConn)
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
