//go:build linux && !pgferry_nopark && !pgferry_nolooplogin

package router

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestASocketAcceptedBareHasTheOptionsOfOneAcceptedByGoAndCloseStopsTheWait(t *testing.T) {
	l, err := ListenConfig(false).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl, ok := newRawListener(l, false).(*rawListener)
	if !ok {
		l.Close()
		t.Fatal("a TCP listener was not wrapped")
	}
	defer rl.Close()
	if !rl.usable() {
		t.Fatal("the listener's duplicate could not be opened")
	}
	d, err := net.Dial("tcp", rl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fd, peer, err := rl.acceptFD()
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if peer.String() != d.LocalAddr().String() {
		t.Errorf("peer %s; want the client's address %s", peer, d.LocalAddr())
	}
	for _, w := range []struct {
		name       string
		level, opt int
		value      int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
		{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
	} {
		if v, err := syscall.GetsockoptInt(fd, w.level, w.opt); err != nil || v != w.value {
			t.Errorf("%s = %d (%v); want %d", w.name, v, err, w.value)
		}
	}
	if fl, err := fcntlFlags(fd); err != nil || fl&syscall.O_NONBLOCK == 0 {
		t.Errorf("flags %#x (%v): want a non-blocking socket", fl, err)
	}

	// A wait for the next client ends when the listener is closed, and
	// the port stops listening.
	ended := make(chan error, 1)
	go func() {
		_, _, err := rl.acceptFD()
		ended <- err
	}()
	time.Sleep(10 * time.Millisecond) // (parked or not, the close must end it)
	rl.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("the wait ended with %v; want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("closing the listener did not end the wait for a client")
	}
	if c, err := net.DialTimeout("tcp", rl.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the closed listener's port still accepts connections")
	}
}

func fcntlFlags(fd int) (int, error) {
	fl, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(fl), nil
}
