//go:build !linux || 386 || pgferry_nosockio

package sockio

import "net"

func wrap(tc *net.TCPConn) net.Conn { return tc }

func fd(net.Conn) (int, bool) { return -1, false }
