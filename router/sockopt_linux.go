package router

import "syscall"

// listenerKeepalive is TCP keepalive as Go sets it on each accepted
// connection by default, and TCP_NODELAY, which Go sets on each too, for
// the listening socket to pass on (to sockets accepted without Go's
// net.Conn too: see rawListener).
var listenerKeepalive = []sockopt{
	{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
	{syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
}
