//go:build linux && !pgferry_nopark

// The relay loop: sessions in transaction mode served by the parker's
// epoll loop, without a goroutine, from one request to the next.

package router

import (
	"io"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

// A session the loop serves waits for one thing at a time (session.loop).
// Its client socket, let go of by its net.Conn as a parked one is (detach),
// is read and written with raw non-blocking calls (sockio.Raw); its linked
// server's reads return instead of waiting (pool.ServerConn.NoWait), under
// TLS too, and so do a plain server's writes. Where the relay would block,
// the loop registers the socket in its epoll set (one-shot, as parking
// does) and serves other sessions; the event brings it back to turn.
// Whatever the loop does not serve (a statement that changes session
// state, a COPY, a frame larger than a read buffer, no server free, a
// wake, a kill, shutdown) the session's goroutine does: the loop hands the
// session back (evict) before it consumes the client's frame, where
// relayServer asks for a pump (COPY, a large answer, a cancel in flight),
// or after a frame the server did not take whole or that made too many
// answers owed (a pump then reads them); the goroutine carries on from the
// same state, with a pump relaying the answers still owed.
const (
	// loopClient: the client's next request.
	loopClient uint8 = 1 + iota
	// loopServer: the linked server's answers.
	loopServer
	// loopClientOut: room to write to the client, then its next request.
	loopClientOut
	// loopRelayOut: room to write to the client, then more answers.
	loopRelayOut
	// loopQueued: a server connection from the pool's queue (a
	// pool.Ticket, in rare.ticket), for the request read already.
	loopQueued
	// loopLogin: the client's startup packet; loopLoginAuth: its answer
	// to an authentication request (looplogin_linux.go).
	loopLogin
	loopLoginAuth
	// loopGroup: the client's next request, or the linked server's
	// error in a group the client has not ended yet, which comes at
	// once (unendedGroup); either socket's event turns the session.
	loopGroup

	// loopArmed, added to a state, records that the client socket is
	// registered for input: it is while the session waits for its
	// client, and while it waits for its server too, so that a client
	// that leaves during a long query is noticed (its goroutine then ends
	// the session and cancels the query, as inline relays' hand-offs do).
	loopArmed uint8 = 0x10
)

// loopOn reports whether the configuration lets the relay loop serve
// sessions (loopConfig): with relay_loop on but a timeout set, the parker
// waits as it does with the key off.
func (p *parker) loopOn() bool { return p.srv.loopOK.Load() }

// loopBusyHold is how long after its last event the parker goes on
// waiting raw (see epoll.Wait), and the longest raw wait.
const loopBusyHold = 100 * time.Millisecond

// loopBuilt: this build has the relay loop (it needs the parker).
const loopBuilt = true

// serverKeyBit marks the epoll data of a session's server socket (the
// rest is the session's id, as for its client socket).
const serverKeyBit = 1 << 62

// enter hands the session, idle between requests on its goroutine with
// nothing buffered, to the loop, and reports whether it did: the goroutine
// must then end at once (errParked).
func (p *parker) enter(ss *session) bool {
	if ok, never := ss.loopable(); !ok {
		if never {
			ss.loopCredit = loopNever
		} else {
			ss.loopCredit = loopEntryCredit // look again a little later
		}
		return false
	}
	if !p.start() {
		ss.loopCredit = loopNever
		return false
	}
	if !ss.detach() {
		ss.loopCredit = loopEntryCredit
		return false
	}
	conn := ss.loopConn()
	ss.rd.SetSource(conn)
	ss.wr.SetDest(conn)
	entries := &ss.entry.stats.loopEntries // (after await the session is the loop's)
	if p.await(ss, loopClient, syscall.EPOLL_CTL_ADD) {
		entries.Add(1)
		return true
	}
	// The parker is closing, or epoll failed: back to the goroutine.
	ss.loop = 0
	ss.loopCredit = loopNever
	if err := ss.reattach(); err != nil {
		ss.logger().Debug("taking the client socket back failed", zap.Error(err))
	}
	ss.rd.SetSource(ss.conn)
	ss.wr.SetDest(ss.conn)
	return false
}

// adopt serves a parked session whose client spoke on the loop, as if it
// had entered it, and reports whether it did; if not, a goroutine resumes
// it. The loop owns the session (its event took it out of the set). A
// parked session's socket is a bare descriptor already, still in the epoll
// set: the loop needs only a Reader and a Writer on it, where a goroutine
// would make a net.Conn of it again and let go of it once more. So entry
// credits, which a session the loop handed back reads on its goroutine, do
// not apply here. A burst of requests
// from parked clients (every client of a pool that waited while others
// logged in) is then served by the loop at once, not by a goroutine each.
// The session is the loop's (ss.loop) before anything here may panic, so
// that the panic ends it (serveEvents' recover), and again a parked one
// if adopt reports false.
func (p *parker) adopt(ss *session) bool {
	if ss.loopCredit == loopNever || ss.raw != nil || ss.rd != nil || ss.handshake != nil ||
		!ss.idleDeadline.IsZero() || !p.loopOn() {
		return false // parked with its conn (out of descriptors), or timed
	}
	ss.loop = loopClient // (its registration fired: request renews it)
	if ok, never := ss.loopable(); !ok {
		ss.loop = 0
		if never {
			ss.loopCredit = loopNever
		}
		return false
	}
	ss.faultAt("adopting")
	ss.openClientIO(ss.loopConn())
	ss.rd.Small = make([]byte, smallBufSize)
	ss.loopCredit = 0
	ss.entry.stats.loopEntries.Add(1)
	return true // (the caller turns it)
}

// loopConn is the client socket as the loop reads and writes it: raw
// non-blocking calls (sockio.Raw), under the session's TLS 1.3 records
// if it has them (resumed on those calls: its socket's net.Conn was let
// go, see detach).
func (ss *session) loopConn() io.ReadWriter {
	raw := &sockio.Raw{FD: int(ss.fd)}
	if c, ok := ss.conn.(*tls13.Conn); ok {
		c.Resume(rawConn{raw})
		return c
	}
	return raw
}

// tlsPending reports whether the session's TLS layer holds client bytes
// (see tls13.Conn.Pending); tlsReadable, whether it holds some that a read
// can act on without the socket (tls13.Conn.Readable).
func (ss *session) tlsPending() bool {
	c, ok := ss.conn.(*tls13.Conn)
	return ok && c.Pending()
}

func (ss *session) tlsReadable() bool {
	c, ok := ss.conn.(*tls13.Conn)
	return ok && c.Readable()
}

// loopable reports whether the loop can serve the session now, and never
// whether it cannot for as long as the session lasts. A readonly_alias
// session (with no replica: one with a lag monitor is never loopable
// anyway) stays on its goroutine, which reads its statements for what
// would let it write (aliasWriteRefusal) and may refuse them.
func (ss *session) loopable() (ok, never bool) {
	if !inlineRelay || !sockio.Available || ss.admin || !ss.txnMode || ss.pinned || ss.fd < 0 || ss.readOnlyAlias ||
		ss.handedOff || ss.entry.monitor != nil || (ss.tls && !ss.detachable()) {
		return false, true // (TLS: only records internal/tls13 carries)
	}
	cfg := ss.srv.cfg.Load()
	if !cfg.RelayLoop {
		return false, true // (for clients that log in after a reload turns it on)
	}
	if !loopConfig(cfg) {
		return false, false
	}
	if r := ss.rare; r != nil && (len(r.stateStmts) > 0 || len(r.statePortals) > 0) {
		return false, false
	}
	if ss.listening || ss.has(evWake|evKill|evPark|evDoomed) || ss.srv.isDraining() || ss.tlsPending() {
		return false, false
	}
	ss.mu.Lock()
	idle := ss.server == nil && ss.noPumpLocked() && ss.dead == nil && (ss.rare == nil || len(ss.rare.mailbox) == 0)
	ss.mu.Unlock()
	// (The Writer only once no pump writes to it; a parked session has none.)
	return idle && (ss.wr == nil || ss.wr.Len() == 0), false
}

// turn serves a session of the loop one of whose sockets is ready (the
// client's when client is true), until it waits again, goes back to a
// goroutine or ends. A spurious event costs a read that would block. The
// loop owns the session meanwhile.
func (p *parker) turn(ss *session, client bool) {
	if st := ss.loop &^ loopArmed; st == loopLogin || st == loopLoginAuth {
		p.loginTurn(ss)
		return
	}
	// (No deferred recover here: every caller has one; see serveEvents.)
	ss.faultAt("turn")
	ss.flags.And(^stParked)
	if client {
		ss.loop &^= loopArmed // its one-shot registration fired
		switch ss.loop {
		case loopServer:
			// More requests (a pipeline) or a disconnect while the server
			// works: the goroutine reads the client, a pump the server.
			p.evict(ss, "the client spoke while its server worked", false)
			return
		case loopQueued:
			p.queuedClientSpoke(ss)
			return
		case loopGroup:
			// Its next request (the server's registration may fire
			// later: a spurious event, whose read finds nothing).
			ss.loop = loopClient
		}
	} else if ss.loop&^loopArmed == loopGroup {
		// An error in the group the client has not ended: relayed as
		// answers are (relayServer).
		ss.setLoop(loopServer)
	} else if ss.loop&^loopArmed == loopQueued {
		// A server's event for a session waiting for a grant can only be
		// a stale one (a registration left armed by a loan before): the
		// session waits on, or request would queue it twice.
		if !p.await(ss, loopQueued, 0) {
			p.evict(ss, "cannot wait", false)
		}
		return
	}
	for {
		switch ss.loop &^ loopArmed {
		case loopServer, loopRelayOut:
			ss.mu.Lock()
			sc := ss.server
			ss.mu.Unlock()
			if sc == nil { // lost meanwhile; the goroutine tells the client
				p.evict(ss, "server lost", false)
				return
			}
			switch ss.relayServer(sc, true) {
			case relayAwaitServer:
				st := loopServer
				if ss.unendedGroup() {
					st = loopGroup // (the server owes nothing now: see awaitClient)
				}
				if !p.await(ss, st, 0) {
					p.evict(ss, "cannot wait", false)
				}
				return
			case relayAwaitClient:
				if !p.await(ss, loopRelayOut, 0) {
					p.evict(ss, "cannot wait", false)
				}
				return
			case relayHandoff:
				p.evict(ss, "the loan needs a pump", true)
				return
			}
			// The answers are relayed: the server went back to the pool
			// (its registration kept: see dropServer), or stays linked
			// inside the client's transaction.
			ss.setLoop(loopClient)
			if ss.loop&loopArmed != 0 && ss.rd.Buffered() == 0 && ss.wr.Len() == 0 {
				// The client's registration, armed with the request, still
				// stands: its next request (or its leaving) comes as that
				// event. A read now finds it only if it came during the
				// transaction (a client that answers fast, or a loop that
				// is slow); if it would have failed, the session waits
				// without one for its next loopSkipReads transactions.
				if ss.loopSkips > 0 {
					ss.loopSkips--
				} else if _, _, err := ss.rd.Peek(); err != protocol.ErrWouldBlock {
					continue // request takes it (or the error) from here
				} else {
					ss.loopSkips = loopSkipReads
				}
				if !p.awaitClient(ss) {
					p.evict(ss, "cannot wait", false)
				}
				return
			}
		case loopClientOut:
			if err := ss.wr.Flush(); err != nil {
				if err != protocol.ErrWouldBlock {
					p.leave(ss, err)
				} else if !p.await(ss, loopClientOut, 0) {
					p.evict(ss, "cannot wait", false)
				}
				return
			}
			ss.setLoop(loopClient)
		default:
			if !p.request(ss) {
				return
			}
		}
	}
}

// request reads and handles the client's next request, as serve and
// handle do on a goroutine. It reports whether turn goes on (the loop
// state says with what); false means the session waits, left the loop or
// ended.
//
// It reads the link state (server, dead, the expectation ring) without mu:
// while the loop serves a session it is the only writer of these (no pump
// runs; only the relay links, releases, or marks the session dead, and the
// loop relays), so its own reads need no lock. Its writes take mu, for the
// readers on other goroutines (cancel, the admin console). (A cancel's end
// writes releaseDeferred and pumpKick: the loop reads those under mu.)
func (p *parker) request(ss *session) bool {
	if ss.wr.Len() > 0 {
		ss.setLoop(loopClientOut)
		return true
	}
	dead, linked := ss.dead != nil, ss.server != nil
	if dead || ss.has(evWake|evKill|evPark|evDoomed) || ss.srv.isDraining() || !ss.srv.loopOK.Load() {
		p.evict(ss, "an event, or a reload the loop does not serve", false)
		return false
	}
	typ, size, err := ss.rd.Peek()
	var frame []byte
	if err == nil && size <= protocol.BufferSize {
		frame, err = ss.rd.FillFrame(size)
	}
next:
	switch {
	case err == protocol.ErrWouldBlock:
		if !p.awaitClient(ss) {
			p.evict(ss, "cannot wait", false)
		}
		return false
	case err != nil || frame == nil || !ss.loopServes(typ, frame):
		if err == nil && typ == protocol.MsgTerminate {
			p.leave(ss, errClientTerminated) // as handleFrame's caller would end it
			return false
		}
		if protocol.IsDisconnect(err) {
			p.leave(ss, err) // as the goroutine would, reading it again
			return false
		}
		// The goroutine reads it again (a read error, a frame too large
		// for the buffer) or handles it (session state, COPY, ...).
		p.evict(ss, "a request the goroutine serves", false)
		return false
	}
	ss.activeTick.Store(p.tick.Load()) // (a request: not before, see settleLooped and the sweeps)
	if ss.has(stYoung) {
		ss.flags.And(^stYoung)
	}
	if !linked && needsServer(typ) && !ss.has(stSkipToSync) { // (skipped: handleFrame)
		sc := ss.entry.pool.TryAcquireChecked(int64(p.turnNow) - int64(vouchedFor)) // (a check query would wait)
		if sc == nil {
			p.queue(ss)
			return false
		}
		if !sc.NoWait() {
			sc.Pool().Release(sc)
			ss.loopCredit = loopNever // (no raw socket calls)
			p.evict(ss, "a server connection that cannot read without waiting", false)
			return false
		}
		ss.attach(sc, false, false)
	}
	if linked && ss.replays != 0 && ss.awaitsReplay(typ) {
		// (paramsrefused.go: it waits for the replay's answer; the loop
		// waits for nothing, its goroutine does.)
		p.evict(ss, "a request behind a replay not answered yet", false)
		return false
	}
	if err := ss.handleFrame(typ, size, true); err != nil {
		if err == protocol.ErrWouldBlock {
			ss.setLoop(loopClientOut) // handled; its answer waits for room
			return true
		}
		p.leave(ss, err)
		return false
	}
	sc, owed := ss.server, ss.q.n // (the loop's own: see above)
	if sc == nil {
		return true // next request
	}
	switch {
	case sc.Wr.Len() > 0 && !ss.rd.HasFrame():
		// The server took only part of what was written to it (it reads
		// no more until the client reads its answers): a pump reads them
		// while the goroutine writes, as on a goroutine.
		p.evict(ss, "the server takes no more", true)
		return false
	case owed > loopMaxOwed && !ss.answersNow():
		// A long pipeline with no Sync yet: its answers pile up unread on
		// the server, which then stops reading; a server socket under TLS
		// would block the loop's writes. A pump reads them.
		p.evict(ss, "a long pipeline", true)
		return false
	case !ss.answersNow():
		// The next request (or a group whose Sync is to come). One
		// buffered whole behind this one (a pipeline: Parse, Bind,
		// Describe, Execute, Sync in one write) is taken at once: what
		// was looked at above for this one holds for it (the session's
		// events are looked at again), and a client owed answers of
		// pgferry's own first gets them as turn has it.
		if ss.wr.Len() == 0 && ss.dead == nil && !ss.has(evWake|evKill|evPark|evDoomed) {
			var ok bool
			if typ, size, ok = ss.rd.PeekBuffered(); ok {
				frame, err, linked = ss.rd.Lookahead()[:size], nil, true
				goto next
			}
		}
		return true
	}
	if sc.Rd.Buffered() > 0 || sc.TLS {
		// Answers read already, or perhaps held by TLS, which the socket's
		// readiness would not announce: relay what there is first.
		ss.setLoop(loopServer)
		return true
	}
	// Nothing can have come yet: wait without a read that would block.
	if ss.wr.Len() > 0 {
		ss.setLoop(loopRelayOut) // (relayServer flushes it once a read of the server would block)
		return true
	}
	if !p.await(ss, loopServer, 0) {
		p.evict(ss, "cannot wait", false)
	}
	return false
}

// awaitClient waits for the client's next request (loopClient), and for
// its linked server as well while that owes the answers of a group the
// client has not ended yet (loopGroup): PostgreSQL sends an error in
// such a group at once, which the client may be waiting for
// (unendedGroup). The loop owns the link state (see request).
func (p *parker) awaitClient(ss *session) bool {
	st := loopClient
	if ss.server != nil && ss.unendedGroup() {
		st = loopGroup
	}
	return p.await(ss, st, 0)
}

// vouchedFor is how long before the loop's turn began a transaction may
// have ended cleanly on a server connection for the loop to lend it
// without first looking at its socket (see pool.TryAcquireChecked): at a
// high rate, the connection the pool lends (the one returned last) came
// back microseconds ago, and the look is a system call per transaction
// that PgBouncer does not make. A server that exits in that moment fails
// the next client's transaction instead of being replaced unseen, as one
// that exits during a transaction does; one idle longer is looked at, as
// before. (The turn's clock is read once per epoll wait: a connection
// freed early in a long turn counts from the turn's start.)
const vouchedFor = time.Millisecond

// loopSkipReads is how many transactions a session of the loop waits for
// its client's next request without first reading, after a read found
// nothing (see turn): most clients take longer to send it than the loop
// takes to relay an answer, and the failed read is a system call.
const loopSkipReads = 8

// needsServer reports whether handleFrame may send the client frame to a
// server when none is linked: not a Sync or Flush (answered in place). A
// Close is given one even when it closes one of pgferry's named
// statements, which handleFrame answers in place without it: that choice
// reads max_prepared_statements, which a reload may change in between, and
// handleFrame must never wait for a server on the loop.
func needsServer(typ byte) bool {
	switch typ {
	case protocol.MsgQuery, protocol.MsgParse, protocol.MsgBind, protocol.MsgDescribe,
		protocol.MsgExecute, protocol.MsgClose:
		return true
	}
	return false
}

// loopServes reports whether the loop handles the client frame: one of the
// extended protocol's or a simple query, whose SQL (if any) changes no
// session state pgferry tracks, and an Execute of a portal bound to no
// statement that does. handle does the same in both places; what a
// statement that changes session state needs (pinning, LISTEN's wait for
// its listener connection: an acknowledgement, or a whole dial) is the
// goroutine's. The loop's sessions hold no such statement or portal
// (loopable), and the loop prepares none (it hands such a Parse back), so
// the Execute's look finds none; it is here so that an Execute the loop
// serves cannot wait whatever the session holds. (A Bind, Describe, Close
// or Sync that concerns one waits for nothing: a Bind of one only updates
// pgferry's maps, noteBind.) Nor does a Bind or
// Describe the loop serves wait for a drop's answer (stmtswait.go): one
// that would is the goroutine's.
func (ss *session) loopServes(typ byte, frame []byte) bool {
	switch typ {
	case protocol.MsgQuery:
		body := protocol.Body(frame)
		return len(body) == 0 || !classify.Needed(body[:len(body)-1])
	case protocol.MsgParse:
		_, rest, ok := protocol.CString(protocol.Body(frame))
		if !ok {
			return false
		}
		sql, _, ok := protocol.CString(rest)
		t := ss.stmts
		return ok && !classify.Needed(sql) && (t == nil || len(t.drops) == 0 || !ss.behindDrop(typ, frame))
	case protocol.MsgExecute:
		if r := ss.rare; r != nil && r.statePortals != nil {
			// interceptExecute would apply the portal's statement.
			portal, _, ok := protocol.CString(protocol.Body(frame))
			return ok && r.statePortals[string(portal)] == nil
		}
		return true
	case protocol.MsgBind, protocol.MsgDescribe:
		// (One that waits for a drop's answer waits on a goroutine:
		// stmtswait.go, as does such a Parse. Only a client that closed or parsed a named
		// statement has a drop in the loop: closeSent, parseSent.)
		t := ss.stmts
		return t == nil || len(t.drops) == 0 || !ss.behindDrop(typ, frame)
	case protocol.MsgClose, protocol.MsgSync, protocol.MsgFlush:
		return true
	}
	return false
}
