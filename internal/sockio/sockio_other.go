//go:build !linux

package sockio

import "net"

func wrap(tc *net.TCPConn) net.Conn { return tc }
