// A Bind or Describe of a statement that a drop still unanswered set
// aside, sent past the end of the drop's run: it waits for the drop's
// answer, which says whether the statement is gone.

package router

import (
	"errors"
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// A drop (DEALLOCATE ALL, DISCARD ALL, a DEALLOCATE or a Close of one
// name) sets the client's names aside as it goes (dropSent, deallocSent,
// closeSent), and the
// messages behind it see them gone until its answer puts them back or lets
// them go. Up to the end of the drop's run, that is PostgreSQL's answer
// either way: a Bind of one gets 26000 after a drop that ran, and is
// skipped with a drop that failed or was skipped (postgres.c,
// ignore_till_sync). Past it (a Sync after a drop by Execute, or the
// drop's own simple Query), PostgreSQL runs the Bind if the drop failed
// (SELECT 1/0; DEALLOCATE ALL; refused in a failed transaction and a
// ROLLBACK; skipped after an error, and the Sync): so such a Bind or
// Describe waits until the drop is answered (send reports
// errAwaitDrop, awaitDrop), and then goes as the statement stands. So
// does one of a name whose Parse is unanswered, past that Parse's Sync
// (parseSent): the name is free again if the Parse fails or is skipped.
// A Parse of such a name waits likewise: PostgreSQL refuses it (42P05)
// if the name is the client's when it comes (stmtsdup.go). The
// server answers that drop without more from the client: it is flushed at
// the ReadyForQuery that ends its run, already sent. Only the session's
// goroutine waits: the relay loop hands such a Bind or Describe to it
// (loopServes; a Close is the only drop the loop sends).

// errAwaitDrop is send's report that the frame must wait for a drop's
// answer (awaitDrop) before it goes.
var errAwaitDrop = errors.New("a drop's answer first")

// bindsBehindDrop reports whether frame, a Bind, Describe or Parse (typ),
// names a statement of the client that a drop still unanswered set aside
// (or that its Parse still unanswered made), and the end of the drop's run
// was sent since (see above), unless the frame is to go without waiting
// (noWait). mu is held.
func (ss *session) bindsBehindDrop(typ byte, frame []byte) bool {
	if t := ss.stmts; t.noWait {
		t.noWait = false
		return false
	}
	return ss.behindDrop(typ, frame)
}

// behindDrop is bindsBehindDrop but for noWait, which it leaves alone: the
// relay loop asks it without mu (loopServes), as the only writer of the
// session's state while it serves it.
func (ss *session) behindDrop(typ byte, frame []byte) bool {
	body := protocol.Body(frame)
	var name []byte
	var ok bool
	if typ == protocol.MsgParse {
		name, _, ok = protocol.CString(body)
	} else if typ == protocol.MsgBind {
		if _, rest, found := protocol.CString(body); found {
			name, _, ok = protocol.CString(rest)
		}
	} else if len(body) > 1 && body[0] == 'S' {
		name, _, ok = protocol.CString(body[1:])
	}
	t := ss.stmts
	if !ok || len(name) == 0 {
		return false
	}
	st := t.named[string(name)]
	for _, d := range t.drops {
		if st == nil && d.named[string(name)] != nil || st != nil && d.parsed == st {
			return ss.runEndedSince(d.seq)
		}
	}
	return false
}

// runEndedSince reports whether the run of request seq, still unanswered,
// ended among the requests sent since: it is a simple Query, or a Sync
// went after it. mu is held.
func (ss *session) runEndedSince(seq uint64) bool {
	q := &ss.q
	first := int(seq - q.answered() - 1)
	for i := max(first, 0); i < q.n; i++ {
		k := q.buf[(q.head+i)%len(q.buf)].kind
		if k == kSync || (i == first && k == kQuery) {
			return true
		}
	}
	return false
}

// awaitDrop waits until a drop still unanswered on sc is answered, or sc
// is no longer linked (send then looks again): what the client sent is
// flushed first, and the answers are relayed by the session goroutine
// itself while the loan is inline (it hands them to a pump if the server
// is slow, as relayInline does), else by the pump, whose answers wake it
// (dropSettled) or whose exit does, or the client's leaving (then the
// frame goes without waiting: noWait).
func (ss *session) awaitDrop(sc *pool.ServerConn) {
	ss.wmu.Lock()
	sc.Wr.Flush() // (a failure is the relay's to see)
	ss.wmu.Unlock()
	ss.mu.Lock()
	t := ss.stmts
	if ss.server != sc || t == nil || len(t.drops) == 0 {
		ss.mu.Unlock()
		return
	}
	if ss.inline {
		ss.mu.Unlock()
		if ss.relayServer(sc, true) == relayHandoff {
			ss.handOff(sc)
		}
		return
	}
	pump := ss.pumpDone
	if pump == nil {
		t.noWait = true // (no one relays: it goes as before)
		ss.mu.Unlock()
		return
	}
	wake := make(chan struct{})
	t.dropWait = wake
	raw := ss.raw
	ss.mu.Unlock()
	// The session goroutine does not read its client while it waits: a
	// look at the client's socket now and then tells that it left, and
	// the Bind then goes as it would without the wait (nobody reads its
	// answer), so that the goroutine reads the end of the client and
	// cancels the query still running, as for any client that leaves
	// mid-query (finish, cancelAbandoned). (A TLS client's close_notify
	// is data: not seen here, it waits for the drop's answer.)
	peek := protocol.NewPeeker(raw)
	look := time.NewTicker(dropWaitLook)
	defer look.Stop()
	gone := false
wait:
	for {
		select {
		case <-wake:
			break wait
		case <-pump:
			break wait
		case <-look.C:
			if gone = peek.PeerClosed(); gone {
				break wait
			}
		}
	}
	ss.mu.Lock()
	t.dropWait = nil
	if gone {
		t.noWait = true // (its answer is nobody's: it goes as before)
	}
	ss.mu.Unlock()
}

// dropWaitLook is how often awaitDrop looks whether the client left.
const dropWaitLook = 200 * time.Millisecond

// dropSettled wakes a Bind waiting for a drop's answer (awaitDrop): one
// was just settled. mu is held.
func (t *clientStmts) dropSettled() {
	if t.dropWait != nil {
		close(t.dropWait)
		t.dropWait = nil
	}
}
