package router

import "syscall"

// listenerKeepalive is TCP keepalive as Go sets it on each accepted
// connection by default, for the listening socket to pass on.
var listenerKeepalive = []sockopt{
	{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
}
