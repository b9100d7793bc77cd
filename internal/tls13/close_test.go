package tls13

import (
	"crypto/tls"
	"testing"
	"time"
)

// Close, as net.Conn's, unblocks a Write in flight: here one stuck on a
// client that reads nothing, holding the write lock that close_notify
// would need. crypto/tls's Close does the same (activeCall): with a Write
// in flight it closes the socket without close_notify.
func TestCloseUnblocksAWriteStuckOnAClientThatDoesNotRead(t *testing.T) {
	server, _ := mirrored(t, tls.TLS_AES_128_GCM_SHA256)
	wrote := make(chan error, 1)
	go func() {
		_, err := server.Write(make([]byte, 64<<20)) // more than both socket buffers
		wrote <- err
	}()
	waitFor(t, func() bool {
		if !server.wmu.TryLock() {
			return true // the Write holds it
		}
		server.wmu.Unlock()
		return false
	})
	closed := make(chan error, 1)
	go func() { closed <- server.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a Write stuck on a client that does not read")
	}
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the stuck Write succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock the stuck Write")
	}
	if _, err := server.Write([]byte("x")); err == nil {
		t.Fatal("a closed connection wrote")
	}
}
