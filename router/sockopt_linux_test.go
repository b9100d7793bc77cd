package router_test

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/pgferry/pgferry/router"
)

func TestAcceptedClientSocketsInheritKeepaliveFromTheListener(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		l, err := router.ListenConfig(reuse).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		d, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			name       string
			level, opt int
			value      int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
			{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		}
		rc.Control(func(fd uintptr) {
			for _, w := range want {
				if v, err := syscall.GetsockoptInt(int(fd), w.level, w.opt); err != nil || v != w.value {
					t.Errorf("reuseport=%v: accepted socket has %s = %d (%v), want %d", reuse, w.name, v, err, w.value)
				}
			}
		})
	}
}
