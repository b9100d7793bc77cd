//go:build !linux || 386 || pgferry_nosockio

package sockio

import (
	"errors"
	"net"
)

func wrap(tc *net.TCPConn) net.Conn { return tc }

func fd(net.Conn) (int, bool) { return -1, false }

func setNoWait(net.Conn, bool) bool { return false }

var errNoRaw = errors.New("sockio: raw socket calls are not built in")

func rawRead(int, []byte) (int, error)  { return 0, errNoRaw }
func rawWrite(int, []byte) (int, error) { return 0, errNoRaw }

const available = false

const detachAvailable = false

func detach(net.Conn) (net.Conn, error) { return nil, errNoRaw }

func rawPeerClosed(int) bool { return false }
