package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/classify"
)

var errServerGone = errors.New("server connection lost")

// errStreamCut is errServerGone when the server was lost in the middle of
// a message streamed to the client (a frame larger than the buffer): the
// client has part of it, and nothing more can be written to it (clientCut).
var errStreamCut = fmt.Errorf("%w in the middle of a message to the client", errServerGone)

// errClientGone ends a session whose client disconnected while queued.
var errClientGone = errors.New("client disconnected while waiting for a server connection")

// errKilledQueued ends a session killed while queued for a server.
var errKilledQueued = errors.New("killed while queued for a server")

// errCancelledQueued ends the wait for a server of a request a
// CancelRequest cancelled (evCancelQueued); link tells the client
// errQueuedCancelled, and the session goes on.
var errCancelledQueued = errors.New("cancelled while queued for a server")

// errQueuedCancelled is PostgreSQL's own error for a statement cancelled
// at its client's request (ProcessInterrupts, postgres.c): an ERROR.
var errQueuedCancelled = protocol.NewError(protocol.SQLStateQueryCanceled, "canceling statement due to user request")

// errSkipToSync tells handleFrame that link found the session skipping
// its client's messages up to a Sync (stSkipToSync): no server is linked
// for them.
var errSkipToSync = errors.New("skipping to the client's Sync")

// handle processes one client frame.
func (ss *session) handle(typ byte, size int) error { return ss.handleFrame(typ, size, false) }

// handleFrame is handle; stateless says the caller found that the frame's
// SQL, if any, changes no session state (classify.Needed is false: the
// relay loop serves only such frames), so it is not looked at again.
func (ss *session) handleFrame(typ byte, size int, stateless bool) error {
	switch typ {
	case protocol.MsgTerminate:
		return errClientTerminated
	case protocol.MsgCopyData, protocol.MsgCopyDone, protocol.MsgCopyFail, protocol.MsgFlush:
		return ss.forwardPlain(typ)
	case protocol.MsgSync:
		ss.mu.Lock()
		linked := ss.server != nil
		ss.mu.Unlock()
		if !linked {
			// Nothing outstanding: answer locally rather than borrow a
			// server for an empty round trip.
			if err := ss.rd.Discard(); err != nil {
				return err
			}
			return ss.answerSync()
		}
	case protocol.MsgQuery, protocol.MsgParse, protocol.MsgBind, protocol.MsgDescribe,
		protocol.MsgExecute, protocol.MsgClose, protocol.MsgFunctionCall:
	default:
		// Do not read on: the length of an unknown message cannot be
		// trusted (PostgreSQL's SocketBackend stops here too).
		return protocol.Fatal(protocol.SQLStateProtocolViolation, "invalid frontend message type "+strconv.Quote(string(typ)))
	}
	frame, err := ss.rd.NextPeeked(size) // serve peeked it
	if ss.wokenMidFrame(err) {
		for ss.wokenMidFrame(err) {
			if err := ss.onMidFrameWake(); err != nil {
				return err
			}
			frame, err = ss.rd.NextPeeked(size) // the Reader resumes the frame
		}
		ss.frameDone()
	}
	if err != nil {
		return err
	}
	if ss.has(stSkipToSync) {
		// Skipped: the group's error went out with the loss (lostServer).
		// A Sync ends it (its server lost since the look above).
		if typ == protocol.MsgSync {
			return ss.answerSync()
		}
		return nil
	}
	switch typ {
	case protocol.MsgQuery:
		ss.forgetUnnamed() // PostgreSQL ends it at a simple query
		if ss.readOnlyAlias {
			if e := ss.aliasWriteRefusal(frame); e != nil {
				_, err := ss.refuse(e) // none of it runs
				return err
			}
		}
		if stateless {
			break
		}
		if done, err := ss.interceptQuery(frame); done || err != nil {
			return err
		}
	case protocol.MsgParse:
		if ss.readOnlyAlias {
			frame = ss.refuseAliasParse(frame)
		}
		if stateless {
			ss.noteStatelessParse(frame)
			break
		}
		frame = ss.interceptParse(frame)
	case protocol.MsgBind:
		ss.noteBind(frame)
	case protocol.MsgExecute:
		if err := ss.interceptExecute(frame); err != nil {
			return err
		}
	case protocol.MsgClose:
		// (What a statement or portal does to session state is kept
		// past its Close: the server may skip the Close, and then it
		// still exists. An Execute of one gone fails on the server,
		// undoing what its class recorded.)
		if ss.closeLocally(frame) {
			return nil
		}
	case protocol.MsgFunctionCall:
		// A function called by its OID: an advisory lock or set_config
		// this way outlives the transaction as in SQL.
		if body := protocol.Body(frame); ss.readOnlyAlias && len(body) >= 4 {
			if what := classify.FunctionCallLiftsReadOnly(binary.BigEndian.Uint32(body)); what != "" {
				_, err := ss.refuse(aliasWriteError(ss.database, what))
				return err
			}
		}
		if body := protocol.Body(frame); ss.txnMode && len(body) >= 4 {
			if pin := classify.FunctionCallPin(binary.BigEndian.Uint32(body)); pin != "" {
				if done, err := ss.pinFor(pin); done || err != nil {
					return err
				}
			}
		}
	}
	readOnly := false
	if ss.entry.monitor != nil && !ss.isLinked() {
		readOnly = ss.wantsReplica(typ, frame)
	}
	var sc *pool.ServerConn // nil: whichever is linked (inside a transaction: one send, one lock)
	for {
		sent, err := ss.send(sc, typ, frame)
		if err == errAwaitDrop {
			ss.awaitDrop(sent) // (stmtswait.go: then it looks again)
			sc = nil
			continue
		}
		if err == errAwaitReplay {
			ss.awaitReplay(sent) // (paramsrefused.go: then it looks again)
			sc = nil
			continue
		}
		if sent != nil {
			if err == nil {
				ss.relayInline(sent)
			}
			return err
		}
		if sc, err = ss.link(readOnly); err != nil {
			if err == errSkipToSync {
				// The server was lost since the look above (a pump saw
				// it): the frame is skipped as those after it will be,
				// and what it noted undone, as for a refused one; a Sync
				// ends the skipping.
				if typ == protocol.MsgSync {
					return ss.answerSync()
				}
				ss.mu.Lock()
				ss.dropUnsent()
				ss.mu.Unlock()
				ss.dropNotSent()
				ss.execTag = tagNone
				return nil
			}
			var pe *protocol.Error
			if errors.As(err, &pe) && !pe.IsFatal() {
				// A refusal (replica_fallback = "error"): an ERROR, and
				// the session goes on.
				if typ == protocol.MsgQuery || typ == protocol.MsgFunctionCall {
					_, err = ss.refuse(pe)
				} else {
					err = ss.refuseToSync(pe)
				}
			}
			return err
		}
	}
}

// answerSync answers a client's Sync, read already, with no server linked:
// nothing is outstanding, or the Sync ends a group cut by the loss of its
// server, whose skipping it ends (stSkipToSync). The answer goes after
// whatever a pump still writes (the loss's errors).
func (ss *session) answerSync() error {
	if ss.has(stSkipToSync) {
		ss.flags.And(^stSkipToSync)
	}
	ss.joinPump()
	ss.wr.SetBuffer(protocol.AppendReadyForQuery(ss.wr.Buffer(), protocol.TxIdle))
	return ss.flushClientIfIdle()
}

// refuseToSync answers an extended-protocol request refused with e (an
// ERROR) before any server was linked for it, as PostgreSQL answers an
// error there (postgres.c, ignore_till_sync): the ErrorResponse at once,
// the client's messages after it skipped up to its Sync, which gets
// ReadyForQuery, and the session goes on; a Terminate among them ends it.
// It reads the client as serve does, until that Sync. Only a session on
// its goroutine gets here: the relay loop serves no pool that routes to
// replicas, whose refusals these are, and hands a session whose queued
// request a CancelRequest cancelled to its goroutine.
func (ss *session) refuseToSync(e *protocol.Error) error {
	ss.mu.Lock()
	ss.dropUnsent() // (as refuse: nothing of the request ran)
	ss.mu.Unlock()
	ss.dropNotSent()
	ss.execTag = tagNone
	ss.joinPump()
	ss.wr.SetBuffer(e.AppendFrame(ss.wr.Buffer()))
	if err := ss.wr.Flush(); err != nil { // (a client may wait for it before its Sync)
		return err
	}
	for {
		if err := ss.setReadDeadline(); err != nil {
			return err
		}
		typ, size, err := ss.rd.Peek()
		if err != nil {
			if isTimeout(err) && !ss.has(evKill) {
				if err := ss.onWake(); err != nil {
					return err
				}
				continue
			}
			return err
		}
		switch typ {
		case protocol.MsgTerminate:
			return errClientTerminated
		case protocol.MsgParse, protocol.MsgBind, protocol.MsgDescribe, protocol.MsgExecute, protocol.MsgClose,
			protocol.MsgFlush, protocol.MsgSync, protocol.MsgQuery, protocol.MsgFunctionCall,
			protocol.MsgCopyData, protocol.MsgCopyDone, protocol.MsgCopyFail:
		default:
			return protocol.Fatal(protocol.SQLStateProtocolViolation, "invalid frontend message type "+strconv.Quote(string(typ)))
		}
		_, err = ss.rd.NextPeeked(size)
		if ss.wokenMidFrame(err) {
			for ss.wokenMidFrame(err) {
				if err := ss.onMidFrameWake(); err != nil {
					return err
				}
				_, err = ss.rd.NextPeeked(size) // the Reader resumes the frame
			}
			ss.frameDone()
		}
		if err != nil {
			return err
		}
		if typ == protocol.MsgSync {
			ss.wr.SetBuffer(protocol.AppendReadyForQuery(ss.wr.Buffer(), protocol.TxIdle))
			return ss.flushClientIfIdle()
		}
	}
}

// send appends frame, a client request of type typ, to the buffer of the
// server linked for it (process) and flushes it unless more requests
// follow at once (flushServerIfIdle): to want, or to whichever server is
// linked when want is nil; a Bind, Describe or Parse that must wait for a
// drop's answer first is not sent, and it reports errAwaitDrop with the
// linked server (stmtswait.go). It returns the server it went to; nil
// when none is linked, or want no longer is (a pump gave it back meanwhile): the
// caller links one (link) and sends again. process runs under mu and wmu,
// the flush under wmu alone (off the relay loop: in the loop nothing else
// writes, and wmu is not taken). ownerHeld says which it holds, for the
// owner's recover to let go of if process panics (releaseHeld).
func (ss *session) send(want *pool.ServerConn, typ byte, frame []byte) (sc *pool.ServerConn, err error) {
	ss.mu.Lock()
	ss.ownerHeld = heldMu
	if sc = ss.server; sc == nil || (want != nil && !ss.stillLinked(want)) {
		ss.ownerHeld = 0
		ss.mu.Unlock()
		return nil, nil
	}
	if (typ == protocol.MsgBind || typ == protocol.MsgDescribe || typ == protocol.MsgParse) && ss.stmts != nil && len(ss.stmts.drops) > 0 &&
		ss.loop == 0 && ss.bindsBehindDrop(typ, frame) {
		ss.ownerHeld = 0
		ss.mu.Unlock()
		return sc, errAwaitDrop // (stmtswait.go)
	}
	if ss.replays != 0 && ss.awaitsReplay(typ) {
		ss.ownerHeld = 0
		ss.mu.Unlock()
		return sc, errAwaitReplay // (paramsrefused.go)
	}
	if ss.loop == 0 {
		ss.wmu.Lock() // (in the relay loop nothing else writes: no pump)
		ss.ownerHeld = heldMu | heldWmu
	}
	ss.faultAt("process")
	ss.process(sc, typ, frame)
	if typ != protocol.MsgSync && typ != protocol.MsgQuery && typ != protocol.MsgFunctionCall {
		ss.processRun(sc)
	}
	owed := ss.flags.Load()&stGranted != 0 && (ss.q.owesNow() || ss.q.executes()) && ss.grantedSent()
	ss.ownerHeld &^= heldMu
	ss.mu.Unlock()
	err = ss.flushServerIfIdle(sc)
	if owed {
		sc.Wr.Flush() // (the request first: a failure is the pump's to see)
		ss.sendOwedCancel(sc)
	}
	if ss.ownerHeld != 0 {
		ss.ownerHeld = 0
		ss.wmu.Unlock()
	}
	return sc, err
}

// loopMaxOwed bounds the answers (ParseComplete, BindComplete, ...,
// ReadyForQuery: one per message that asks for one) a session in the
// loop may owe while its client's frames ask for none yet (see request).
const loopMaxOwed = 64

// processRun processes, behind the frame send has just processed, the
// rest of its extended-protocol group buffered whole behind it: the
// client's Binds, Describes and Executes, up to and with a Sync, as long as
// handleFrame would do nothing for them but send them (a session with no
// tracked state, rare, no replay answer awaited, no drop pending, nothing
// skipped). A pipeline's group then costs one send, one hold of mu and one
// flush; handleFrame takes the next frame of another kind. It stops at
// loopMaxOwed answers owed, as the relay loop hands a longer pipeline to
// a pump. mu (and, off the relay loop, wmu) is held.
func (ss *session) processRun(sc *pool.ServerConn) {
	for ss.q.n < loopMaxOwed && ss.rare == nil && ss.replays == 0 && !ss.has(stSkipToSync) &&
		(ss.stmts == nil || len(ss.stmts.drops) == 0) {
		typ, size, ok := ss.rd.PeekBuffered()
		if !ok {
			return
		}
		switch typ {
		case protocol.MsgBind, protocol.MsgDescribe, protocol.MsgExecute, protocol.MsgSync:
		default:
			return
		}
		frame, err := ss.rd.NextPeeked(size) // (buffered whole: no read)
		if err != nil {
			return
		}
		ss.faultAt("process") // (as send has it before each frame)
		ss.process(sc, typ, frame)
		if typ == protocol.MsgSync {
			return
		}
	}
}

// heldLocks says which of the session's locks its owner (ownerHeld) or
// its pump (pumpHeld) holds in send, attach or relayServer: set after each
// Lock, cleared before each Unlock. A panic there leaves them locked, and
// the recover of whoever panicked lets go of them (releaseHeld) before it
// takes mu to end the session: otherwise it would wait for itself, and the
// relay loop with it. The flags cost a store per lock, where a deferred
// unlock costs a call per function on the relay's path.
type heldLocks uint8

const (
	heldMu heldLocks = 1 << iota
	heldWmu
)

// releaseHeld lets go of the locks *held says are still held, from the
// recover of the goroutine *held belongs to (a panic unwound past its
// Unlock): ownerHeld from the session's goroutine or the relay loop while
// it owns the session, pumpHeld from the pump. No one else writes *held,
// so the read needs no lock.
func (ss *session) releaseHeld(held *heldLocks) {
	h := *held
	*held = 0
	if h&heldWmu != 0 {
		ss.wmu.Unlock()
	}
	if h&heldMu != 0 {
		ss.mu.Unlock()
	}
}

var errClientTerminated = errors.New("client terminated")

// forwardPlain relays a frame that expects no response of its own (CopyData,
// CopyDone, CopyFail, Flush) when a server is linked, and drops it when none
// is: PostgreSQL ignores copy messages outside COPY, and a Flush with
// nothing outstanding on a server has nothing of the server's to flush,
// only what pgferry answered itself.
func (ss *session) forwardPlain(typ byte) error {
	sc, err := ss.forwardLinked(typ)
	if sc != nil && err == nil {
		ss.relayInline(sc)
	}
	if sc == nil && err == nil && typ == protocol.MsgFlush {
		// What pgferry answered itself before it (a Sync with nothing
		// outstanding, a refusal) waits in the client's buffer while more
		// frames were buffered behind it: the Flush asks for it now.
		ss.joinPump()
		return ss.flushClientIfIdle()
	}
	return err
}

// forwardLinked is forwardPlain's write: it returns the server it
// forwarded the frame to, nil if it dropped it. The write runs under wmu,
// let go even if it panics: a pump (releaseServer) and the session's end
// wait for it (waitForWriter).
func (ss *session) forwardLinked(typ byte) (*pool.ServerConn, error) {
	ss.mu.Lock()
	sc := ss.server
	if sc == nil || (ss.q.n == 0 && typ != protocol.MsgFlush && ss.status == protocol.TxIdle) {
		ss.mu.Unlock()
		return nil, ss.rd.Discard()
	}
	if typ == protocol.MsgCopyDone || typ == protocol.MsgCopyFail {
		ss.q.copyEnded() // (a Sync after it is the server's to answer)
	}
	if typ != protocol.MsgCopyData {
		ss.q.ask() // (a Flush, or the end of a COPY: see ring.asked)
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ss.mu.Unlock()
	err := ss.rd.Forward(sc.Wr)
	if ss.wokenMidFrame(err) {
		for ss.wokenMidFrame(err) {
			if err = ss.onMidFrameWake(); err == nil {
				err = ss.rd.Forward(sc.Wr) // the Reader resumes the frame
			}
		}
		ss.frameDone()
	}
	if err == nil {
		err = ss.flushServerIfIdle(sc)
	}
	return sc, err
}

func (ss *session) flushServerIfIdle(sc *pool.ServerConn) error {
	if ss.rd.HasFrame() && sc.Wr.Len() < 32<<10 {
		return nil
	}
	if err := sc.Wr.Flush(); err != nil {
		// The pump sees the broken server and reports it.
		return nil
	}
	return nil
}

func (ss *session) flushClientIfIdle() error {
	if ss.rd.HasFrame() && ss.wr.Len() < 32<<10 {
		return nil
	}
	return ss.wr.Flush()
}

// pumpRunningLocked reports whether a pump runs for the session: one was
// started and has not exited. A pump that relayed the end of a loan leaves
// pumpDone set, closed, until the session's next request joins it; an idle
// session must not wait for that request to park. mu is held.
func (ss *session) pumpRunningLocked() bool {
	if ss.pumpDone == nil {
		return false
	}
	select {
	case <-ss.pumpDone:
		return false
	default:
		return true
	}
}

// noPumpLocked is !pumpRunningLocked for the session's owner, which also
// forgets a pump that exited, as joinPump would. mu is held.
func (ss *session) noPumpLocked() bool {
	if ss.pumpRunningLocked() {
		return false
	}
	ss.pumpDone = nil
	return true
}

// joinPump waits for the previous pump to exit so that only one goroutine
// writes to the client at a time (noPumpLocked also forgets one that
// exited, for an idle session).
func (ss *session) joinPump() {
	ss.mu.Lock()
	done := ss.pumpDone
	ss.pumpDone = nil
	ss.mu.Unlock()
	if done != nil {
		<-done
	}
}

// process appends the frame (rewritten where statements are renamed) to
// the server's buffer and records the responses it expects. mu and wmu are
// held.
func (ss *session) process(sc *pool.ServerConn, typ byte, frame []byte) {
	if ss.q.n == 0 && ss.queryStart.IsZero() {
		ss.queryStart = ss.srv.parker.clock(ss) // the server was idle: a query starts
	}
	if ss.replays != 0 && !ss.q.open && typ != protocol.MsgSync {
		ss.guardReplay(sc) // (paramsrefused.go: the server has not answered the replay yet)
	}
	switch typ {
	case protocol.MsgQuery, protocol.MsgFunctionCall:
		open := ss.q.open
		ss.q.open = false
		ss.q.push(expect{kind: kQuery, tag: ss.execTag}) // (tag: a LISTEN, listenLinked)
		ss.execTag = tagNone
		if ss.rare != nil {
			ss.stampTentative() // (statesettle.go: the query's SETs, LISTENs and UNLISTENs are this request's)
		}
		sc.Wr.Append(frame)
		ss.dropSent(sc)
		if ss.replays != 0 && !open {
			ss.syncBehind(sc) // (paramsrefused.go; not inside a group: see there)
		}
		ss.q.ask() // (the Query's answer, and that of the Sync behind it)
		ss.armQueryTimeout()
	case protocol.MsgSync:
		sc.Wr.Append(frame)
		if ss.q.copyIn {
			ss.q.ignored = true
			break // (the server's COPY ignores it: ring.copyIn)
		}
		ss.q.open = false
		ss.q.push(expect{kind: kSync})
		ss.q.ask()
		ss.unnamedUnknown()
		ss.armQueryTimeout()
	case protocol.MsgParse:
		ss.q.open = true
		ss.processParse(sc, frame)
	case protocol.MsgBind:
		ss.q.open = true
		ss.processBind(sc, frame)
	case protocol.MsgDescribe:
		ss.q.open = true
		ss.processDescribe(sc, frame)
	case protocol.MsgExecute:
		ss.q.open = true
		tag := ss.execTag
		ss.execTag = tagNone
		if tag == tagDealloc && !ss.deallocPrepare(sc) {
			tag = tagNone // (the server answers it: stmtsdealloc.go)
		}
		ss.q.push(expect{kind: kExecute, tag: tag})
		if ss.rare != nil {
			ss.stampTentative()
		}
		sc.Wr.Append(frame)
		ss.dropSent(sc)
	case protocol.MsgClose:
		if body := protocol.Body(frame); len(body) == 2 && body[0] == 'S' && body[1] == 0 {
			ss.closedUnnamed()
		}
		ss.q.open = true
		ss.q.push(expect{kind: kClose})
		sc.Wr.Append(frame)
	}
}
