//go:build linux && !pgferry_nopark

package router

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

// The relay loop relays a frame of a simple query's answer that changes
// nothing (quietInQuery) without mu. A cancel that ends meanwhile writes
// releaseDeferred and pumpKick under mu (cancelDone), so the loop must not
// read them there: under the race detector this test fails if it does,
// whichever of the two comes first.
func TestTheRelayLoopRelaysAQuietFrameWithoutReadingWhatACancelsEndWrites(t *testing.T) {
	srv := &Server{stmts: prepared.NewRegistry(nil)}
	srv.cfg.Store(configs.Default())
	ss := &session{srv: srv, entry: &poolEntry{}, txnMode: true, inline: true, loop: loopServer}
	ss.rd = protocol.NewReader(bytes.NewReader(nil))
	ss.wr = protocol.NewWriter(io.Discard)
	conn, peer := net.Pipe()
	defer conn.Close()
	defer peer.Close()
	answer := &thenWouldBlock{b: protocol.AppendEmpty(nil, protocol.MsgEmptyQuery)}
	sc := &pool.ServerConn{Conn: conn, Wr: protocol.NewWriter(io.Discard), Rd: protocol.NewReader(answer)}
	ss.server = sc
	ss.q.push(expect{kind: kQuery})
	// A transaction before this one ended while a cancel was on its way:
	// its release waits for the cancel (the state attach now clears, set
	// here as a stale one would be).
	ss.releaseDeferred, ss.cancels = true, 1

	cancelled := make(chan struct{})
	go func() {
		defer close(cancelled)
		ss.cancelDone(sc)
	}()
	end := ss.relayServer(sc, true)
	<-cancelled
	if end != relayAwaitServer {
		t.Fatalf("relayServer ended with %d after the EmptyQueryResponse; want relayAwaitServer, the ReadyForQuery still owed", end)
	}
	ss.mu.Lock()
	owed := ss.q.n
	ss.mu.Unlock()
	if owed != 1 {
		t.Fatalf("the session owes %d answers; want the query's ReadyForQuery", owed)
	}
}

// thenWouldBlock reads b, then reports that a read would block, as the
// relay loop's server socket does when nothing more has come.
type thenWouldBlock struct{ b []byte }

func (r *thenWouldBlock) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, protocol.ErrWouldBlock
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
