// Timers on a session: query_timeout and transaction_timeout, and dooming a
// session that must end (its client gets a FATAL, its running query is
// cancelled).

package router

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// armQueryTimeout starts the query_timeout clock when a query is sent and
// none of the client's is running: the request just pushed (a Query, or
// the Sync that ends an extended-protocol group, whose Parse, Bind and
// Execute ahead of it are its own) is the only one in the ring that the
// client's ReadyForQuery ends (firstQuery). The timer is made once per
// session and reused. mu is held.
func (ss *session) armQueryTimeout() {
	if ss.srv.cfg.Load().QueryTimeout > 0 && ss.q.firstQuery() {
		ss.startQueryTimer() // (the check above is inlined)
	}
}

// startQueryTimer is armQueryTimeout's timer. mu is held.
func (ss *session) startQueryTimer() {
	d := ss.srv.cfg.Load().QueryTimeout.Std()
	if d <= 0 {
		return // (a reload turned it off since the check)
	}
	r := ss.ensureRareLocked()
	r.querySeq++
	if r.queryTimer == nil {
		r.queryTimer = time.AfterFunc(d, ss.onQueryTimeout)
		return
	}
	r.queryTimer.Reset(d)
}

// armTransactionTimeout starts the transaction_timeout clock for a new
// loan. Only a loan that is one transaction (transaction mode, not pinned)
// is timed: a session-mode or pinned client holds its server for the whole
// session. The timer is made once per session and reused. mu is held.
func (ss *session) armTransactionTimeout() {
	if ss.srv.cfg.Load().TransactionTimeout > 0 {
		ss.startTransactionTimer() // (the check above is inlined)
	}
}

// startTransactionTimer is armTransactionTimeout's timer, for a loan that
// is one transaction. mu is held.
func (ss *session) startTransactionTimer() {
	if !ss.txnMode || ss.pinned {
		return
	}
	d := ss.srv.cfg.Load().TransactionTimeout.Std()
	if d <= 0 {
		return // (a reload turned it off since the check)
	}
	r := ss.ensureRareLocked()
	if r.txnTimer == nil {
		r.txnTimer = time.AfterFunc(d, ss.onTransactionTimeout)
		return
	}
	r.txnTimer.Reset(d)
}

// errTransactionTimeout is what a client whose transaction outlived
// transaction_timeout is told before it is disconnected (PostgreSQL 17's
// own transaction_timeout uses the same SQLSTATE).
var errTransactionTimeout = protocol.Fatal(protocol.SQLStateTransactionTimeout, "transaction_timeout: the transaction was open longer than allowed; it was rolled back")

// onTransactionTimeout ends a session whose transaction has been open
// longer than transaction_timeout (see markDoomed).
func (ss *session) onTransactionTimeout() {
	d := ss.srv.cfg.Load().TransactionTimeout.Std()
	ss.mu.Lock()
	sc := ss.server
	expired := sc != nil && d > 0 && ss.txnMode && !ss.pinned && !ss.stopping && since(ss.linkedAt) >= d
	if !expired {
		ss.mu.Unlock()
		return
	}
	running, first := ss.markDoomed(evDoomTxn)
	ss.mu.Unlock()
	ss.settleDoom(running, first, "transaction_timeout: disconnecting the client")
}

// settleDoom does what markDoomed left to its caller once mu is released:
// a first doom is announced (logMsg), and a query the server is running is
// cancelled.
func (ss *session) settleDoom(running *pool.ServerConn, first bool, logMsg string) {
	if first {
		ss.announceDoom(logMsg)
	}
	if running != nil {
		ss.cancelRunning(context.Background(), running)
	}
}

// doomGrace is how long a doomed session's client writes may still take:
// enough to deliver the FATAL, and a bound on a client that stopped reading.
const doomGrace = time.Second

// markDoomed ends the session with the FATAL its doom event stands for
// (evDoomTxn, evDoomBacklog or evDoomListen; see doomed): the relay reading the server
// and the session goroutine reading the client stop, and the client is told
// why. A server running a query is held for a cancel (the caller
// delivers it with cancelRunning once mu is released): the server would
// otherwise keep running it. mu is held, and stays held; first reports
// whether this doom was the first, which the caller then announces
// (announceDoom) after releasing mu.
func (ss *session) markDoomed(ev uint32) (running *pool.ServerConn, first bool) {
	sc := ss.server
	if ss.has(evDoomed) {
		if sc != nil {
			sc.Interrupt() // linked since the first doom
		}
		return nil, false
	}
	ss.flags.Or(ev) // only under mu: the first doom is the one kept
	if sc != nil {
		sc.Interrupt()
		if ss.q.n > 0 {
			ss.cancels++
			running = sc
		}
	}
	return running, true
}

// announceDoom logs a first doom and wakes the session goroutine; writes
// to a client that does not read give up after doomGrace. mu is not held.
func (ss *session) announceDoom(logMsg string) {
	ss.logger().Info(logMsg)
	if c := ss.rawConn(); c != nil {
		c.SetWriteDeadline(time.Now().Add(doomGrace))
	}
	ss.wake()
}

// cancelRunning cancels the query a doomed session's server is running
// and ends the hold markDoomed took on the server.
func (ss *session) cancelRunning(ctx context.Context, sc *pool.ServerConn) {
	defer ss.cancelDone(sc)
	if err := ss.srv.sendServerCancel(ctx, sc); err != nil {
		ss.logger().Warn("cancelling the running query of a disconnected client failed", zap.Error(err))
	}
}

// onQueryTimeout cancels the running query on the server, as a client's
// own CancelRequest would; the client gets 57014 from the server. If the
// query is still running a second after the cancel was delivered (or could
// not be), the server connection is dropped: the client gets an ERROR
// 08006 instead of waiting on a server that does not answer.
func (ss *session) onQueryTimeout() {
	ss.mu.Lock()
	sc, seq := ss.server, ss.rare.querySeq
	busy := sc != nil && ss.q.n > 0
	ss.mu.Unlock()
	if !busy {
		return
	}
	ss.logger().Info("query_timeout: cancelling the running query")
	ss.srv.forwardCancel(ss.pid, ss.key)
	time.AfterFunc(time.Second, func() {
		ss.mu.Lock()
		stuck := ss.server == sc && ss.rare.querySeq == seq && ss.q.n > 0 && !ss.stopping
		if stuck {
			ss.serverStuck = true
			sc.Interrupt()
		}
		ss.mu.Unlock()
		if stuck {
			ss.logger().Warn("query_timeout: the server did not stop the query; dropping the server connection")
		}
	})
}
