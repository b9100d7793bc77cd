//go:build !linux || 386

package protocol

import "syscall"

// peekSocket is a non-blocking recv(MSG_PEEK).
func peekSocket(fd uintptr, b []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}
