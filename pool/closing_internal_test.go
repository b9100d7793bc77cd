package pool

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pgferry/pgferry/protocol"
)

// A connection from before a Reconnect whose close is under way (said
// goodbye, waiting for its server to exit) still counts among those to
// close (CloseNeeded, which the admin console's WAIT_CLOSE waits on) until
// the close is over, as PgBouncer's WAIT_CLOSE waits until they are
// cleared: WAIT_CLOSE returned while the old backend was still there.
func TestAConnectionToCloseCountsAsSuchUntilItsServerHasGone(t *testing.T) {
	servers := make(chan net.Conn, 1)
	p := New(Config{Database: "app", User: "app", Size: 1,
		// A server slow to go: it leaves only when the test closes its end.
		DialFunc: func(context.Context, *DialConfig) (*ServerConn, error) {
			c, s := net.Pipe()
			servers <- s
			return &ServerConn{Conn: c, raw: c, Rd: protocol.NewReader(c), Wr: protocol.NewWriter(c)}, nil
		},
	})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	server := <-servers
	p.Reconnect()
	p.Destroy(sc) // its close runs in the background

	var b [64]byte
	server.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	if n, err := server.Read(b[:]); err != nil || n == 0 || b[0] != protocol.MsgTerminate {
		t.Fatalf("the server read %q, %v; want the close's Terminate", b[:n], err)
	}
	// The close now waits (up to closeWait) for the server to go.
	if n := p.CloseNeeded(); n != 1 {
		t.Fatalf("CloseNeeded %d while the connection's close waits for its server; want 1", n)
	}
	server.Close() // the backend exits
	waitUntil(t, "the close to end", func() bool { return p.CloseNeeded() == 0 })
}
