//go:build linux && !pgferry_nopark

package router

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/internal/tls13"
)

// A panic in reattach (a bug there, or in what it calls: net.FileConn's
// aftermath, the logger, TLS) ends the session through its owner's
// recover, and end closes its socket. The descriptor number reattach had
// made an os.File of must then be closed once: closed again later (by
// that os.File's finalizer) it would cut off whichever connection the
// kernel gave the number to meanwhile (Linux hands out the lowest free
// one). The client sees its connection end at once, not when the
// collector finds the net.Conn reattach made, and the FATAL end sends
// fails instead of panicking a second time.
func TestAPanicWhileAParkedClientResumesClosesItsDescriptorOnceAndEndsItsConnection(t *testing.T) {
	for _, tc := range []struct {
		name string
		park func(t *testing.T) (ss *session, client net.Conn)
	}{
		{"plain", func(t *testing.T) (*session, net.Conn) {
			accepted, client := tcpPair(t)
			return &session{srv: &Server{log: zap.NewNop()}, fd: int32(detachedFD(t, accepted))}, client
		}},
		{"TLS 1.3", func(t *testing.T) (*session, net.Conn) {
			skipWithoutTakeover(t)
			accepted, client := tcpPair(t)
			cfg := tls13ServerConfig(t)
			tap := tls13.NewTap(accepted)
			server := tls.Server(tap, cfg)
			handshakeBoth(t, server, tls13Client(client))
			conn := tap.Takeover(server, cfg)
			if conn == nil {
				t.Fatal("not taken over")
			}
			conn.Park() // as detach does
			return &session{srv: &Server{log: zap.NewNop()}, fd: int32(detachedFD(t, accepted)), conn: conn, tls: true}, client
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe() // (before the number is free: it would take it)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			ss, client := tc.park(t)
			fd := int(ss.fd)
			undo := setFault(func(s *session, where string) {
				if s == ss && where == "reattach" {
					panic("a fault injected at reattach")
				}
			})
			defer undo()
			if r := reattachRecovering(ss); r == nil {
				t.Fatal("reattach did not panic at the fault")
			}
			undo()

			// What end does (finish's FATAL, then closing the socket and
			// wiping the keys), with the panic behind it.
			if r := sendFatalRecovering(ss); r != nil {
				t.Errorf("the FATAL to the client panicked too: %v", r)
			}
			ss.closeSocket()
			ss.wipeTLS()
			if c, ok := ss.conn.(*tls13.Conn); ok && !tlsKeysWiped(t, c) {
				t.Error("the keys of a session whose resume panicked were not wiped")
			}
			if _, err := fcntl(fd, syscall.F_GETFD, 0); !errors.Is(err, syscall.EBADF) {
				t.Fatalf("descriptor %d is still open after the session ended (%v)", fd, err)
			}

			// Another connection gets the number: the pipe, so that the
			// test knows it is the one with the number.
			other, err := fcntl(int(w.Fd()), syscall.F_DUPFD_CLOEXEC, fd)
			if err != nil {
				t.Fatal(err)
			}
			if other != fd {
				syscall.Close(other)
				t.Skipf("descriptor %d was taken by something else meanwhile; got %d", fd, other)
			}
			defer closeIfSame(other, w.Fd())

			client.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := client.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
				t.Errorf("the client read %d bytes, %v; want the end of the connection at once", n, err)
			}

			// The collector's finalizers, which would close the number
			// again, run; the other connection must not notice.
			for i := range 3 {
				runFinalizers(t)
				if !sameFile(other, w.Fd()) {
					t.Fatalf("descriptor %d, which another connection got after the session ended, was closed again by collection %d", fd, i+1)
				}
			}
			if _, err := syscall.Write(other, []byte("x")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			if n, err := r.Read(b); n != 1 || b[0] != 'x' {
				t.Fatalf("the other connection read %q, %v; want its own byte", b[:n], err)
			}
		})
	}
}

// detachedFD returns a duplicate of c's socket descriptor and closes c, as
// detach leaves a parked session's socket.
func detachedFD(t *testing.T, c net.Conn) int {
	t.Helper()
	fd, err := fcntl(socketFD(c), syscall.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return fd
}

// reattachRecovering runs reattach, recovering a panic as a session's
// owner does (serveRecovering, reclaimRecovering, recoverTurn), and
// returns it.
func reattachRecovering(ss *session) (r any) {
	defer func() { r = recover() }()
	ss.reattach()
	return nil
}

func sendFatalRecovering(ss *session) (r any) {
	defer func() { r = recover() }()
	ss.sendFatal(errInternal)
	return nil
}

func fcntl(fd, cmd, arg int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// sameFile reports whether descriptor fd is open on the file of want.
func sameFile(fd int, want uintptr) bool {
	var a, b syscall.Stat_t
	if syscall.Fstat(fd, &a) != nil || syscall.Fstat(int(want), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// closeIfSame closes fd if it is still open on the file of want: if it is
// not, the number is someone else's.
func closeIfSame(fd int, want uintptr) {
	if sameFile(fd, want) {
		syscall.Close(fd)
	}
}

// runFinalizers runs the garbage collector and waits until a finalizer
// queued by this collection has run: the finalizer goroutine runs them in
// turn, so after a few rounds those of everything unreachable before the
// first have run.
func runFinalizers(t *testing.T) {
	t.Helper()
	type sentinel struct {
		_ [64]byte // (not from the tiny allocator, whose blocks are shared)
	}
	done := make(chan struct{})
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) { close(done) })
	runtime.GC()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no finalizer ran within 10s of a collection")
	}
}

// A session doomed while parked (its transaction idle too long, its
// notification backlog too large, its listener gone) resumes to write its
// client a last message: a client that reads nothing must not hold that
// write, and the session's goroutine with it, for ever. Its writes give
// up after doomGrace, as they do when the doom finds the session attached
// (markDoomed), whichever doom it is.
func TestADoomedParkedSessionResumesWithItsWritesBounded(t *testing.T) {
	for _, doom := range []struct {
		name string
		bit  uint32
	}{{"idle transaction", evDoomTxn}, {"notification backlog", evDoomBacklog}, {"listener lost", evDoomListen}} {
		t.Run(doom.name, func(t *testing.T) {
			accepted, client := tcpPair(t)
			defer client.Close() // (it never reads)
			ss := &session{srv: &Server{log: zap.NewNop()}, fd: int32(detachedFD(t, accepted))}
			ss.flags.Or(doom.bit)
			if r := reattachRecovering(ss); r != nil {
				t.Fatalf("reattach panicked: %v", r)
			}
			defer ss.closeSocket()
			done := make(chan error, 1)
			go func() {
				// More than both sockets' buffers can hold.
				_, err := ss.raw.Write(make([]byte, 64<<20))
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("the write to a client that reads nothing ended with %v; want its deadline passed", err)
				}
			case <-time.After(30 * time.Second):
				ss.closeSocket() // (ends the write)
				<-done
				t.Error("the write to a client that reads nothing was still waiting 30 s later: the doomed session resumed without a write deadline")
			}
		})
	}
}
