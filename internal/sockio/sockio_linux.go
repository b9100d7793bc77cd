//go:build linux && !386 && !pgferry_nosockio

package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a *net.TCPConn whose Read and Write skip the scheduler's system
// call bookkeeping (see the package comment).
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The buffer and result of the Read or Write in progress, for the
	// callbacks rc runs (method values made once: no allocation per call).
	rmu    sync.Mutex
	rbuf   []byte
	rn     int32  // 0 with rerrno 0: end of file
	rerrno uint16 // of the read in progress (errno values fit)
	readFn func(uintptr) bool
	wmu    sync.Mutex
	wbuf   []byte
	wn     int
	werrno uint16 // of the write in progress
	// fd is the descriptor the last read was made on (-1 before any),
	// for FD: asking RawConn for it again costs two allocations.
	fd      int32
	writeFn func(uintptr) bool
	// nowait makes a read that would wait return ErrWouldBlock instead
	// (see SetNoWait); guarded by rmu.
	nowait bool
}

const available = true

func setNoWait(c net.Conn, on bool) bool {
	if fc, ok := c.(*FDConn); ok {
		fc.nowait.Store(on)
		return true
	}
	sc, ok := c.(*Conn)
	if !ok {
		return false
	}
	sc.rmu.Lock()
	sc.nowait = on
	sc.rmu.Unlock()
	return true
}

func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		// recvfrom, not read: the kernel goes straight to the socket, where
		// read passes through the file layer's position lock and checks
		// (about 2% of a relayed transaction's CPU, measured).
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
		switch e {
		case 0:
			if n == 0 {
				return 0, io.EOF
			}
			acquireIO()
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, ErrWouldBlock
		}
		return 0, os.NewSyscallError("read", e)
	}
}

func rawPeerClosed(fd int) bool {
	var b [1]byte
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return (e == 0 && n == 0) || e == syscall.ECONNRESET
}

func rawWrite(fd int, b []byte) (int, error) {
	releaseIO()
	done := 0
	for done < len(b) {
		rest := b[done:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			done += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return done, ErrWouldBlock
		default:
			return done, os.NewSyscallError("write", e)
		}
	}
	return done, nil
}

func wrap(tc *net.TCPConn) net.Conn {
	rc, err := tc.SyscallConn()
	if err != nil {
		return tc
	}
	c := &Conn{TCPConn: tc, rc: rc, fd: -1}
	c.readFn, c.writeFn = c.readFD, c.writeFD
	return c
}

// Read reads like net.Conn's Read.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerrno = b, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := int(c.rn), syscall.Errno(c.rerrno)
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno == syscall.EAGAIN:
		return 0, ErrWouldBlock
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	acquireIO()
	return n, nil
}

func (c *Conn) readFD(fd uintptr) bool {
	c.fd = int32(fd)
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)), 0, 0, 0) // (see rawRead)
		switch e {
		case 0:
			c.rn = int32(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if c.nowait {
				c.rerrno = uint16(e)
				return true
			}
			return false // wait until readable, then call again
		default:
			c.rerrno = uint16(e)
			return true
		}
	}
}

// Write writes all of b like net.Conn's Write. MSG_NOSIGNAL keeps a closed
// peer from raising SIGPIPE; the write fails with EPIPE instead.
func (c *Conn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	releaseIO()
	c.wmu.Lock()
	c.wbuf, c.wn, c.werrno = b, 0, 0
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, syscall.Errno(c.werrno)
	c.wbuf = nil
	c.wmu.Unlock()
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

func (c *Conn) writeFD(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable, then carry on
		default:
			c.werrno = uint16(e)
			return true
		}
	}
	return true
}

func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err // RawConn's own "raw-read" wrapping
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func fd(c net.Conn) (int, bool) {
	if fc, ok := c.(*FDConn); ok {
		return fc.fd, !fc.closed.Load()
	}
	sc, ok := c.(*Conn)
	if !ok {
		return -1, false
	}
	sc.rmu.Lock()
	fd := sc.fd
	sc.rmu.Unlock()
	return int(fd), fd >= 0
}
