// Lending a server to a session: link borrows one for the client's
// request (the linked one, or one from the pool, waiting in its queue:
// waitForServer), attach links what the pool lent. releaseServer
// (release.go) gives it back.

package router

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// replicaUnreachable reports whether a replica pool failed to lend a
// connection because the replica could not be reached or logged in to,
// rather than because the client waited too long, left, cancelled its
// request or pgferry is closing the pool.
func replicaUnreachable(err error) bool {
	return !errors.Is(err, pool.ErrWaitTimeout) && !errors.Is(err, errClientGone) && !errors.Is(err, pool.ErrPoolClosed) &&
		!errors.Is(err, errCancelledQueued)
}

// isLinked reports whether a server is linked.
func (ss *session) isLinked() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.server != nil
}

// link returns the linked server, borrowing one if needed (from a replica
// when readOnly and one is in rotation). It returns with no lock held: the
// caller takes mu, then wmu, to write, and checks the server is still
// linked (send).
func (ss *session) link(readOnly bool) (*pool.ServerConn, error) {
	ss.mu.Lock()
	if sc := ss.server; sc != nil {
		ss.mu.Unlock()
		return sc, nil
	}
	if ss.dead != nil {
		ss.mu.Unlock()
		return nil, errServerGone
	}
	if ss.has(stSkipToSync) {
		ss.mu.Unlock()
		return nil, errSkipToSync
	}
	ss.mu.Unlock()
	ss.joinPump()
	if ss.takeQueuedCancel() {
		// A cancel the relay loop took while it queued the request,
		// whose goroutine gave its place up (takeCarried): refused, not
		// served by a server free by now.
		return nil, errQueuedCancelled
	}
	p, onReplica, err := ss.pickPool(readOnly)
	if err != nil {
		return nil, err
	}
	// Between the lend and attach nothing runs that may panic: a server
	// lent and not linked would be nobody's (attach links it first). A
	// wait, which does run code there, notes the server it got (lent).
	sc := p.TryAcquire()
	if sc == nil {
		sc, err = ss.waitForServer(p, readOnly)
		if err != nil && onReplica && ss.entry.db.ReplicaFallback != "error" && replicaUnreachable(err) {
			// The lag monitor has not noticed yet that the replica is down:
			// the read runs on the primary rather than fail.
			ss.logger().Warn("replica unreachable; running the read-only transaction on the primary", zap.Error(err))
			p, onReplica = ss.entry.pool, false
			if sc = p.TryAcquire(); sc != nil {
				err = nil
			} else {
				sc, err = ss.waitForServer(p, false)
			}
		}
		if err != nil {
			if err == errClientGone || err == errKilledQueued {
				return nil, err
			}
			if err == errCancelledQueued {
				return nil, errQueuedCancelled // (refused: handleFrame)
			}
			return nil, ss.acquireError(err)
		}
		if ss.endQueued() {
			ss.takeQueuedCancel()
			ss.returnLent(sc)
			return nil, errQueuedCancelled // (refused: handleFrame)
		}
		ss.attach(sc, onReplica, readOnly)
		ss.linkedLent()
		ss.faultAt("granted")
		return sc, nil
	}
	ss.attach(sc, onReplica, readOnly)
	return sc, nil
}

// attach links sc, just lent by the pool (a replica's when onReplica), for
// a transaction routed as a read when readOnly: the server's parameters
// are brought in line with the client's, and in transaction mode the
// session relays the answers itself (relayInline), watched by the inline
// budget unless the relay loop serves it (a loop never waits on a server);
// a session tied to its server gets a pump that watches the server between
// requests too. Linking sc is its first act: from there a panic leaves sc
// to finish, which destroys it (its state is unknown).
func (ss *session) attach(sc *pool.ServerConn, onReplica, readOnly bool) {
	ss.mu.Lock()
	ss.ownerHeld = heldMu // (both are let go even if syncParams panics)
	ss.server = sc
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	now := ss.srv.parker.clock(ss)
	ss.onReplica, ss.txReadOnly = onReplica, readOnly
	ss.linkedAt = now
	ss.queryStart = now
	ss.status = protocol.TxIdle
	ss.serverStuck = false
	// A release the previous loan deferred for a cancel, the kick that
	// ends that wait, cancels still on their way to the previous server,
	// or its skipping to a Sync, if the loan ended otherwise (its server
	// lost): they are not this server's.
	ss.releaseDeferred, ss.pumpKick, ss.cancels, ss.serverSkips, ss.failedOwed = false, false, 0, false, false
	ss.q.clear()
	if ss.stmts != nil {
		ss.stmts.unnamedHere = false // the server's is whoever parsed last
		ss.tidyStmts()               // (a table kept for a drop since answered)
	}
	if ss.loop == 0 {
		ss.wmu.Lock() // (in the relay loop nothing else writes: no pump)
		ss.ownerHeld = heldMu | heldWmu
	}
	ss.syncParams(sc)
	ss.inline = inlineRelay && ss.txnMode && !ss.pinned
	ss.armTransactionTimeout()
	if ss.inline {
		ss.pumpDone = nil
		if ss.loop == 0 {
			ss.srv.budget.watch(sc)
		}
	} else {
		done := make(chan struct{})
		ss.pumpDone = done
		ss.entry.stats.pumpedLoans.Add(1)
		ss.srv.pumps.run(pumpJob{ss: ss, sc: sc, done: done})
	}
	if ss.ownerHeld&heldWmu != 0 {
		ss.ownerHeld = heldMu
		ss.wmu.Unlock()
	}
	ss.ownerHeld = 0
	ss.mu.Unlock()
}

// stillLinked reports whether sc, which link returned, is still the linked
// server; the caller holds mu and is about to take wmu and write to it. In
// between, a pump may have returned it to the pool (the transaction before
// ended) or lost it: the caller then links again.
func (ss *session) stillLinked(sc *pool.ServerConn) bool { return ss.server == sc }

// waitForServer queues for a server connection of p, up to
// query_wait_timeout. The session stays queued (stWaiting) past a grant,
// for a CancelRequest that comes meanwhile: the caller ends the wait
// (endQueued) before it links the server. A client that disconnected while queued is noticed
// when its turn comes: one non-blocking peek at its socket, and the server
// goes straight back to the pool, its query never sent. (Watching every
// queued client while it waits cost a goroutine, two deadline changes and
// a wake-up per queued transaction.) Errors are the pool's own (or
// errClientGone); link decides what the client is told.
func (ss *session) waitForServer(p *pool.Pool, readOnly bool) (sc *pool.ServerConn, err error) {
	var expired <-chan time.Time
	if d := ss.srv.cfg.Load().QueryWaitTimeout.Std(); d > 0 {
		// query_wait_timeout, on a timer the session keeps for its waits.
		if r := ss.ensureRare(); r.waitTimer == nil {
			r.waitTimer = time.NewTimer(d)
		} else {
			r.waitTimer.Reset(d)
		}
		defer ss.rare.waitTimer.Stop()
		expired = ss.rare.waitTimer.C
	}
	ss.flags.Or(stWaiting)
	defer func() {
		if err != nil {
			ss.flags.And(^stWaiting) // (after a grant, endQueued)
		}
	}()
	r := ss.beginWait()
	defer ss.endWait(r)
	if ss.has(evKill) {
		return nil, errKilledQueued // (killed before waiting was set)
	}
	if ss.takeQueuedCancel() {
		return nil, errCancelledQueued // (cancelled before waiting was set)
	}
	sc, err = p.AcquireWhile(r.waitStop, expired)
	if errors.Is(err, pool.ErrPoolClosed) && ss.refreshEntry() {
		// A reload replaced the database's pools: carry on with the new
		// ones, the client keeps its session.
		var perr error
		if p, _, perr = ss.pickPool(readOnly); perr == nil {
			sc, err = p.AcquireWhile(r.waitStop, expired)
		}
	}
	if errors.Is(err, pool.ErrWaitStopped) {
		if !ss.has(evKill) && ss.takeQueuedCancel() {
			return nil, errCancelledQueued
		}
		return nil, errKilledQueued
	}
	if err != nil {
		return nil, err // link turns it into what the client is told
	}
	r.lent = sc // (until link's attach: see lent)
	ss.faultAt("lent")
	if ss.rd.Buffered() == 0 {
		if r.peeker == nil {
			r.peeker = protocol.NewPeeker(ss.raw)
		}
		if r.peeker.PeerClosed() {
			r.lent = nil
			p.Release(sc)
			return nil, errClientGone
		}
	}
	return sc, nil
}

// beginWait lets a kill (the admin console's KILL, KILL_CLIENT) stop the
// wait for a server the session's goroutine is about to begin
// (waitForServer, takeCarried): kill sends on waitStop, under mu, while
// waiting is set. The caller checks evKill after it, for a kill before.
func (ss *session) beginWait() *rareState {
	r := ss.ensureRare()
	ss.mu.Lock()
	if r.waitStop == nil {
		r.waitStop = make(chan struct{}, 1)
	}
	r.waiting = true
	ss.mu.Unlock()
	return r
}

// endWait ends a wait beginWait began: a kill no longer stops it, and a
// stop the wait did not take (a kill as the server came) is drained, so
// it stops no later wait.
func (ss *session) endWait(r *rareState) {
	ss.mu.Lock()
	r.waiting = false
	select {
	case <-r.waitStop:
	default:
	}
	ss.mu.Unlock()
}

// endQueued ends the wait for a server of a session that got one (a
// goroutine's wait, or a grant the relay loop took): the session is no
// longer queued (stWaiting) from here, under mu, where forwardCancel looks
// at it, and it reports whether a CancelRequest came for the request
// before (evCancelQueued, which it leaves for the caller). The request is
// then refused with 57014 before it runs, as while it waited: pgferry
// holds it, where PostgreSQL would have it and cancel it (a statement
// waiting for a lock). From here to the request's send, a cancel finds a
// session with nothing running, as for any request between its read and
// its send, and PostgreSQL ignores one while it reads a statement.
func (ss *session) endQueued() (cancelled bool) {
	ss.mu.Lock()
	ss.flags.And(^(stWaiting | evCancelOwed))
	cancelled = ss.has(evCancelQueued)
	if !cancelled {
		ss.flags.Or(stGranted) // (until its request is sent: forwardCancel)
	}
	ss.mu.Unlock()
	return cancelled
}

// returnLent gives back to its pool, unused, the server a wait or a grant
// got (rareState.lent) for a request refused before it was linked.
func (ss *session) returnLent(sc *pool.ServerConn) {
	ss.rare.lent = nil
	sc.Pool().Release(sc)
}

// linkedLent forgets the server a wait or a grant got (rareState.lent)
// once attach has linked it: finish takes it back from here.
func (ss *session) linkedLent() {
	if r := ss.rare; r != nil {
		r.lent = nil
	}
}

// dropLent destroys the server a wait or a grant got that attach never
// linked (rareState.lent), for the recover of a panic in between
// (failedByPanic, turnPanicked): it is nobody's, and its state unknown.
// One attach linked is finish's to destroy.
func (ss *session) dropLent() {
	r := ss.rare
	if r == nil || r.lent == nil {
		return
	}
	sc := r.lent
	r.lent = nil
	ss.mu.Lock()
	linked := ss.server == sc
	ss.mu.Unlock()
	if linked {
		return
	}
	ss.srv.parker.dropServer(sc) // (before its close: a loan on the loop may have left it in the set)
	sc.Pool().Destroy(sc)
}
