//go:build linux && !386

package protocol

import (
	"syscall"
	"unsafe"
)

// peekSocket is a non-blocking recv(MSG_PEEK) made as a raw system call: it
// never blocks, so the scheduler need not know of it (see internal/sockio).
func peekSocket(fd uintptr, b []byte) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
