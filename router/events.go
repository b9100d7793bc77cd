// The events other goroutines post to a session, and the state bits its
// owner publishes for them, in one atomic word.

package router

import (
	"errors"
	"net"
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// A session's flags word (session.flags). Other goroutines post an event
// to a session as a bit set with one atomic OR and then, if the owner may
// be blocked, interrupt its read; the owner acts on the bit at a frame
// boundary. (What still crosses under mu instead is listed in
// docs/architecture.md: the pump's link state, the mailbox, cancels.) The
// st bits go the other way: the owner (or, for stParked, the parker, which
// owns a parked session) publishes its state for the sweep and the admin
// console.
const (
	// evWake asks the owner to look around: notifications to deliver,
	// shutdown, a lost server, a doom.
	evWake uint32 = 1 << iota
	// evKillClient, evKillDatabase and evKillShutdown end the session as
	// soon as possible: the admin console's KILL_CLIENT, its KILL of the
	// session's database, shutdown's deadline (evKill is any of them; see
	// killed for what the client is told).
	evKillClient
	evKillDatabase
	evKillShutdown
	// evPark is a sweep's request that an idle session park (see tryPark).
	evPark
	// evDoomTxn, evDoomBacklog and evDoomListen doom the session (see
	// markDoomed): its transaction outlived transaction_timeout, its
	// notifications piled up unread, or the listener its LISTENs live on
	// closed (a reload replaced the database's pools). The first one
	// posted is what the client is told.
	evDoomTxn
	evDoomBacklog
	evDoomListen
	// evCancelQueued: a CancelRequest came for the request the session
	// is queued for a server with (forwardCancel). Its wait gives up and
	// the request fails with 57014, as a statement PostgreSQL cancels
	// while it waits for a lock does (waitForServer, takeCarried; one the
	// relay loop queued goes to its goroutine, lookAgain, whose link
	// refuses it before it looks for a server). One that comes as a
	// server is granted, before the session takes it, refuses the
	// request all the same (endQueued), and the server goes back unused.
	evCancelQueued
	// evCancelOwed: a CancelRequest came while the session had taken the
	// server a wait or a grant got it (stGranted) and its request had not
	// gone to it yet: the cancel goes to the server once the request has
	// (send, sendOwedCancel), as the client's would reach PostgreSQL
	// after the statement it sent before it.
	evCancelOwed
	// stGranted: the session took a server after a wait (endQueued) and
	// the request it waited with has not gone to it whole yet (send,
	// at the first frame after which the server owes answers).
	stGranted
	// stWaiting: queued for a server connection (the sweep leaves it be).
	stWaiting
	// stParked: in the parker's set, without a goroutine.
	stParked
	// stEnded: the session is over (others may still hold it for a while).
	stEnded
	// stYoung: logged in and not a request read since (see sweepYoung).
	stYoung
	// stSkipToSync: the session's server was lost in the middle of a
	// group of the client's extended-protocol messages (some went out
	// since its last Sync): the client was told with an ERROR, and its
	// messages up to its next Sync are skipped, as PostgreSQL skips them
	// after an error (postgres.c, ignore_till_sync); that Sync gets
	// ReadyForQuery (handleFrame, skipped). Set by whoever saw the loss
	// (lostServer, under mu, as it unlinks the server: the owner, or the
	// pump), cleared by the owner at the Sync. While it is set, no server
	// is linked for the client (link, request).
	stSkipToSync
)

const (
	evDoomed = evDoomTxn | evDoomBacklog | evDoomListen
	evKill   = evKillClient | evKillDatabase | evKillShutdown
)

// has reports whether any of the bits is set.
func (ss *session) has(bits uint32) bool { return ss.flags.Load()&bits != 0 }

// doomed returns the FATAL a doomed session ends with, or nil.
func (ss *session) doomed() *protocol.Error {
	switch f := ss.flags.Load(); {
	case f&evDoomTxn != 0:
		return errTransactionTimeout
	case f&evDoomBacklog != 0:
		return errNotificationBacklog
	case f&evDoomListen != 0:
		return errListenEnded
	}
	return nil
}

// pastDeadline makes a blocked read or write fail at once.
var pastDeadline = time.Unix(1, 0)

// wake interrupts a session blocked reading its client (or parked) so it
// can notice shutdown, a dead server or pending notifications.
func (ss *session) wake() {
	ss.flags.Or(evWake)
	if c := ss.rawConn(); c != nil {
		c.SetReadDeadline(pastDeadline)
	}
	ss.srv.parker.unpark(ss)
}

// The FATALs of a kill, as PgBouncer words them (admin.c's KILL_CLIENT,
// kill_pool's KILL; its pooler errors' SQLSTATE is 08P01).
var (
	errKilledClient   = protocol.Fatal(protocol.SQLStateProtocolViolation, "admin forced disconnect")
	errKilledDatabase = protocol.Fatal(protocol.SQLStateProtocolViolation, "database removed")
)

// killed returns the FATAL a killed session ends with, or nil: shutdown's
// is the one its drain tells idle clients.
func (ss *session) killed() *protocol.Error {
	switch f := ss.flags.Load(); {
	case f&evKillShutdown != 0:
		return errDraining
	case f&evKillDatabase != 0:
		return errKilledDatabase
	case f&evKillClient != 0:
		return errKilledClient
	}
	return nil
}

// toldKilled returns the error a session ending with err ends with: the
// kill's FATAL (killed) when it was killed and err would tell the client
// nothing (the kill's past deadline on its socket, a wait the kill
// stopped), err otherwise. A client gone, or told something already (an
// ERROR, a lost server's FATAL), or whose stream a failed write may have
// cut mid-message, gets nothing more: the owner's write here, a pump's or
// the relay loop's in finish, once the pump is over (clientCut).
func (ss *session) toldKilled(err error) error {
	k := ss.killed()
	if k == nil {
		return err
	}
	if _, ok := errors.AsType[*protocol.Error](err); ok {
		return err
	}
	if _, ok := errors.AsType[*relayedError](err); ok {
		return err
	}
	if errors.Is(err, errClientTerminated) || errors.Is(err, errClientGone) || errors.Is(err, errServerGone) ||
		protocol.IsDisconnect(err) || isWriteError(err) {
		return err
	}
	return k
}

// clientCut reports whether the client's stream may end in the middle of
// a message: a write to it failed (a pump's: the kill's deadline cut the
// row it was writing, markDead), the server was lost in the middle of a
// message streamed to it (the kill's interrupt cut the read of a row
// larger than the buffer: errStreamCut), or the relay loop's writer holds
// what it could not write. A FATAL written after it would be read as the rest of
// that message. Only the session's owner calls it, once no pump runs.
func (ss *session) clientCut() bool {
	ss.mu.Lock()
	dead := ss.dead
	ss.mu.Unlock()
	return isWriteError(dead) || dead == errStreamCut || (ss.wr != nil && ss.wr.Len() > 0)
}

// kill makes the session end as soon as possible; why is the evKill bit
// that says who killed it. It reaches a client still logging in too
// (loginkill.go). A server running a query is held for a cancel,
// as markDoomed holds it, and returned: the caller delivers the cancel
// with cancelRunning once it holds no lock. The interrupt makes the relay
// drop the server, and PostgreSQL would otherwise run the query on to its
// end (it notices a closed socket only when it next writes), as it would
// if the session's end (finish, cancelAbandoned) did not get there first.
func (ss *session) kill(why uint32) (running *pool.ServerConn) {
	ss.flags.Or(why)
	if c := ss.rawConn(); c != nil {
		c.SetDeadline(pastDeadline)
	}
	ss.srv.parker.unpark(ss)
	// Under mu: a server released meanwhile may be another client's now.
	ss.mu.Lock()
	if sc := ss.server; sc != nil {
		sc.Interrupt()
		if ss.q.n > 0 {
			ss.cancels++
			running = sc
		}
	}
	var loginStop func()
	if r := ss.rare; r != nil {
		if r.waiting {
			select { // a goroutine's wait for a server (waitForServer)
			case r.waitStop <- struct{}{}: // (one slot: never blocks under mu)
			default: // (stopped already)
			}
		}
		loginStop = r.loginStop
	}
	ss.mu.Unlock()
	if loginStop != nil {
		loginStop() // a login's wait (loginContext)
	}
	return running
}

// rawConn returns the client socket for another goroutine's interrupt, or
// nil while a parked session has let go of it (a resume arms what the
// flags ask for; see reattach).
func (ss *session) rawConn() net.Conn {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.raw
}

// closedConn stands in for the socket of a session that lost it while
// parked (see reattach): every call fails, so the session ends as it would
// on a closed connection.
type closedConn struct{}

func (closedConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (closedConn) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (closedConn) Close() error                     { return nil }
func (closedConn) LocalAddr() net.Addr              { return nil }
func (closedConn) RemoteAddr() net.Addr             { return nil }
func (closedConn) SetDeadline(time.Time) error      { return net.ErrClosed }
func (closedConn) SetReadDeadline(time.Time) error  { return net.ErrClosed }
func (closedConn) SetWriteDeadline(time.Time) error { return net.ErrClosed }
