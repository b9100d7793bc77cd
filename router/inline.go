// Who relays a loan's responses: the session goroutine itself (inline, in
// transaction mode) or a pump worker beside it, and the hand-off between the
// two when an answer is slow or the server waits for the client.

package router

import (
	"errors"
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// inlineBudget bounds how long the session goroutine waits for the server
// in an inline relay before a pump takes over and the session goes back to
// watching its client (a disconnect, a CopyData). Round trips of ordinary
// transactions finish well inside it.
const inlineBudget = 50 * time.Millisecond

// pump relays server frames to the client on a worker goroutine until the
// transaction ends (then it returns the server to the pool) or something
// fails. Sessions in session mode or pinned to their server, and loans an
// inline relay handed off, are served this way.
func (ss *session) pump(sc *pool.ServerConn, done chan struct{}) {
	defer close(done)
	defer func() {
		if r := recover(); r != nil {
			ss.releaseHeld(&ss.pumpHeld)
			ss.panicked("relay panicked", r)
			ss.serverFailed(sc, errors.New("internal error"))
		}
	}()
	ss.relayServer(sc, false)
}

// relayInline relays the server's responses on the session goroutine
// itself once a request that has the server answer has gone to it: no
// second goroutine, no handoff between the two, and so none of the
// wake-ups that cost more CPU than the relaying itself. It stops when the
// server owes nothing more now (the server released, or linked and idle
// inside the transaction), and hands the loan to a pump when the server
// waits for the client (COPY FROM STDIN), answers slower than
// inlineBudget, or the session now needs its server watched between
// requests (pinned, session mode, a cancel in flight, or the answers of a
// group its client has not ended yet owed, with nothing more of the
// client's in hand: an error in that group comes at once, unendedGroup).
func (ss *session) relayInline(sc *pool.ServerConn) {
	if !ss.inline || ss.loop != 0 || ss.rd.HasFrame() {
		return // (the relay loop relays answers itself: turn)
	}
	ss.mu.Lock()
	owed := ss.q.owesNow() && ss.server == sc
	watch := !owed && ss.server == sc && ss.unendedGroup() && ss.rd.Buffered() == 0
	ss.mu.Unlock()
	if watch && ss.clientQuiet() {
		ss.handOff(sc) // (an error in the group comes at once: unendedGroup)
		return
	}
	if owed && ss.relayServer(sc, true) == relayHandoff {
		ss.handOff(sc)
	}
}

// clientQuiet reports whether the client has sent nothing the session
// has not read yet, nor closed its connection: it may be waiting for the
// answers owed. A look at its socket (a non-blocking recv(MSG_PEEK)),
// made only where a group its client has not ended is owed with nothing
// of the client's in hand (unendedGroup): a client whose group came in
// more than one read is sending the rest, which the session reads, where
// a pump would cost a hand-off. Its goroutine only.
func (ss *session) clientQuiet() bool {
	r := ss.ensureRare()
	if r.peeker == nil {
		r.peeker = protocol.NewPeeker(ss.raw)
	}
	return r.peeker.Idle()
}

// answersNow reports whether the server owes answers to relay now, after
// a client frame went to it: a request that has the server answer went to
// it since the answers were last relayed (ring.asked: a Sync, a Query, a
// Flush, ..., also one followed by more of the next group, a Parse or an
// Execute), and no more client frames are buffered (the server gets those
// first, in one write). The relay loop's own: the caller owns the ring.
func (ss *session) answersNow() bool {
	return !ss.rd.HasFrame() && ss.q.owesNow()
}

// handOff starts a pump for the rest of the loan. The inline budget's read
// deadline is cleared unless a kill, a kick or query_timeout set one that
// the pump must see.
func (ss *session) handOff(sc *pool.ServerConn) {
	done := make(chan struct{})
	ss.endBudget(sc)
	ss.mu.Lock()
	ss.inline = false
	ss.pumpDone = done
	ss.mu.Unlock()
	ss.entry.stats.pumpedLoans.Add(1)
	ss.srv.pumps.run(pumpJob{ss: ss, sc: sc, done: done})
}

// interrupted reports whether someone set the linked server's read
// deadline to stop its relay: a kill, a cancel's kick, query_timeout
// giving up on the server, or the session being doomed. mu is held.
func (ss *session) interrupted() bool {
	return ss.has(evKill|evDoomed) || ss.pumpKick || ss.serverStuck
}

// endBudget stops the inline budget's watch and clears the deadline it set
// unless an interruption set one too.
func (ss *session) endBudget(sc *pool.ServerConn) {
	sc.StopWatch()
	ss.mu.Lock()
	if !ss.interrupted() {
		sc.ClearInterrupt()
	}
	ss.mu.Unlock()
}

// budgetSpent reports whether a read timeout of an inline relay was its
// budget running out rather than an interruption.
func (ss *session) budgetSpent(sc *pool.ServerConn) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.server == sc && !ss.interrupted()
}
