//go:build !linux || 386

package sockio

import "net"

func wrap(tc *net.TCPConn) net.Conn { return tc }
