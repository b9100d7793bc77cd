//go:build linux && !pgferry_nopark

// How a session leaves the relay loop: back to a goroutine (evict), or
// ended (leave); and how a login on the loop does (loginHandoff,
// endLogin).

package router

import (
	"errors"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/auth"
	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// recoverTurn, deferred by what runs for a session of the loop outside
// serveEvents' recover (a login's turn, takeGrant, the sweep's settle and
// expire, a wake's handOn), ends the session on a panic instead of the
// process (turnPanicked).
func (p *parker) recoverTurn(ss *session) {
	if r := recover(); r != nil {
		p.turnPanicked(ss, r)
	}
}

// turnPanicked ends a session of the loop whose turn panicked with r,
// letting go of the locks the turn held (releaseHeld; its server's state
// is unknown: finish destroys it), or a login (endLogin), unless the loop
// had handed it on already.
func (p *parker) turnPanicked(ss *session, r any) {
	ss.panicked("session panicked", r)
	if ss.loop == 0 {
		return // handed on already: the new owner has it
	}
	if ss.handshake != nil {
		p.endLogin(ss, errInternal) // a login (loggedIn drops it before a session's first turn)
		return
	}
	ss.releaseHeld(&ss.ownerHeld)
	ss.dropLent() // (a grant's server not linked yet)
	ss.mu.Lock()
	ss.status = protocol.TxFailed
	ss.mu.Unlock()
	p.leave(ss, errInternal)
}

// handOn hands a session of the loop that a wake, a kill or the parker's
// stop took out of the set (resume) to a goroutine (evict), or takes a
// login off the loop (loginStop; also one the loop could not wait for as
// it took it: takeFD). It runs outside any turn, on the waker's goroutine
// (Shutdown's, the admin console's, a notification's or a timer's), the
// accept goroutine or the loop's (fail, acceptOn), so its own recover ends
// the session on a panic before the loop let go of it (recoverTurn).
// (Without it, the panic ended the process, or the admin console's
// session that killed it, leaving the killed one nobody's; and it stopped
// fail before the sessions after it.)
func (p *parker) handOn(ss *session) {
	defer p.recoverTurn(ss)
	if st := ss.loop &^ loopArmed; st == loopLogin || st == loopLoginAuth {
		p.loginStop(ss)
		return
	}
	p.evict(ss, "woken", false)
}

// evict hands a session the loop served back to a goroutine, which
// carries on from where the loop stopped: its client socket becomes a
// net.Conn again, a pump relays what the server still owes (or, with pump,
// the rest of the loan: relayServer asked for one), and a new run reads
// the client. Its caller owns the session (the loop, or whoever took it
// out of the parked set); what may wait (making the net.Conn, retried for a
// while when out of descriptors) happens on the new goroutine. A panic
// there before run ends the session (reclaimRecovering). Nothing that may
// panic runs between unloop and the go statement: a panic there would
// find the session out of the loop (ss.loop == 0), which turnPanicked
// takes for handed on, and nobody would end it.
func (p *parker) evict(ss *session, why string, pump bool) {
	ss.entry.stats.loopHandbacks.Add(1)
	if ss.loopCredit == 0 {
		// Requests on the goroutine first: what brought the session back
		// (an error, a statement that changes session state) is there.
		ss.loopCredit = loopEntryCredit
	}
	if ss.debugEnabled() {
		ss.logger().Debug("the relay loop handed the session back to a goroutine", zap.String("reason", why))
	}
	ss.faultAt("evicting")
	if r := ss.rare; r != nil && !r.ticket.IsZero() {
		// Its goroutine waits on in its place, for the same request
		// (takeCarried): counted once, and first in line still.
		r.carried, r.ticket = r.ticket, pool.Ticket{}
	}
	ss.mu.Lock()
	sc, owed := ss.server, ss.q.n > 0
	ss.mu.Unlock()
	p.unloop(ss)
	ss.resumed = true
	go func() {
		growStack()
		var carryErr error
		err := ss.reclaimRecovering(func() {
			ss.reclaim(sc)
			ss.faultAt("evict")
			if sc == nil {
				carryErr = ss.takeCarried()
				return
			}
			if pump || owed {
				ss.handOff(sc)
			} else {
				ss.srv.budget.watch(sc) // linked inside a transaction, as inline
			}
			ss.flushLinked(sc)
		})
		if err == nil {
			err = carryErr
		}
		if err != nil {
			ss.end(err)
			return
		}
		ss.run()
	}()
}

// takeCarried, on the goroutine the loop handed a queued session to
// (evict), waits on for the server its request queued for (the ticket
// carried on: rareState.carried), in its place, up to what is left of
// query_wait_timeout, and links it as takeGrant would have, so that run
// serves the request with it: the request is counted once, waits once,
// and does not go behind those who queued after it. A session killed or
// doomed meanwhile gives its place up instead and ends, its request not
// served: the request counts as one that waited and gave up, as an
// abandoned Acquire's does. Errors end the session as link's do, except
// a pool a reload closed, whose successor run's link asks
// (waitForServer).
func (ss *session) takeCarried() error {
	r := ss.rare
	if r == nil || r.carried.IsZero() {
		return nil
	}
	tk := r.carried
	if ss.has(evKill | evDoomed) {
		r.carried = pool.Ticket{}
		tk.Cancel()
		if doomed := ss.doomed(); doomed != nil {
			return doomed
		}
		return errKilledQueued // (not served first: run would)
	}
	if ss.has(evCancelQueued) {
		// A CancelRequest for the request: run's link answers it before
		// it looks for a server, and the session goes on.
		r.carried = pool.Ticket{}
		tk.Cancel()
		return nil
	}
	var expired <-chan time.Time
	if d := ss.srv.cfg.Load().QueryWaitTimeout.Std(); d > 0 {
		d = max(d-monoNow().Sub(r.queuedAt), 0)
		if r.waitTimer == nil {
			r.waitTimer = time.NewTimer(d)
		} else {
			r.waitTimer.Reset(d)
		}
		defer r.waitTimer.Stop()
		expired = r.waitTimer.C
	}
	ss.flags.Or(stWaiting)
	r.carried = pool.Ticket{} // (AcquireWhile ends it, whatever it returns)
	ss.beginWait()
	defer ss.endWait(r)
	if ss.has(evKill) {
		ss.flags.And(^stWaiting)
		tk.Cancel()
		return errKilledQueued // (killed since the look above)
	}
	sc, err := tk.AcquireWhile(r.waitStop, expired)
	if err != nil {
		ss.flags.And(^stWaiting)
		switch {
		case errors.Is(err, pool.ErrPoolClosed):
			return nil
		case errors.Is(err, pool.ErrWaitStopped) && !ss.has(evKill) && ss.has(evCancelQueued):
			return nil // (cancelled: as above)
		case errors.Is(err, pool.ErrWaitStopped):
			return errKilledQueued
		}
		return ss.acquireError(err)
	}
	r.lent = sc // (until attach: a panic destroys it, see lent)
	ss.faultAt("lent")
	if ss.endQueued() {
		// A CancelRequest came as the server was granted: run's link
		// refuses the request, as above.
		ss.returnLent(sc)
		return nil
	}
	ss.attach(sc, false, false)
	ss.linkedLent()
	ss.faultAt("granted")
	return nil
}

// flushLinked writes what the server did not take from the loop, now that
// a pump reads its answers, as handle writes: under wmu, while still
// linked. (A failure is the pump's to see.) wmu is let go even if the
// write panics: the pump, and finish, wait for it.
func (ss *session) flushLinked(sc *pool.ServerConn) {
	ss.mu.Lock()
	if ss.server != sc {
		ss.mu.Unlock()
		return
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ss.mu.Unlock()
	ss.faultAt("evict flush")
	sc.Wr.Flush()
}

// reclaimRecovering runs f, what a goroutine the loop handed a session or
// a login to does before run, end or logIn (evict, leave, loginHandoff),
// and turns a panic in it into errInternal as serveRecovering does: logged
// and counted, and the linked server's state unknown (finish destroys it).
// The caller then ends the session (end, which lets go of everything
// once, however much of f ran) instead of the process ending.
func (ss *session) reclaimRecovering(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = ss.failedByPanic(r)
		}
	}()
	f()
	return nil
}

// leave ends a session the loop served with err (see session.end). One
// with no server linked whose client said goodbye or left ends here:
// finish has nothing to wait on, and nothing to write (those errors are
// not a protocol.Error, which it would send), and a goroutine would first
// make a net.Conn of the descriptor only to close it (a client that
// connects for one transaction leaves this way, every time). Others end on
// a goroutine: finish may wait on their server, or write to them. (A panic
// in end here reaches the recover of whatever turned the session:
// serveEvents, loginTurn or takeGrant's recoverTurn. On the goroutine, one
// in reclaim is reclaimRecovering's, and the session then ends with
// errInternal; one in finish is end's own.)
func (p *parker) leave(ss *session, err error) {
	ss.mu.Lock()
	sc := ss.server
	ss.mu.Unlock()
	p.unloop(ss) // (then nothing that may panic but end, which recovers: see evict)
	if sc == nil && (err == errClientTerminated || err == errClientGone || protocol.IsDisconnect(err)) {
		ss.end(err)
		return
	}
	go func() {
		if perr := ss.reclaimRecovering(func() {
			ss.reclaim(sc)
			ss.faultAt("leave")
		}); perr != nil {
			err = perr
		}
		ss.end(err)
	}()
}

// endLogin ends a login on the loop with err: the client gets the FATAL
// of a *protocol.Error (or nothing: it left), and is let go of as a
// goroutine's failed login is. It is the login's last act, as end is a
// session's: once unloop has let go of it, a panic could not reach a
// caller's recover (which takes a session out of the loop for handed on:
// turnPanicked), so endLogin recovers its own and lets go of the client
// all the same, once (endedLogin).
func (p *parker) endLogin(ss *session, err error) {
	noStartup := ss.loop&^loopArmed == loopLogin
	p.unloop(ss)
	told := false // a FATAL went to the client (or was on its way)
	defer ss.endedLogin()
	defer ss.loginEndPanicked(&told)
	ss.faultAt("ending login")
	if noStartup {
		ss.srv.reject("protocol") // no startup packet, as a goroutine counts it
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		told = true
		(&sockio.Raw{FD: int(ss.fd)}).Write(pe.AppendFrame(ss.takeAuthOK()))
	}
	if !protocol.IsDisconnect(err) {
		ss.logger().Info("client login failed", zap.Error(err))
	}
	ss.dropHandshake()
	if ss.rd != nil { // (loggedIn failed after making them)
		ss.rd.Release()
		ss.wr.Release()
	}
}

// loginEndPanicked, deferred by endLogin, logs and counts a panic there,
// tells the client of an internal error if nothing was written to it yet,
// and wipes the login's secrets (dropHandshake does nothing if it ran).
func (ss *session) loginEndPanicked(told *bool) {
	if r := recover(); r != nil {
		ss.panicked("session panicked", r)
		if !*told {
			(&sockio.Raw{FD: int(ss.fd)}).Write(errInternal.AppendFrame(nil))
		}
		ss.dropHandshake()
	}
}

// endedLogin lets go of a login's client at the end of endLogin, whatever
// panicked there: its socket, its count and its WaitGroup slot.
func (ss *session) endedLogin() {
	ss.srv.unregisterLogin(ss)
	ss.closeSocket()
	ss.srv.clients.Add(-1)
	ss.srv.wg.Done()
}

// loginHandoff hands a login the loop has not answered yet to a goroutine,
// which reads what the loop read first (loginState.early) and logs the
// client in as it logs in any other. A panic before logIn (whose own
// recover covers the rest) is reclaimRecovering's: the client is let go
// of as logIn lets go of one whose login panicked, without a word. As in
// evict, nothing that may panic runs between unloop and the go statement:
// a panic before unloop ends the login (loginTurn's recover, endLogin).
func (p *parker) loginHandoff(ss *session) {
	ss.faultAt("handing off login")
	h := ss.handshake
	h.early, h.buf = h.buf, nil
	h.st, h.cred, h.known, h.entry, h.method = nil, auth.Credential{}, false, nil, ""
	p.loginHandoffs.Add(1)
	p.unloop(ss)
	go func() {
		var err error
		if perr := ss.reclaimRecovering(func() {
			if err = ss.reattach(); err == nil {
				ss.faultAt("login")
			}
		}); err != nil || perr != nil {
			ss.dropHandshake()
			ss.closeSocket() // (closed already if reattach failed)
			ss.wipeTLS()
			ss.srv.clients.Add(-1)
			ss.srv.wg.Done()
			return
		}
		ss.srv.serveAdmitted(ss.srv.logIn(ss, 0, false))
	}()
}

// unloop takes the session's sockets out of the loop's epoll set and
// gives up its place in a pool's queue; the caller hands the session on.
func (p *parker) unloop(ss *session) {
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(ss.fd), nil)
	ss.mu.Lock()
	sc := ss.server
	ss.mu.Unlock()
	p.dropServer(sc)
	p.releaseSlot(ss)
	if r := ss.rare; r != nil && !r.ticket.IsZero() {
		// Forgotten before it is cancelled: a panic in Cancel must not
		// have the recover's unloop cancel it again.
		tk := r.ticket
		r.ticket = pool.Ticket{}
		tk.Cancel() // (a connection handed over meanwhile goes back)
	}
	ss.flags.And(^(stParked | stWaiting))
	ss.loop = 0
}

// reclaim makes a session the loop handed back a goroutine's again: its
// client socket a net.Conn (reattach; on failure every call fails and the
// session ends), the Reader and Writer on it (if it has them yet: a
// panic in adopt ends a session without them), and its server's reads and
// writes waiting again.
func (ss *session) reclaim(sc *pool.ServerConn) {
	ss.reattach() // (it logs a failure)
	if ss.rd != nil {
		ss.rd.SetSource(ss.conn)
		ss.wr.SetDest(ss.conn)
	}
	if sc != nil {
		sc.Wait()
	}
}
