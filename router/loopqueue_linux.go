//go:build linux && !pgferry_nopark

// The relay loop's sessions queued for a server connection: the pool's
// grant (pool.Ticket, pool.Waker) is an event the loop waits for, as it
// waits for sockets.

package router

import (
	"errors"
	"syscall"
	"time"

	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// queue puts a session the loop serves in its pool's queue, for the
// request it has read, when no server connection is free, and waits for
// the grant (Granted) in the parked set. Its client socket stays
// registered meanwhile, so a client that leaves or sends more is noticed
// (queuedClientSpoke). What the loop cannot wait for (a paused pool, one
// replaced by a reload, a cached login failure) the session's goroutine
// does, with Acquire.
func (p *parker) queue(ss *session) {
	tk, err := ss.entry.pool.Enqueue(ss)
	if err != nil {
		p.evict(ss, "a wait for a server the loop does not serve", false)
		return
	}
	p.queueings.Add(1)
	r := ss.ensureRare()
	r.ticket, r.queuedAt = tk, monoNow()
	ss.flags.Or(stWaiting)
	if !p.await(ss, loopQueued, 0) {
		p.evict(ss, "cannot wait", false) // (it gives up the ticket)
	}
}

// queuedClientSpoke handles an event on the client socket of a session
// waiting in its pool's queue. A client that left gives up its place at
// once (leave). What one that stays sends (the rest of a pipeline, or a
// request a driver wrote in several packets) is read in behind the
// request already read, and the session keeps its place: the grant serves
// it all in order, up to the read buffer's 8 KiB; the rest waits in the
// socket (or in the TLS layer), where the grant's relay reads it (await then waits only for a
// hang-up: a goroutine waiting in its pool's queue does not read its
// client either).
func (p *parker) queuedClientSpoke(ss *session) {
	if ss.rd.Buffered() >= protocol.BufferSize {
		if p.turnEvents&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			p.leave(ss, errClientGone)
		} else if !p.await(ss, loopQueued, 0) { // (for its hang-up only now)
			p.evict(ss, "cannot wait", false)
		}
		return
	}
	if (&sockio.Raw{FD: int(ss.fd)}).PeerClosed() {
		p.leave(ss, errClientGone)
		return
	}
	n, err := ss.rd.ReadMore()
	switch {
	case err == nil || err == protocol.ErrWouldBlock:
		if n > 0 {
			p.queuedReads.Add(1)
		}
		if !p.await(ss, loopQueued, 0) {
			p.evict(ss, "cannot wait", false) // (it gives up the ticket)
		}
	case err == protocol.ErrBufferFull:
		// (Not with a frame read whole: its goroutine queues again.)
		p.evict(ss, "the client sent more than the loop holds while queued", false)
	default:
		p.leave(ss, err) // the socket failed: as the goroutine's read would
	}
}

// Granted implements pool.Waker for a session the loop queued: it posts
// the session to the loop, which takes the connection (serveGrants). It
// may run under the pool's lock, on any goroutine, and after the session
// gave up its ticket; the loop checks.
func (ss *session) Granted() { ss.srv.parker.granted(ss) }

var nudgeByte = []byte{0}

func (p *parker) granted(ss *session) {
	p.mu.Lock()
	if p.running && !p.failed {
		p.grants = append(p.grants, ss)
		p.grantsPosted.Store(true)
		if p.loopWaiting.Load() {
			syscall.Write(p.nudge[1], nudgeByte) // (under mu: see close)
		}
	}
	p.mu.Unlock()
}

// serveGrants serves the sessions whose tickets were granted since the
// last look: each that is still queued in the parked set (not taken by a
// wake, a kill or shutdown meanwhile, whose new owner gives the ticket
// up) takes its connection and carries on with its request. Posts for
// tickets given up already are skipped.
func (p *parker) serveGrants() {
	p.mu.Lock()
	p.grants, p.granting = p.granting[:0], p.grants
	p.grantsPosted.Store(false)
	p.mu.Unlock()
	for i, ss := range p.granting {
		p.granting[i] = nil
		p.mu.Lock()
		if !p.heldLocked(ss) || ss.loop&^loopArmed != loopQueued || !ss.rare.ticket.Granted() {
			p.mu.Unlock()
			continue
		}
		p.unholdLocked(ss)
		p.mu.Unlock()
		p.takeGrant(ss)
	}
}

// takeGrant takes the connection a queued session's ticket got, and
// serves the request it has read with it. It does not look for a client
// that left since its socket's last event (a system call per queued
// transaction): the registration armed while it queued stays armed, its
// leaving comes as that event, and the loop hands it to its goroutine,
// which ends it and cancels the query, as for a client that leaves during
// one.
func (p *parker) takeGrant(ss *session) {
	defer p.recoverTurn(ss)
	ss.flags.And(^stParked) // (stWaiting: endQueued, or unloop as it leaves)
	tk := ss.rare.ticket
	ss.rare.ticket = pool.Ticket{}
	ss.setLoop(loopClient)
	sc, err := tk.Take()
	switch {
	case err == pool.ErrWouldWait:
		// A server that server_check_query must check first, or that
		// looks dead: the goroutine waits on with the ticket, which
		// keeps it, or its place (takeCarried).
		ss.rare.carried = tk
		p.evict(ss, "a wait for a server the loop does not serve", false)
		return
	case errors.Is(err, pool.ErrPoolClosed):
		// A reload replaced the pool: the goroutine's link asks the new
		// one (waitForServer).
		p.evict(ss, "a wait for a server the loop does not serve", false)
		return
	case err != nil:
		// What ends a goroutine's wait ends the session (link), not a
		// second request for the same query.
		p.leave(ss, ss.acquireError(err))
		return
	}
	ss.rare.lent = sc // (until attach: a panic destroys it, see lent)
	ss.faultAt("lent")
	if !sc.NoWait() {
		ss.rare.lent = nil
		sc.Pool().Release(sc)
		ss.loopCredit = loopNever // (no raw socket calls)
		p.evict(ss, "a server connection that cannot read without waiting", false)
		return
	}
	if ss.endQueued() {
		// A CancelRequest came as the server was granted: the goroutine's
		// link refuses the request (lookAgain's hand-over, too late).
		ss.returnLent(sc)
		p.evict(ss, "a cancel of the queued request", false)
		return
	}
	ss.attach(sc, false, false)
	ss.linkedLent()
	ss.faultAt("granted")
	p.turn(ss, false) // request finds the frame it read
}

// expireQueuedLocked takes a session queued longer than
// query_wait_timeout (timeout, > 0) out of the set, for endExpired to end
// as its goroutine's wait would have, and reports whether it did. The
// sweep calls it (settleLooped, with mu held), so the timeout is kept to
// within a sweep interval (a second).
func (p *parker) expireQueuedLocked(ss *session, timeout time.Duration, now mono) bool {
	if ss.loop&^loopArmed != loopQueued || now.Sub(ss.rare.queuedAt) < timeout {
		return false
	}
	p.unholdLocked(ss)
	p.expired = append(p.expired, ss)
	return true
}

// endExpired ends the sessions expireQueuedLocked took out of the set,
// and the logins expireLoginLocked did.
func (p *parker) endExpired() {
	for i, ss := range p.expired {
		p.expired[i] = nil
		p.expire(ss)
	}
	p.expired = p.expired[:0]
}

// expire ends a session or a login of the loop past its timeout, for
// endExpired (the sweep, outside any turn). A panic ends it with
// errInternal instead (recoverTurn), and the sweep goes on with the
// others.
func (p *parker) expire(ss *session) {
	defer p.recoverTurn(ss)
	ss.faultAt("expiring")
	ss.flags.And(^stParked)
	if st := ss.loop &^ loopArmed; st == loopLogin || st == loopLoginAuth {
		p.endLogin(ss, errLoginTimeout) // (expireLoginLocked)
		return
	}
	p.leave(ss, ss.acquireError(pool.ErrWaitTimeout)) // (it gives up the ticket)
}
