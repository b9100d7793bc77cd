package router

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
)

// forwardCancel relays a client's CancelRequest to the server connection
// serving that client right now, with the server's own key. A key that
// matches no session, or a session without a server, is dropped, as
// PostgreSQL drops unknown keys; but a session queued for a server has
// its queued request cancelled there (cancelQueuedLocked).
func (s *Server) forwardCancel(pid, key uint32) {
	ss := s.sessionByKey(pid, key)
	if ss == nil {
		return
	}
	ss.mu.Lock()
	sc := ss.server
	if sc == nil && ss.has(stWaiting) {
		ss.cancelQueuedLocked()
		ss.mu.Unlock()
		// One the relay loop queued: its goroutine takes the wait over,
		// and gives it up (takeCarried).
		s.parker.unpark(ss)
		return
	}
	if sc != nil && ss.has(stGranted) {
		// The session took the server its wait got, and its request has
		// not gone to it yet (or only the SETs attach sent before it):
		// the cancel goes once the request has (send).
		ss.flags.Or(evCancelOwed)
		ss.mu.Unlock()
		return
	}
	if sc == nil || ss.q.n == 0 {
		// Nothing is running for this client: nothing to cancel.
		ss.mu.Unlock()
		return
	}
	// Hold the server: it must not serve another client until this cancel
	// has been delivered, or a late cancel could hit someone else's query
	// (PgBouncer's sv_being_canceled).
	ss.cancels++
	ss.mu.Unlock()
	defer ss.cancelDone(sc)
	if err := s.sendServerCancel(context.Background(), sc); err != nil {
		s.log.Warn("cancel request failed", zap.Uint64("conn_id", ss.id), zap.Error(err))
	}
}

// grantedSent notes that the request a session took a server with after
// a wait (stGranted) has gone to it, up to where the server answers it or
// runs it (an Execute: executes), and reports whether a cancel came for it meanwhile (evCancelOwed): then
// the server is held for it (cancels), and the caller, once it has
// flushed the request, sends it (sendOwedCancel). mu is held.
func (ss *session) grantedSent() bool {
	owed := ss.has(evCancelOwed)
	ss.flags.And(^(stGranted | evCancelOwed))
	if owed {
		ss.cancels++
	}
	return owed
}

// executes reports whether an Execute the server has not answered yet
// went to it: PostgreSQL runs an Execute as soon as it reads it, before
// the Sync or Flush that asks for the group's answers, so a cancel owed
// for a granted request (grantedSent) goes once its Execute has, as the
// client's would reach the statement running there. It walks the ring
// only for such a request (stGranted), never on the relay's path.
func (r *ring) executes() bool {
	for i := 0; i < r.n; i++ {
		if r.buf[(r.head+i)%len(r.buf)].kind == kExecute {
			return true
		}
	}
	return false
}

// sendOwedCancel delivers, on a goroutine of its own, the cancel
// grantedSent found owed for the request just flushed to sc.
func (ss *session) sendOwedCancel(sc *pool.ServerConn) {
	go func() {
		defer ss.cancelDone(sc)
		if err := ss.srv.sendServerCancel(context.Background(), sc); err != nil {
			ss.srv.log.Warn("cancel request failed", zap.Uint64("conn_id", ss.id), zap.Error(err))
		}
	}()
}

// cancelQueuedLocked cancels the request ss is queued for a server with:
// it posts evCancelQueued and stops a goroutine's wait (waitStop, as kill
// does). mu is held.
func (ss *session) cancelQueuedLocked() {
	ss.flags.Or(evCancelQueued)
	if r := ss.rare; r != nil && r.waiting {
		select {
		case r.waitStop <- struct{}{}: // (one slot: never blocks under mu)
		default: // (stopped already)
		}
	}
}

// takeQueuedCancel reports whether a CancelRequest cancelled the request
// the session is queued with, and forgets it. Only the session's owner
// calls it.
func (ss *session) takeQueuedCancel() bool {
	if !ss.has(evCancelQueued) {
		return false
	}
	ss.flags.And(^evCancelQueued)
	return true
}

// killedQuery is a query a kill left running on sc, held for its cancel
// (kill).
type killedQuery struct {
	ss *session
	sc *pool.ServerConn
}

// cancelKilled cancels the queries kills left running, all at once, and
// returns once every cancel is delivered or has failed (each within
// cancel_wait_timeout). No lock is held.
func cancelKilled(running []killedQuery) {
	var wg sync.WaitGroup
	for _, k := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.ss.cancelRunning(context.Background(), k.sc)
		}()
	}
	wg.Wait()
}

// sendServerCancel delivers a CancelRequest for the query sc is running,
// with sc's own key, waiting at most cancel_wait_timeout (10 s if unset).
// The caller holds sc for the cancel (ss.cancels).
func (s *Server) sendServerCancel(ctx context.Context, sc *pool.ServerConn) error {
	timeout := s.cfg.Load().CancelWaitTimeout.Std()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dc := sc.Pool().Config().Dial
	return pool.SendCancel(ctx, &dc, sc.Host, sc.Addr, sc.PID, sc.Key)
}

// cancelDone ends a cancel's hold on sc and, if the transaction finished
// meanwhile, lets the pump release the server now. A cancel for a server
// the session no longer has holds nothing: the count is the linked
// server's (attach starts it at 0), and a server lost meanwhile, or taken
// back by finish, is destroyed.
func (ss *session) cancelDone(sc *pool.ServerConn) {
	ss.mu.Lock()
	if ss.server != sc {
		ss.mu.Unlock()
		return
	}
	ss.cancels--
	if ss.cancels == 0 && ss.releaseDeferred {
		ss.releaseDeferred = false
		ss.pumpKick = true
		sc.Interrupt() // under mu: the server is still this session's
	}
	ss.mu.Unlock()
}
