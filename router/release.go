// The end of a loan: returning a clean server to the pool, destroying one
// in an unknown state, and ending the session when the server or the client
// fails.

package router

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unique"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/lag"
)

// releaseServer ends the transaction's loan: it waits for any write in
// progress, flushes the client and returns the server to the pool; end is
// when the transaction ended. With
// takeLSN (a write transaction under read_your_writes_lsn) it first reads
// the primary's WAL position, after the client has its answer.
func (ss *session) releaseServer(sc *pool.ServerConn, takeLSN bool, end mono) {
	ss.entry.stats.xacts.Add(1)
	ss.entry.stats.xactTimeUS.Add(uint64(end.Sub(ss.linkedAt) / time.Microsecond))
	if ss.loop == 0 {
		// (In the relay loop nothing else writes to the server: no run
		// goroutine, no pump.)
		ss.waitForWriter()
	}
	err := ss.wr.Flush() // (the relay loop flushes what would block later)
	if err == protocol.ErrWouldBlock {
		err = nil
	}
	if ss.fd < 0 {
		// Idle clients hold no write buffer. One that can park keeps it
		// until it parks, rather than take and return it every
		// transaction.
		ss.wr.Release()
	}
	// (A failed COPY that may have left Syncs unread: ring.doubt. The ring
	// is the loan's until the next attach. A server whose replay was
	// refused is inside an aborted transaction: paramsrefused.go.)
	dirty := sc.Rd.Buffered() != 0 || sc.Wr.Len() != 0 || ss.q.doubt || sc.ReplayRan < 0
	if takeLSN && !dirty {
		dirty = !ss.takeWriteLSN(sc)
	}
	// Release clears a deadline a cancel's wake-up or the budget set.
	if dirty {
		sc.Pool().Destroy(sc)
	} else {
		// Its ReadyForQuery 'I' was the last byte read. The loop's
		// release is as of the clock its turn read (end's reading).
		sc.Vouched = int64(end) // (see vouchedFor)
		if t := ss.srv.parker.wall(ss); !t.IsZero() {
			sc.Pool().ReleaseReadyAt(sc, t)
		} else {
			sc.Pool().ReleaseReady(sc)
		}
	}
	if err != nil {
		ss.markDead(err)
	}
	ss.wakeIfPending()
}

// takeWriteLSN records the primary's WAL insert position after the client's
// write transaction: every commit of the client lies before it, so a
// replica that replayed past it shows the client its writes. If it cannot
// be read, the client's reads stay on the primary until its next write, and
// it reports false: the connection's state is unknown.
func (ss *session) takeWriteLSN(sc *pool.ServerConn) bool {
	lsn := ^uint64(0)
	sc.Conn.SetDeadline(time.Now().Add(time.Second))
	_, err := protocol.Exec(sc.Rd, sc.Wr, "select pg_current_wal_insert_lsn()", func(typ byte, frame []byte) error {
		if typ != protocol.MsgDataRow {
			return nil
		}
		var buf [1]protocol.Column
		cols, err := protocol.ParseDataRow(protocol.Body(frame), buf[:0])
		if err != nil || len(cols) != 1 || cols[0].Null {
			return fmt.Errorf("pg_current_wal_insert_lsn: unexpected row")
		}
		v, err := lag.ParseLSN(string(cols[0].Value))
		if err == nil {
			lsn = v
		}
		return err
	})
	sc.Conn.SetDeadline(time.Time{})
	if err != nil {
		ss.logger().Warn("reading the commit position for read_your_writes_lsn failed; reads stay on the primary", zap.Error(err))
	}
	ss.mu.Lock()
	ss.lastWrite = lsn
	ss.mu.Unlock()
	return err == nil
}

// wakeIfPending wakes the session goroutine when it has work waiting for the
// end of the transaction (shutdown).
func (ss *session) wakeIfPending() {
	if ss.loop != 0 && ss.rare == nil && !ss.srv.isDraining() {
		// The relay loop, the owner, reads rare without mu: a session
		// without it has no mailbox (subscribe makes it first).
		return
	}
	ss.mu.Lock()
	mail := ss.mailLen() > 0
	ss.mu.Unlock()
	if mail || ss.srv.isDraining() {
		ss.wake()
	}
}

func (ss *session) markDead(err error) {
	ss.mu.Lock()
	if ss.dead == nil {
		ss.dead = err
	}
	ss.mu.Unlock()
	ss.wake()
}

// relayFailed sorts a Forward error into client or server failure. A
// server failing in the middle of a streamed frame (size over the buffer)
// has left the client half a message: that client cannot go on.
func (ss *session) relayFailed(sc *pool.ServerConn, err error, size int) {
	var we *protocol.WriteError
	if errors.As(err, &we) {
		ss.clientFailed(sc, err)
		return
	}
	ss.lostServer(sc, err, size <= protocol.BufferSize)
}

// serverFailed handles a broken server connection: unless run took the
// server back on purpose, the client is told and the server destroyed.
func (ss *session) serverFailed(sc *pool.ServerConn, err error) {
	ss.lostServer(sc, err, true)
}

// lostServer is serverFailed; survivable is false when the client's
// protocol stream is broken too.
func (ss *session) lostServer(sc *pool.ServerConn, err error, survivable bool) {
	ss.mu.Lock()
	if ss.stopping {
		if !survivable && ss.dead == nil {
			ss.dead = errStreamCut // (finish, ending the session, asks: clientCut)
		}
		ss.mu.Unlock()
		return
	}
	ss.server = nil
	// In transaction mode the client's session lives in pgferry, so it can
	// outlive the server: every request still waiting for ReadyForQuery gets
	// an ERROR and an idle ReadyForQuery, and the next transaction runs on
	// another server (after a failover, on the new primary). A client idle
	// inside a transaction, or pinned to this server, loses its session.
	answers := 0
	// A group of extended-protocol messages the client has not ended with
	// a Sync yet (some went out since the last Sync or Query, and are
	// owed: the last request sent is) is cut: the rest of it must not run
	// on the next server, where a Bind or Execute would find nothing of
	// what went before it (26000, 34000). It gets one error, unless the
	// server failed it already (serverSkips with no Sync owed: the server
	// skips to the group's own, and the client has that error), and the
	// client's messages up to its Sync are skipped (stSkipToSync).
	cut := ss.q.open && ss.q.n > 0
	told := ss.serverSkips && ss.q.toSync() == ss.q.n
	// The first Sync or simple Query owed may end a request the server
	// failed already, whose error the client has (failedOwed: its Sync
	// sent after the error, or the error relayed before the
	// ReadyForQuery): it gets its ReadyForQuery alone, as the client
	// would read it after that error, and no second error.
	failed := ss.failedOwed && !told
	ss.failedOwed = false
	// Every request owed gets an error: its LISTENs subscribe nothing and
	// its UNLISTENs end nothing, as for the server's skipped ones.
	ss.listensSkipped(ss.q.n) // (listenlinked.go)
	ss.listensLost()          // (and its transaction's rolled back)
	ss.dropsLost()            // (stmts.go: nor do its drops of every statement)
	for e, ok := ss.q.peek(); ok; e, ok = ss.q.peek() {
		if e.kind == kSync || e.kind == kQuery {
			answers++
		}
		ss.q.pop()
	}
	doomed := ss.doomed()
	survive := survivable && doomed == nil && ss.txnMode && !ss.pinned && (answers > 0 || cut)
	if survive && cut {
		ss.flags.Or(stSkipToSync) // (before the server is let go of: see link)
	}
	fatalMsg := ss.serverFatal
	ss.serverFatal = nil
	ss.status = protocol.TxIdle
	ss.mu.Unlock()
	ss.waitForWriter()
	ss.srv.parker.dropServer(sc) // (before its close, which may wait)
	sc.Pool().Destroy(sc)
	ss.logger().Warn("server connection lost", zap.String("server", sc.Addr), zap.Error(err), zap.Bool("session_kept", survive))
	msg := "server connection lost: the server closed the connection or the network failed"
	if fatalMsg != nil {
		msg = "server connection lost: " + *fatalMsg
	}
	if survive {
		e := protocol.NewError(protocol.SQLStateConnectionFailure, msg)
		e.Hint = "The transaction was rolled back unless the connection was lost during COMMIT. The next transaction runs on another server connection."
		b := ss.wr.Buffer()
		for i := 0; i < answers; i++ {
			if i > 0 || !failed {
				b = e.AppendFrame(b)
			}
			b = protocol.AppendReadyForQuery(b, protocol.TxIdle)
		}
		if cut && !told {
			b = e.AppendFrame(b) // (its ReadyForQuery answers its Sync)
		}
		ss.wr.SetBuffer(b)
		if err := ss.wr.Flush(); err != nil && err != protocol.ErrWouldBlock {
			ss.markDead(err)
		}
		return
	}
	if doomed != nil {
		ss.wr.SetBuffer(doomed.AppendFrame(ss.wr.Buffer()))
		ss.wr.Flush()
	} else if survivable {
		// (Otherwise the client already has part of a message: nothing more
		// can be said on its stream; the session just ends.)
		e := protocol.Fatal(protocol.SQLStateConnectionFailure, msg)
		ss.wr.SetBuffer(e.AppendFrame(ss.wr.Buffer()))
		ss.wr.Flush()
	}
	if !survivable {
		ss.markDead(errStreamCut) // (a kill's FATAL must not follow: clientCut)
		return
	}
	ss.markDead(errServerGone)
}

// clientFailed handles a client that cannot be written to: the server's
// state is unknown, so it is destroyed.
func (ss *session) clientFailed(sc *pool.ServerConn, err error) {
	ss.mu.Lock()
	if ss.stopping {
		if ss.dead == nil {
			ss.dead = err // (finish, ending the session, asks: clientCut)
		}
		ss.mu.Unlock()
		return
	}
	ss.server = nil
	ss.mu.Unlock()
	ss.waitForWriter()
	ss.srv.parker.dropServer(sc) // (before its close, which may wait)
	sc.Pool().Destroy(sc)
	ss.markDead(err)
}

// finish ends the session: it takes back a linked server, cleans it or
// destroys it, and says goodbye to the client (a killed one is told why:
// toldKilled).
func (ss *session) finish(err error) {
	err = ss.toldKilled(err)
	// errors.AsType, not errors.As: its targets would escape, two
	// allocations per session.
	pe, _ := errors.AsType[*protocol.Error](err)
	var re *relayedError
	if pe == nil {
		re, _ = errors.AsType[*relayedError](err)
	}
	switch {
	case pe != nil:
		ss.logger().Info("client disconnected", zap.String("reason", pe.Message))
	case re != nil:
	case err == nil || errors.Is(err, errClientTerminated) || protocol.IsDisconnect(err) || errors.Is(err, errServerGone) ||
		errors.Is(err, errClientGone) || errors.Is(err, errAdminDone):
		if ss.debugEnabled() {
			ss.logger().Debug("client disconnected")
		}
	default:
		ss.logger().Info("client disconnected", zap.Error(err))
	}
	ss.mu.Lock()
	sc := ss.server
	ss.stopping = true
	if r := ss.rare; r != nil && r.queryTimer != nil {
		r.queryTimer.Stop()
	}
	if r := ss.rare; r != nil && r.txnTimer != nil {
		r.txnTimer.Stop()
	}
	ss.server = nil
	// A server a cancel is still on its way to is not clean: back in the
	// pool, it could be running another client's query when the cancel
	// lands (PgBouncer keeps such a server until the cancel is done; a
	// client that leaves in that moment is rare enough to close it). Nor
	// is one inside the extended protocol's implicit transaction (an
	// Execute and no Sync): the next client's first query would commit
	// what PostgreSQL rolls back when its client leaves.
	clean := ss.q.n == 0 && ss.status == protocol.TxIdle && ss.cancels == 0 && !ss.serverSkips && !ss.q.open && !ss.q.doubt
	running := ss.q.n > 0
	pinned := ss.pinned
	if sc != nil {
		// Under mu: a pump's takeKick, which clears interrupts under mu,
		// then sees stopping and ends instead of swallowing this one.
		sc.Interrupt()
	}
	ss.mu.Unlock()
	if pinned {
		ss.entry.stats.pinnedClients.Add(-1)
	}
	if ss.listening {
		ss.entry.listenerFor(ss.srv.log).Unsubscribe(ss, "")
	}
	ss.releaseStmts()
	if r := ss.rare; r != nil && !r.carried.IsZero() {
		// A queued request the loop handed on that nobody waited on
		// since (takeCarried): it gave up.
		tk := r.carried
		r.carried = pool.Ticket{}
		tk.Cancel()
	}
	ss.joinPump()
	if sc != nil {
		sc.ClearInterrupt()
		// A client that sent Terminate after its query wants it run to the
		// end, as PostgreSQL would; one that vanished gets it cancelled.
		if running && err != nil && !errors.Is(err, errServerGone) && !errors.Is(err, errClientTerminated) {
			ss.cancelAbandoned(sc)
		}
		if errors.Is(err, errClientTerminated) && sc.Wr.Len() > 0 {
			// Its last requests came in one write with the Terminate, so
			// the relay held them back to send them with what followed
			// (flushServerIfIdle): they go now. The server runs them and
			// then reads the end of the connection (returnServer closes
			// it: its answers are owed to nobody). A server that takes
			// nothing (it waits to send answers nobody reads) is not
			// waited for.
			sc.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			if sc.Wr.Flush() != nil {
				// Perhaps part of a frame went: the server's state is
				// unknown (and the Writer, emptied, no longer says so).
				clean = false
			}
			// A lone Flush leaves a clean server, which goes back to the
			// pool: without the deadline.
			sc.Conn.SetWriteDeadline(time.Time{})
		}
		ss.returnServer(sc, clean, pinned)
	}
	if pe != nil && !errors.Is(err, errServerGone) {
		if pe != ss.killed() || !ss.clientCut() {
			ss.sendFatal(pe)
		}
	} else if re != nil && ss.conn != nil { // (nil: see sendFatal)
		ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
		ss.conn.Write(re.frame)
	}
}

// cancelAbandoned cancels the query a departing client left running on sc,
// which is about to be closed: PostgreSQL notices a closed connection only
// when it next writes to it (or with client_connection_check_interval), so
// without a cancel a long query would run on, holding its locks and a
// backend, long after its client left.
func (ss *session) cancelAbandoned(sc *pool.ServerConn) {
	ss.entry.stats.abandonedCancels.Add(1)
	if err := ss.srv.sendServerCancel(context.Background(), sc); err != nil {
		ss.logger().Warn("cancelling the query of a client that disconnected failed", zap.Error(err))
		return
	}
	ss.logger().Info("cancelled the running query of a client that disconnected")
}

// returnServer gives back a server taken from a departing client: reset
// and released when its state is known to be clean, destroyed otherwise
// (PgBouncer closes a server whose client left mid-transaction too).
func (ss *session) returnServer(sc *pool.ServerConn, clean, pinned bool) {
	cfg := ss.srv.cfg.Load()
	if !clean || sc.Rd.Buffered() != 0 || sc.Wr.Len() != 0 || sc.ReplayRan < 0 {
		sc.Pool().Destroy(sc)
		return
	}
	needReset := (!ss.txnMode || pinned || cfg.ServerResetQueryAlways) && cfg.ServerResetQuery != ""
	if needReset {
		if err := resetServer(sc, cfg.ServerResetQuery, ss.entry.welcome); err != nil {
			if ss.debugEnabled() {
				ss.logger().Debug("server reset failed", zap.Error(err))
			}
			sc.Pool().Destroy(sc)
			return
		}
	}
	sc.Pool().Release(sc)
}

// resetServer runs the reset query and waits for ReadyForQuery 'I'. The
// reset (DISCARD ALL) also resets parameters the server does not report,
// so those are forgotten; reported ones come back in ParameterStatus.
func resetServer(sc *pool.ServerConn, query string, reported map[string]string) error {
	sc.ParamsKey = unique.Handle[string]{}
	if reported != nil {
		for k := range sc.Params {
			if _, ok := reported[k]; !ok {
				delete(sc.Params, k)
			}
		}
	}
	sc.Conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer sc.Conn.SetDeadline(time.Time{})
	status, err := protocol.Exec(sc.Rd, sc.Wr, query, func(typ byte, frame []byte) error {
		switch typ {
		case protocol.MsgParameterStatus:
			k, rest, _ := protocol.CString(protocol.Body(frame))
			v, _, _ := protocol.CString(rest)
			sc.Params[string(k)] = string(v)
		case protocol.MsgCommandComplete:
			if tag := string(protocol.Body(frame)); tag == "DISCARD ALL\x00" || tag == "DEALLOCATE ALL\x00" {
				sc.Stmts.Clear()
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reset query: %w", err)
	}
	if status != protocol.TxIdle {
		return errors.New("server not idle after reset")
	}
	return nil
}

// waitForWriter blocks until run has finished a write to the server that
// was in progress, so a server is never released mid-write.
func (ss *session) waitForWriter() {
	ss.wmu.Lock()
	//lint:ignore SA2001 an empty critical section: the wait is the point
	ss.wmu.Unlock()
}

// refreshEntry points the session at the current pools of its database
// after a reload replaced them. It reports whether it found them.
func (ss *session) refreshEntry() bool {
	if ss.srv.isDraining() || ss.pinned || ss.has(evDoomed) {
		// (A listening client's LISTENs live on the old pools' listener,
		// which doomed it before those pools closed.)
		return false
	}
	cfg := ss.srv.cfg.Load()
	db, _, ok := cfg.LookupDatabase(ss.database)
	if !ok {
		return false
	}
	user := db.User
	if user == "" {
		user = ss.user
	}
	e, err := ss.srv.poolFor(cfg, ss.poolName(), db, user, ss.clientPassword())
	if err != nil || e == ss.entry {
		return false
	}
	// The new pools reach the same servers: carry the server parameter
	// set over so syncParams knows which values are server defaults.
	old := ss.entry
	w, _ := old.setWelcome(nil)
	e.setWelcome(w)
	ss.mu.Lock()
	ss.entry = e
	ss.txnMode = e.mode == poolModeTransaction
	ss.mu.Unlock()
	ss.countTraffic() // no pump runs: link joined it
	return true
}

// countTraffic points the client's Reader and Writer at its pool's byte
// counters. It runs on the session goroutine while no pump writes to the
// client.
func (ss *session) countTraffic() {
	if ss.entry == nil || ss.rd == nil {
		return
	}
	ss.rd.Count, ss.wr.Count = &ss.entry.stats.recvBytes, &ss.entry.stats.sentBytes
}

// poolEntry returns the session's pools for other goroutines (admin
// console, metrics); the session's own goroutines use ss.entry directly.
func (ss *session) poolEntry() *poolEntry {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.entry
}

// releasable reports whether the transaction is over and the server can go
// back to the pool: it owes nothing, does not skip what comes next after an
// error (serverSkips), and is not inside the extended protocol's implicit
// transaction (ring.open: the last ReadyForQuery's status is stale once an
// Execute without a Sync went, as after a release a cancel deferred). mu
// is held.
func (ss *session) releasable() bool {
	return ss.q.n == 0 && ss.status == protocol.TxIdle && ss.txnMode && !ss.pinned && !ss.stopping && !ss.serverSkips && !ss.q.open
}

// takeKick consumes a wake-up of the pump sent by cancelDone when the
// server was held for a cancel. It reports whether the read timeout was
// that wake-up; then the deadline is cleared. The release itself happens in
// kickRelease.
func (ss *session) takeKick(sc *pool.ServerConn) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.stopping || ss.server != sc {
		// finish (or a failure) took the server back and interrupted the
		// read: the timeout is theirs, not a kick to swallow.
		return false
	}
	kicked := ss.pumpKick
	release := kicked && ss.releasable() && ss.cancels == 0
	if kicked && !release {
		ss.pumpKick = false
		// Under mu, so it cannot clear an Interrupt that finish makes
		// after this (finish interrupts under mu too), nor one a kill or
		// query_timeout made (interrupted).
		if !ss.interrupted() {
			sc.ClearInterrupt()
		}
		ss.mailToLinked() // a kick of Notify's (listen.go)
	}
	return kicked && !release
}

// kickRelease releases a server held for a cancel once the cancel is
// delivered and the transaction is over. It reports whether it did.
func (ss *session) kickRelease(sc *pool.ServerConn) bool {
	ss.mu.Lock()
	if !ss.pumpKick || ss.server != sc || !ss.releasable() || ss.cancels > 0 {
		ss.mu.Unlock()
		return false
	}
	ss.pumpKick = false
	ss.server = nil
	ss.mu.Unlock()
	sc.ClearInterrupt()
	ss.releaseServer(sc, false, monoNow())
	return true
}
