package router

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

// Kinds of requests whose responses the pump expects, in order.
const (
	kQuery        uint8 = iota // Query or FunctionCall: done at ReadyForQuery
	kSync                      // done at ReadyForQuery
	kParse                     // ParseComplete
	kBind                      // BindComplete
	kDescribe                  // RowDescription or NoData
	kExecute                   // CommandComplete, EmptyQueryResponse or PortalSuspended
	kClose                     // CloseComplete
	kParseSwallow              // injected Parse: its ParseComplete is dropped
	kCloseSwallow              // injected Close: its CloseComplete is dropped
	kQuerySwallow              // injected Query (SET ...): everything dropped
)

type expect struct {
	kind uint8
	tag  uint8  // kExecute: an answer replacing EmptyQueryResponse (execTag)
	key  uint64 // statement ID (prepared.Statement.ID) for kParse/kParseSwallow
}

// ring is a FIFO of expectations that grows as needed and then reuses its
// storage, so steady-state relaying does not allocate.
type ring struct {
	buf  []expect
	head int
	n    int
}

func (r *ring) push(e expect) {
	if r.n == len(r.buf) {
		nb := make([]expect, max(16, 2*len(r.buf)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
}

func (r *ring) peek() (expect, bool) {
	if r.n == 0 {
		return expect{}, false
	}
	return r.buf[r.head], true
}

func (r *ring) pop() {
	if r.n == 0 {
		return
	}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
}

func (r *ring) clear() { r.head, r.n = 0, 0 }

// clientStmt is a named prepared statement of one client: the registered
// statement it stands for (held until the client closes or replaces it,
// or leaves).
type clientStmt struct {
	*prepared.Statement
}

// serve relays the client's messages until it leaves or fails.
func (ss *session) serve() error {
	if ss.rd == nil {
		ss.rd = protocol.NewReader(ss.conn)
		ss.rd.MaxMessage = ss.srv.cfg.Load().MaxPacketSize
		ss.wr = protocol.NewWriter(ss.conn)
	}
	if ss.rd.Small == nil {
		ss.rd.Small = make([]byte, smallBufSize)
	}
	if err := ss.takePending(ss.rd); err != nil {
		return err
	}
	for {
		if ss.resumed {
			// Back from parking: the read deadline armed before (an idle
			// timeout) still stands.
			ss.resumed = false
		} else if err := ss.setReadDeadline(); err != nil {
			return err
		}
		ss.activeTick.Store(ss.srv.parker.tick.Load())
		if ss.parkReq.Load() && ss.tryPark() {
			return errParked
		}
		typ, size, err := ss.rd.Peek()
		if err != nil {
			if isTimeout(err) && !ss.killed.Load() {
				if err := ss.onWake(); err != nil {
					return err
				}
				continue
			}
			var tl *protocol.TooLargeError
			if errors.As(err, &tl) {
				return protocol.Fatal(protocol.SQLStateProtocolViolation,
					"message of "+strconv.Itoa(size)+" bytes exceeds max_packet_size ("+strconv.Itoa(tl.Limit)+")")
			}
			if errors.Is(err, protocol.ErrBadLength) {
				return protocol.Fatal(protocol.SQLStateProtocolViolation, "invalid message length")
			}
			return err
		}
		if err := ss.handle(typ, size); err != nil {
			return err
		}
	}
}

// smallBufSize is the size of a session's resident read buffer
// (protocol.Reader.Small). A parked session drops it: a sync.Pool would keep
// a wave of parked sessions' buffers alive through the next garbage
// collection, and a resumed session allocating 512 bytes costs little.
const smallBufSize = 512

// tryPark hands an idle session to the parker when a sweep asked for it
// and the session really is idle: nothing buffered from the client, no
// server, no pump, nothing to deliver, no wake pending. It reports whether
// the parker took it; the session's goroutine must then end at once.
func (ss *session) tryPark() bool {
	ss.parkReq.Store(false)
	if ss.fd < 0 || ss.rd.Buffered() != 0 || ss.wakeReq.Load() || ss.killed.Load() || ss.srv.isDraining() {
		return false
	}
	ss.mu.Lock()
	idle := ss.server == nil && ss.pumpDone == nil && len(ss.mailbox) == 0 && ss.dead == nil
	ss.mu.Unlock()
	if !idle || (!ss.noDeadline && ss.idleDeadline.IsZero()) {
		return false // a deadline other than client_idle_timeout is armed
	}
	if ss.tls && ss.tlsHoldsInput() {
		return false
	}
	ss.q = ring{} // owes nothing; a parked session keeps no expectation buffer
	ss.waitTimer = nil
	// A parked session keeps no Reader or Writer either: serve makes new
	// ones when it resumes. They are let go before park, after which another
	// goroutine may resume the session at once.
	rd, wr := ss.rd, ss.wr
	ss.rd, ss.wr = nil, nil
	wr.Release()
	small := rd.DetachSmall() // dropped once parked
	if !ss.srv.parker.park(ss) {
		rd.Small = small
		ss.rd, ss.wr = rd, wr
		return false
	}
	return true
}

// tlsHoldsInput reports whether the TLS layer holds client bytes that the
// Reader has not taken (a record larger than the Reader's last read, or a
// complete one read along with the previous), moving them into the Reader:
// readiness of the socket, which is all a parked session waits for, would
// not announce them. It reads once with a past deadline, which returns
// what TLS holds or times out without touching its state (a timeout is not
// sticky in crypto/tls, and a partial record stays buffered); any other
// error is sticky and the next read reports it. The read deadline is put
// back, or left past if a wake or kill came meanwhile.
func (ss *session) tlsHoldsInput() bool {
	ss.raw.SetReadDeadline(time.Unix(1, 0))
	var b [512]byte
	n, err := ss.conn.Read(b[:])
	ss.raw.SetReadDeadline(ss.idleDeadline)
	if ss.wakeReq.Load() || ss.killed.Load() {
		ss.raw.SetReadDeadline(time.Unix(1, 0))
		return true
	}
	if n > 0 {
		if perr := ss.rd.Prefill(b[:n]); perr != nil {
			ss.markDead(perr)
		}
		return true
	}
	return !isTimeout(err)
}

// setReadDeadline arms the idle timeouts for the next client read.
func (ss *session) setReadDeadline() error {
	if ss.wakeReq.Load() {
		return nil // a wake is pending; let the read fail at once
	}
	cfg := ss.srv.cfg.Load()
	ss.mu.Lock()
	linked, status := ss.server != nil, ss.status
	ss.mu.Unlock()
	var d time.Duration
	switch {
	case !linked && ss.srv.isDraining():
		// Shutting down: a client idle between transactions is let go
		// after a short grace, so one that just connected or just finished
		// a transaction still gets to send its next query.
		d = drainIdleGrace
	case !linked || status == protocol.TxIdle:
		d = cfg.ClientIdleTimeout.Std()
	default:
		d = cfg.IdleTransactionTimeout.Std()
	}
	if d > 0 {
		ss.idleDeadline = time.Now().Add(d)
		ss.noDeadline = false
		return ss.raw.SetReadDeadline(ss.idleDeadline)
	}
	ss.idleDeadline = time.Time{}
	if ss.noDeadline {
		// Still cleared: only a wake or a kill (which must stay armed) or a
		// pump's idle_transaction_timeout (cleared by onWake when it fires)
		// set one since.
		return nil
	}
	ss.noDeadline = true
	return ss.raw.SetReadDeadline(time.Time{})
}

// drainIdleGrace is how long a draining pgferry waits for an idle client's
// next query before closing its session.
const drainIdleGrace = time.Second

// onWake handles an interrupted client read: a wake (shutdown, a lost
// server, notifications) or an idle timeout.
func (ss *session) onWake() error {
	// Clear the deadline before consuming the request: a wake that lands in
	// between sets the deadline again and is seen on the next read.
	ss.raw.SetReadDeadline(time.Time{})
	ss.noDeadline = true
	woken := ss.wakeReq.Swap(false)
	ss.mu.Lock()
	dead, linked, status, busy := ss.dead, ss.server != nil, ss.status, ss.q.n > 0
	ss.mu.Unlock()
	if dead != nil {
		return errServerGone
	}
	ss.mu.Lock()
	doomed := ss.doomed
	ss.mu.Unlock()
	if doomed != nil {
		return doomed
	}
	if err := ss.deliverNotifications(); err != nil {
		return err
	}
	if woken || busy || ss.idleDeadline.IsZero() || time.Now().Before(ss.idleDeadline) {
		// A wake whose flag was consumed before its deadline landed, or a
		// running query: not an idle timeout. The loop re-arms the right
		// deadline.
		return nil
	}
	return ss.idleTimeout(linked, status)
}

// idleTimeout is what ends a session whose idle read deadline passed.
func (ss *session) idleTimeout(linked bool, status byte) error {
	switch {
	case !linked && ss.srv.isDraining():
		return protocol.Fatal(protocol.SQLStateAdminShutdown, "pgferry is shutting down")
	case linked && status != protocol.TxIdle:
		return protocol.Fatal(protocol.SQLStateIdleInTransactionTimeout, "idle_transaction_timeout")
	}
	return protocol.Fatal(protocol.SQLStateProtocolViolation, "client_idle_timeout")
}

// onMidFrameWake handles a read deadline that interrupted a client frame
// still arriving (see wokenMidFrame). Only what must end the session acts
// now: a transaction_timeout, or the idle deadline armed before the frame
// began, which is put back for the rest of the frame. A wake's own work
// (notifications, parking, shutdown) waits for the frame's end: the wake
// flag stays set and frameDone turns it back into a past deadline. Unlike
// onWake it never joins a pump, so it is safe with wmu held.
func (ss *session) onMidFrameWake() error {
	ss.raw.SetReadDeadline(time.Time{})
	ss.mu.Lock()
	doomed, linked, status := ss.doomed, ss.server != nil, ss.status
	ss.mu.Unlock()
	if doomed != nil {
		return doomed
	}
	if !ss.idleDeadline.IsZero() {
		if !time.Now().Before(ss.idleDeadline) {
			return ss.idleTimeout(linked, status)
		}
		ss.raw.SetReadDeadline(ss.idleDeadline)
	}
	ss.noDeadline = ss.idleDeadline.IsZero()
	return nil
}

// frameDone ends a frame read across wakes: a wake still pending gets its
// past deadline back, so the next read at a frame boundary sees it.
func (ss *session) frameDone() {
	if ss.wakeReq.Load() {
		ss.raw.SetReadDeadline(time.Unix(1, 0))
		ss.noDeadline = false
	}
}

var errServerGone = errors.New("server connection lost")

// errClientGone ends a session whose client disconnected while queued.
var errClientGone = errors.New("client disconnected while waiting for a server connection")

// handle processes one client frame.
func (ss *session) handle(typ byte, size int) error {
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
			ss.joinPump()
			ss.wr.SetBuffer(protocol.AppendReadyForQuery(ss.wr.Buffer(), protocol.TxIdle))
			return ss.flushClientIfIdle()
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
	switch typ {
	case protocol.MsgQuery:
		if done, err := ss.interceptQuery(frame); done || err != nil {
			return err
		}
	case protocol.MsgParse:
		frame = ss.interceptParse(frame)
	case protocol.MsgBind:
		ss.noteBind(frame)
	case protocol.MsgExecute:
		if err := ss.interceptExecute(frame); err != nil {
			return err
		}
	case protocol.MsgClose:
		ss.noteClose(frame)
		if ss.closeLocally(frame) {
			return nil
		}
	}
	readOnly := false
	if ss.entry.monitor != nil && !ss.isLinked() {
		readOnly = ss.wantsReplica(typ, frame)
	}
	sc, err := ss.link(readOnly)
	if err != nil {
		var pe *protocol.Error
		if typ == protocol.MsgQuery && errors.As(err, &pe) && !pe.IsFatal() {
			_, err = ss.refuse(pe)
		}
		return err
	}
	ss.process(sc, typ, frame)
	ss.mu.Unlock()
	err = ss.flushServerIfIdle(sc)
	ss.wmu.Unlock()
	if err == nil {
		ss.relayInline(sc, typ)
	}
	return err
}

var errClientTerminated = errors.New("client terminated")

// replicaUnreachable reports whether a replica pool failed to lend a
// connection because the replica could not be reached or logged in to,
// rather than because the client waited too long, left or pgferry is
// closing the pool.
func replicaUnreachable(err error) bool {
	return !errors.Is(err, pool.ErrWaitTimeout) && !errors.Is(err, errClientGone) && !errors.Is(err, pool.ErrPoolClosed)
}

// wokenMidFrame reports whether a client read failed on its deadline (a
// wake: a parking request, notifications, shutdown; or an idle timeout)
// while a frame was still arriving. The frame is not lost: after
// onMidFrameWake the read is retried and the Reader resumes it. A kill is
// not retried.
func (ss *session) wokenMidFrame(err error) bool {
	return err != nil && isTimeout(err) && !isWriteError(err) && !ss.killed.Load()
}

// isWriteError reports whether err is a protocol.WriteError. It is apart
// from wokenMidFrame because the target errors.As needs escapes to the
// heap: inline, it cost an allocation on every call, errors or not.
func isWriteError(err error) bool {
	var we *protocol.WriteError
	return errors.As(err, &we)
}

// forwardPlain relays a frame that expects no response of its own (CopyData,
// CopyDone, CopyFail, Flush) when a server is linked, and drops it when none
// is: PostgreSQL ignores copy messages outside COPY, and a Flush with
// nothing outstanding has nothing to flush.
func (ss *session) forwardPlain(typ byte) error {
	ss.mu.Lock()
	sc := ss.server
	if sc == nil || (ss.q.n == 0 && typ != protocol.MsgFlush && ss.status == protocol.TxIdle) {
		ss.mu.Unlock()
		return ss.rd.Discard()
	}
	ss.wmu.Lock()
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
	ss.wmu.Unlock()
	if err == nil {
		ss.relayInline(sc, typ)
	}
	return err
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

// link returns the linked server, borrowing one if needed, with mu and wmu
// held. On error neither is held.
func (ss *session) isLinked() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.server != nil
}

// link returns the linked server, borrowing one if needed (from a replica
// when readOnly and one is in rotation), with mu and wmu held. On error
// neither is held.
func (ss *session) link(readOnly bool) (*pool.ServerConn, error) {
	ss.mu.Lock()
	if ss.server != nil {
		ss.wmu.Lock()
		return ss.server, nil
	}
	if ss.dead != nil {
		ss.mu.Unlock()
		return nil, errServerGone
	}
	ss.mu.Unlock()
	ss.joinPump()
	p, onReplica, err := ss.pickPool(readOnly)
	if err != nil {
		return nil, err
	}
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
			if err == errClientGone {
				return nil, err
			}
			return nil, ss.acquireError(err)
		}
	}
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	now := time.Now()
	ss.mu.Lock()
	ss.server = sc
	ss.onReplica, ss.txReadOnly = onReplica, readOnly
	ss.linkedAt = now
	ss.status = protocol.TxIdle
	ss.serverStuck = false
	ss.q.clear()
	ss.wmu.Lock()
	ss.syncParams(sc)
	// In transaction mode the session goroutine relays the responses itself
	// (relayInline); a session tied to its server gets a pump that watches
	// the server between requests too.
	ss.inline = ss.txnMode && !ss.pinned
	ss.armTransactionTimeout()
	if ss.inline {
		ss.pumpDone = nil
		ss.srv.budget.watch(sc)
	} else {
		done := make(chan struct{})
		ss.pumpDone = done
		ss.entry.stats.pumpedLoans.Add(1)
		ss.srv.pumps.run(pumpJob{ss: ss, sc: sc, done: done})
	}
	return sc, nil
}

// joinPump waits for the previous pump to exit so that only one goroutine
// writes to the client at a time.
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
	switch typ {
	case protocol.MsgQuery, protocol.MsgFunctionCall:
		ss.q.push(expect{kind: kQuery})
		sc.Wr.Append(frame)
		ss.armQueryTimeout()
	case protocol.MsgSync:
		ss.q.push(expect{kind: kSync})
		sc.Wr.Append(frame)
		ss.armQueryTimeout()
	case protocol.MsgParse:
		ss.processParse(sc, frame)
	case protocol.MsgBind:
		ss.processBind(sc, frame)
	case protocol.MsgDescribe:
		ss.processDescribe(sc, frame)
	case protocol.MsgExecute:
		ss.q.push(expect{kind: kExecute, tag: ss.execTag})
		ss.execTag = tagNone
		sc.Wr.Append(frame)
	case protocol.MsgClose:
		ss.q.push(expect{kind: kClose})
		sc.Wr.Append(frame)
	}
}

// processParse handles Parse. Unnamed statements pass through. A named one
// is recorded for the client and prepared on the server under pgferry's
// name; if the server already has it, a no-op Parse/Close pair stands in
// so the client still gets its ParseComplete in order.
func (ss *session) processParse(sc *pool.ServerConn, frame []byte) {
	body := protocol.Body(frame)
	name, rest, ok := protocol.CString(body)
	if !ok || len(name) == 0 || ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		ss.q.push(expect{kind: kParse})
		sc.Wr.Append(frame)
		return
	}
	ss.entry.stats.clientParses.Add(1)
	st := ss.stmts[string(name)]
	if st == nil || string(st.Body) != string(rest) {
		st = ss.holdStmt(string(name), rest)
	}
	if sc.Stmts.Has(st.ID) {
		ss.q.push(expect{kind: kParse})
		sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), noopStmt, []byte("\x00\x00\x00")))
		ss.q.push(expect{kind: kCloseSwallow})
		sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', noopStmt))
		return
	}
	ss.addServerStmt(sc, st.ID)
	ss.entry.stats.serverParses.Add(1)
	ss.q.push(expect{kind: kParse, key: st.ID})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), st.Name, st.Body))
}

// holdStmt records the client's statement name for the statement with
// content body, releasing what the name stood for before.
func (ss *session) holdStmt(name string, body []byte) *clientStmt {
	st := &clientStmt{ss.srv.stmts.Acquire(body)}
	if ss.stmts == nil {
		ss.stmts = make(map[string]*clientStmt)
	}
	if old := ss.stmts[name]; old != nil {
		ss.srv.stmts.Release(old.Statement)
	}
	ss.stmts[name] = st
	return st
}

// forgetStmt drops the client's statement name.
func (ss *session) forgetStmt(name []byte) {
	if st := ss.stmts[string(name)]; st != nil {
		delete(ss.stmts, string(name))
		ss.srv.stmts.Release(st.Statement)
	}
}

// forgetStmts drops every statement name of the client (DISCARD ALL,
// DEALLOCATE ALL, the end of the session).
func (ss *session) forgetStmts() {
	for _, st := range ss.stmts {
		ss.srv.stmts.Release(st.Statement)
	}
	clear(ss.stmts)
}

// noopStmt names the throwaway statement behind a Parse the server does not
// need; it is closed right away.
const noopStmt = "pgferry_noop"

// addServerStmt records the statement with ID id on sc, closing the least
// recently used statement on the server when the cache is full.
func (ss *session) addServerStmt(sc *pool.ServerConn, id uint64) {
	if old, evicted := sc.Stmts.Add(id); evicted {
		ss.q.push(expect{kind: kCloseSwallow})
		var name [32]byte
		n := append(name[:0], "pgferry_"...)
		n = strconv.AppendUint(n, old, 36)
		sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', string(n)))
	}
}

// ensureStmt makes sure the server has the client's statement, injecting a
// Parse whose ParseComplete is swallowed.
func (ss *session) ensureStmt(sc *pool.ServerConn, st *clientStmt) {
	if sc.Stmts.Has(st.ID) {
		return
	}
	ss.addServerStmt(sc, st.ID)
	ss.entry.stats.serverParses.Add(1)
	ss.q.push(expect{kind: kParseSwallow, key: st.ID})
	sc.Wr.SetBuffer(protocol.AppendParseRaw(sc.Wr.Buffer(), st.Name, st.Body))
}

// processBind renames the statement a Bind refers to.
func (ss *session) processBind(sc *pool.ServerConn, frame []byte) {
	ss.entry.stats.binds.Add(1)
	body := protocol.Body(frame)
	portal, rest, ok := protocol.CString(body)
	var name, tail []byte
	if ok {
		name, tail, ok = protocol.CString(rest)
	}
	var st *clientStmt
	if ok && len(name) > 0 {
		st = ss.stmts[string(name)]
	}
	if st == nil {
		ss.q.push(expect{kind: kBind})
		sc.Wr.Append(frame)
		return
	}
	ss.ensureStmt(sc, st)
	ss.q.push(expect{kind: kBind})
	sc.Wr.SetBuffer(protocol.AppendBindRenamed(sc.Wr.Buffer(), portal, st.Name, tail))
}

// processDescribe renames the statement of a Describe('S').
func (ss *session) processDescribe(sc *pool.ServerConn, frame []byte) {
	body := protocol.Body(frame)
	ss.q.push(expect{kind: kDescribe})
	if len(body) < 2 || body[0] != 'S' {
		sc.Wr.Append(frame)
		return
	}
	name, _, ok := protocol.CString(body[1:])
	st := ss.stmts[string(name)]
	if !ok || len(name) == 0 || st == nil {
		sc.Wr.Append(frame)
		return
	}
	// The Describe expectation must follow the injected Parse.
	ss.q.n--
	ss.ensureStmt(sc, st)
	ss.q.push(expect{kind: kDescribe})
	sc.Wr.SetBuffer(protocol.AppendDescribe(sc.Wr.Buffer(), 'S', st.Name))
}

// closeLocally handles Close of a named statement: the client forgets it,
// the server keeps its copy in its LRU. The CloseComplete must arrive in
// order, so with a server linked a Close of a name that never exists goes
// to the server instead. It reports whether the frame was fully handled.
func (ss *session) closeLocally(frame []byte) bool {
	body := protocol.Body(frame)
	if len(body) < 2 || body[0] != 'S' || ss.srv.cfg.Load().MaxPreparedStatements == 0 {
		return false
	}
	name, _, ok := protocol.CString(body[1:])
	if !ok || len(name) == 0 {
		return false
	}
	ss.forgetStmt(name)
	ss.mu.Lock()
	sc := ss.server
	if sc == nil {
		ss.mu.Unlock()
		ss.joinPump()
		ss.wr.SetBuffer(protocol.AppendEmpty(ss.wr.Buffer(), protocol.MsgCloseComplete))
		ss.flushClientIfIdle()
		return true
	}
	ss.wmu.Lock()
	ss.q.push(expect{kind: kClose})
	sc.Wr.SetBuffer(protocol.AppendClose(sc.Wr.Buffer(), 'S', noopStmt))
	ss.mu.Unlock()
	ss.flushServerIfIdle(sc)
	ss.wmu.Unlock()
	return true
}

// completes reports whether a server message of type typ is the last
// response to a request of kind k.
func completes(k uint8, typ byte) bool {
	switch k {
	case kParse, kParseSwallow:
		return typ == protocol.MsgParseComplete
	case kBind:
		return typ == protocol.MsgBindComplete
	case kDescribe:
		return typ == protocol.MsgRowDescription || typ == protocol.MsgNoData
	case kExecute:
		return typ == protocol.MsgCommandComplete || typ == protocol.MsgEmptyQuery || typ == protocol.MsgPortalSuspended
	case kClose, kCloseSwallow:
		return typ == protocol.MsgCloseComplete
	}
	return typ == protocol.MsgReadyForQuery
}

// relayEnd says why relayServer stopped.
type relayEnd uint8

const (
	// relayUnlinked: the transaction ended and the server went back to the
	// pool, or the server or the client failed; the server is unlinked.
	relayUnlinked relayEnd = iota
	// relayIdle (inline only): everything the server owed was relayed; the
	// server stays linked, inside the client's transaction.
	relayIdle
	// relayHandoff (inline only): the rest of the loan needs a pump running
	// beside the session goroutine (see handOff).
	relayHandoff
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
			ss.logger().Error("relay panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			ss.serverFailed(sc, errors.New("internal error"))
		}
	}()
	ss.relayServer(sc, false)
}

// relayInline relays the server's responses on the session goroutine
// itself when a request that asks for them has just been sent: no second
// goroutine, no handoff between the two, and so none of the wake-ups that
// cost more CPU than the relaying itself. It stops when the server owes
// nothing more (the server released, or linked and idle inside the
// transaction), and hands the loan to a pump when the server waits for the
// client (COPY FROM STDIN), answers slower than inlineBudget, or the session
// now needs its server watched between requests (pinned, session mode, a
// cancel in flight).
func (ss *session) relayInline(sc *pool.ServerConn, typ byte) {
	if !ss.inline || ss.rd.HasFrame() {
		return // more client frames first: the server gets them in one write
	}
	switch typ {
	case protocol.MsgQuery, protocol.MsgSync, protocol.MsgFlush, protocol.MsgFunctionCall,
		protocol.MsgCopyDone, protocol.MsgCopyFail:
	default:
		return // the server answers nothing before a Sync or Flush
	}
	ss.mu.Lock()
	owed := ss.q.n > 0 && ss.server == sc
	ss.mu.Unlock()
	if owed && ss.relayServer(sc, true) == relayHandoff {
		ss.handOff(sc)
	}
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
	return ss.killed.Load() || ss.pumpKick || ss.serverStuck || ss.doomed != nil
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

// relayServer relays server frames to the client until the transaction
// ends (then it returns the server to the pool) or something fails; inline,
// it also stops as relayInline describes.
func (ss *session) relayServer(sc *pool.ServerConn, inline bool) relayEnd {
	rd, wr := sc.Rd, ss.wr
	for {
		if !rd.HasFrame() {
			if err := wr.Flush(); err != nil {
				ss.clientFailed(sc, err)
				return relayUnlinked
			}
		}
		typ, size, err := rd.Peek()
		if err != nil {
			if isTimeout(err) {
				if ss.takeKick(sc) {
					continue
				}
				if inline && ss.budgetSpent(sc) {
					return relayHandoff
				}
			}
			if ss.kickRelease(sc) {
				return relayUnlinked
			}
			ss.serverFailed(sc, err)
			return relayUnlinked
		}
		if size > protocol.BufferSize && inline {
			// A frame larger than the buffer is read in pieces that cannot
			// resume after a timeout: the server is busy sending, so the
			// budget stops here.
			ss.endBudget(sc)
		}
		switch typ {
		case protocol.MsgDataRow, protocol.MsgCopyData, protocol.MsgNoticeResponse, protocol.MsgNotification:
			if err := rd.ForwardPeeked(wr, size); err != nil {
				if inline && size <= protocol.BufferSize && isTimeout(err) && ss.budgetSpent(sc) {
					return relayHandoff // the part read stays buffered for the pump
				}
				ss.relayFailed(sc, err, size)
				return relayUnlinked
			}
			continue
		}
		frame, err := rd.NextPeeked(size)
		if err != nil {
			if inline && size <= protocol.BufferSize && isTimeout(err) && ss.budgetSpent(sc) {
				return relayHandoff
			}
			ss.serverFailed(sc, err)
			return relayUnlinked
		}
		ss.mu.Lock()
		if typ == protocol.MsgParameterStatus {
			ss.onParameterStatus(sc, frame)
			ss.mu.Unlock()
			continue
		}
		head, _ := ss.q.peek()
		swallow := head.kind == kQuerySwallow
		switch {
		case typ == protocol.MsgErrorResponse:
			if sev, _, msg := protocol.ParseErrorFields(frame); ss.txnMode && !ss.pinned && (string(sev) == "FATAL" || string(sev) == "PANIC") {
				// The server is going away; serverFailed tells the client
				// with an ERROR it can survive.
				ss.serverFatal = append([]byte(nil), msg...)
				ss.mu.Unlock()
				continue
			}
			if !swallow {
				ss.tentativeAborted = true
			}
			if head.kind != kQuery && head.kind != kQuerySwallow {
				ss.skipToSync(sc)
			}
			if swallow {
				_, code, msg := protocol.ParseErrorFields(frame)
				ss.logger().Warn("restoring session parameters failed", zap.ByteString("sqlstate", code), zap.ByteString("message", msg))
			}
		case typ == protocol.MsgReadyForQuery:
			ss.entry.stats.queries.Add(1)
			ss.q.pop()
			if len(ss.tentative) > 0 && protocol.RFQStatus(frame) == protocol.TxIdle {
				ss.settleParams(sc)
			}
			if ss.q.n == 0 && ss.queryTimer != nil {
				ss.queryTimer.Stop()
			}
			ss.status = protocol.RFQStatus(frame)
			if !inline && ss.q.n == 0 && ss.status != protocol.TxIdle {
				// Idle inside a transaction: the client's read deadline now
				// measures idle_transaction_timeout. (Inline, the session
				// goroutine arms it before its next read.)
				if d := ss.srv.cfg.Load().IdleTransactionTimeout.Std(); d > 0 {
					ss.raw.SetReadDeadline(time.Now().Add(d))
				}
			}
			ss.releaseDeferred = false
			if ss.releasable() && ss.cancels > 0 {
				ss.releaseDeferred = true // after the cancel is delivered
			} else if ss.releasable() {
				ss.server = nil
				ss.pumpKick = false
				if ss.entry.monitor != nil && !ss.onReplica && !ss.txReadOnly {
					ss.lastWrite = time.Now() // read_your_writes
				}
				ss.mu.Unlock()
				if !swallow {
					wr.Append(frame)
				}
				ss.releaseServer(sc)
				return relayUnlinked
			}
		case typ == protocol.MsgCommandComplete:
			ss.onCommandComplete(sc, frame)
			if completes(head.kind, typ) {
				ss.q.pop()
			}
		default:
			if completes(head.kind, typ) {
				ss.q.pop()
				swallow = head.kind == kParseSwallow || head.kind == kCloseSwallow
				if head.tag != tagNone && typ == protocol.MsgEmptyQuery {
					frame = execTagFrames[head.tag]
				}
			}
		}
		owed := ss.q.n
		needPump := ss.releaseDeferred || ss.pinned || !ss.txnMode
		ss.mu.Unlock()
		if !swallow {
			wr.Append(frame)
		}
		if !inline {
			continue
		}
		if typ == protocol.MsgCopyInResponse || typ == protocol.MsgCopyBothResponse || (owed == 0 && needPump) {
			if err := wr.Flush(); err != nil {
				ss.clientFailed(sc, err)
				return relayUnlinked
			}
			return relayHandoff
		}
		if owed == 0 {
			if err := wr.Flush(); err != nil {
				ss.clientFailed(sc, err)
				return relayUnlinked
			}
			return relayIdle
		}
	}
}

// skipToSync drops expectations the server will not answer after an error
// in the extended protocol: it discards messages up to the next Sync.
// Statements whose Parse was skipped are forgotten. mu is held.
func (ss *session) skipToSync(sc *pool.ServerConn) {
	for {
		e, ok := ss.q.peek()
		if !ok || e.kind == kSync {
			return
		}
		if (e.kind == kParse || e.kind == kParseSwallow) && e.key != 0 {
			sc.Stmts.Remove(e.key)
		}
		ss.q.pop()
	}
}

// releaseServer ends the transaction's loan: it waits for any write in
// progress, flushes the client and returns the server to the pool.
func (ss *session) releaseServer(sc *pool.ServerConn) {
	ss.entry.stats.xacts.Add(1)
	ss.entry.stats.xactTimeUS.Add(uint64(time.Since(ss.linkedAt) / time.Microsecond))
	ss.waitForWriter()
	err := ss.wr.Flush()
	if ss.fd < 0 {
		// Idle clients hold no write buffer. One that can park keeps it
		// until it parks, rather than take and return it every
		// transaction.
		ss.wr.Release()
	}
	// Release clears a deadline a cancel's wake-up or the budget set.
	if sc.Rd.Buffered() != 0 || sc.Wr.Len() != 0 {
		sc.Pool().Destroy(sc)
	} else {
		sc.Pool().Release(sc)
	}
	if err != nil {
		ss.markDead(err)
	}
	ss.wakeIfPending()
}

// wakeIfPending wakes the session goroutine when it has work waiting for the
// end of the transaction (shutdown).
func (ss *session) wakeIfPending() {
	ss.mu.Lock()
	mail := len(ss.mailbox) > 0
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
	for e, ok := ss.q.peek(); ok; e, ok = ss.q.peek() {
		if e.kind == kSync || e.kind == kQuery {
			answers++
		}
		ss.q.pop()
	}
	doomed := ss.doomed
	survive := survivable && doomed == nil && ss.txnMode && !ss.pinned && answers > 0
	fatalMsg := ss.serverFatal
	ss.serverFatal = nil
	ss.status = protocol.TxIdle
	ss.mu.Unlock()
	ss.waitForWriter()
	sc.Pool().Destroy(sc)
	ss.logger().Warn("server connection lost", zap.String("server", sc.Addr), zap.Error(err), zap.Bool("session_kept", survive))
	msg := "server connection lost: the server closed the connection or the network failed"
	if fatalMsg != nil {
		msg = "server connection lost: " + string(fatalMsg)
	}
	if survive {
		e := protocol.NewError(protocol.SQLStateConnectionFailure, msg)
		e.Hint = "The transaction was rolled back unless the connection was lost during COMMIT. The next transaction runs on another server connection."
		b := ss.wr.Buffer()
		for i := 0; i < answers; i++ {
			b = e.AppendFrame(b)
			b = protocol.AppendReadyForQuery(b, protocol.TxIdle)
		}
		ss.wr.SetBuffer(b)
		if err := ss.wr.Flush(); err != nil {
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
	ss.markDead(errServerGone)
}

// clientFailed handles a client that cannot be written to: the server's
// state is unknown, so it is destroyed.
func (ss *session) clientFailed(sc *pool.ServerConn, err error) {
	ss.mu.Lock()
	if ss.stopping {
		ss.mu.Unlock()
		return
	}
	ss.server = nil
	ss.mu.Unlock()
	ss.waitForWriter()
	sc.Pool().Destroy(sc)
	ss.markDead(err)
}

// finish ends the session: it takes back a linked server, cleans it or
// destroys it, and says goodbye to the client.
func (ss *session) finish(err error) {
	var pe *protocol.Error
	var re *relayedError
	switch {
	case errors.As(err, &pe):
		ss.logger().Info("client disconnected", zap.String("reason", pe.Message))
	case errors.As(err, &re):
	case err == nil || errors.Is(err, errClientTerminated) || isEOF(err) || errors.Is(err, errServerGone) || errors.Is(err, errClientGone):
		if ss.debugEnabled() {
			ss.logger().Debug("client disconnected")
		}
	default:
		ss.logger().Info("client disconnected", zap.Error(err))
	}
	ss.mu.Lock()
	sc := ss.server
	ss.stopping = true
	if ss.queryTimer != nil {
		ss.queryTimer.Stop()
	}
	if ss.txnTimer != nil {
		ss.txnTimer.Stop()
	}
	ss.server = nil
	clean := ss.q.n == 0 && ss.status == protocol.TxIdle
	pinned := ss.pinned
	ss.mu.Unlock()
	if pinned {
		ss.entry.stats.pinnedClients.Add(-1)
	}
	if ss.listening {
		ss.entry.listenerFor(ss.srv.log).unsubscribe(ss, "")
	}
	ss.forgetStmts()
	if sc != nil {
		sc.Interrupt()
	}
	ss.joinPump()
	if sc != nil {
		sc.ClearInterrupt()
		ss.returnServer(sc, clean, pinned)
	}
	if pe != nil && !errors.Is(err, errServerGone) {
		ss.sendFatal(pe)
	} else if re != nil {
		ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
		ss.conn.Write(re.frame)
	}
}

// returnServer gives back a server taken from a departing client: reset
// and released when its state is known to be clean, destroyed otherwise
// (PgBouncer closes a server whose client left mid-transaction too).
func (ss *session) returnServer(sc *pool.ServerConn, clean, pinned bool) {
	cfg := ss.srv.cfg.Load()
	if !clean || sc.Rd.Buffered() != 0 || sc.Wr.Len() != 0 {
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
	sc.ParamsKey = ""
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
	defer ss.wmu.Unlock()
}

// armQueryTimeout starts the query_timeout clock when a query is sent and
// none is running. The timer is made once per session and reused. mu is
// held.
func (ss *session) armQueryTimeout() {
	d := ss.srv.cfg.Load().QueryTimeout.Std()
	if d <= 0 || ss.q.n > 1 {
		return
	}
	ss.querySeq++
	if ss.queryTimer == nil {
		ss.queryTimer = time.AfterFunc(d, ss.onQueryTimeout)
		return
	}
	ss.queryTimer.Reset(d)
}

// armTransactionTimeout starts the transaction_timeout clock for a new
// loan. Only a loan that is one transaction (transaction mode, not pinned)
// is timed: a session-mode or pinned client holds its server for the whole
// session. The timer is made once per session and reused. mu is held.
func (ss *session) armTransactionTimeout() {
	d := ss.srv.cfg.Load().TransactionTimeout.Std()
	if d <= 0 || !ss.txnMode || ss.pinned {
		return
	}
	if ss.txnTimer == nil {
		ss.txnTimer = time.AfterFunc(d, ss.onTransactionTimeout)
		return
	}
	ss.txnTimer.Reset(d)
}

// errTransactionTimeout is what a client whose transaction outlived
// transaction_timeout is told before it is disconnected (PostgreSQL 17's
// own transaction_timeout uses the same SQLSTATE).
var errTransactionTimeout = protocol.Fatal(protocol.SQLStateTransactionTimeout, "transaction_timeout: the transaction was open longer than allowed; it was rolled back")

// onTransactionTimeout ends a session whose transaction has been open
// longer than transaction_timeout (see doomLocked).
func (ss *session) onTransactionTimeout() {
	d := ss.srv.cfg.Load().TransactionTimeout.Std()
	ss.mu.Lock()
	sc := ss.server
	expired := sc != nil && d > 0 && ss.txnMode && !ss.pinned && !ss.stopping && time.Since(ss.linkedAt) >= d
	if !expired {
		ss.mu.Unlock()
		return
	}
	if running := ss.doomLocked(errTransactionTimeout, "transaction_timeout: disconnecting the client"); running != nil {
		ss.cancelRunning(context.Background(), running)
	}
}

// doomGrace is how long a doomed session's client writes may still take:
// enough to deliver the FATAL, and a bound on a client that stopped reading.
const doomGrace = time.Second

// doomLocked ends the session with the FATAL e: the relay reading the
// server (if any) is interrupted and reports it; a client idle between
// messages is woken and gets it from onWake; writes to a client that does
// not read fail after doomGrace. The server connection is closed, which
// rolls a transaction back. mu is held on entry and released.
//
// A query still running must be cancelled, as PostgreSQL would not notice
// the closed connection until the query ends: doomLocked then returns its
// server, held for the cancel (see forwardCancel), and the caller must
// call cancelRunning with it. A session already doomed keeps its first
// reason.
func (ss *session) doomLocked(e *protocol.Error, logMsg string) (running *pool.ServerConn) {
	sc := ss.server
	if ss.doomed != nil {
		if sc != nil {
			sc.Interrupt() // linked since the first doom
		}
		ss.mu.Unlock()
		return nil
	}
	ss.doomed = e
	if sc != nil {
		sc.Interrupt()
		if ss.q.n > 0 {
			ss.cancels++
			running = sc
		}
	}
	ss.mu.Unlock()
	ss.logger().Info(logMsg)
	ss.raw.SetWriteDeadline(time.Now().Add(doomGrace))
	ss.wake()
	return running
}

// cancelRunning cancels the query a doomed session's server is running
// and ends the hold doomLocked took on the server.
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
	sc, seq := ss.server, ss.querySeq
	busy := sc != nil && ss.q.n > 0
	ss.mu.Unlock()
	if !busy {
		return
	}
	ss.logger().Info("query_timeout: cancelling the running query")
	ss.srv.forwardCancel(ss.pid, ss.key)
	time.AfterFunc(time.Second, func() {
		ss.mu.Lock()
		stuck := ss.server == sc && ss.querySeq == seq && ss.q.n > 0 && !ss.stopping
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

// refreshEntry points the session at the current pools of its database
// after a reload replaced them. It reports whether it found them.
func (ss *session) refreshEntry() bool {
	if ss.srv.isDraining() || ss.pinned {
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
	e, err := ss.srv.poolFor(ss.poolName, db, user, ss.clientPassword)
	if err != nil || e == ss.entry {
		return false
	}
	// The new pools reach the same servers: carry the server parameter
	// set over so syncParams knows which values are server defaults.
	old := ss.entry
	old.welcomeMu.Lock()
	w := old.welcome
	old.welcomeMu.Unlock()
	e.welcomeMu.Lock()
	if e.welcome == nil {
		e.welcome = w
	}
	e.welcomeMu.Unlock()
	ss.mu.Lock()
	ss.entry = e
	ss.txnMode = e.mode == poolModeTransaction
	ss.mu.Unlock()
	return true
}

// poolEntry returns the session's pools for other goroutines (admin
// console, metrics); the session's own goroutines use ss.entry directly.
func (ss *session) poolEntry() *poolEntry {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.entry
}

// releasable reports whether the transaction is over and the server can go
// back to the pool. mu is held.
func (ss *session) releasable() bool {
	return ss.q.n == 0 && ss.status == protocol.TxIdle && ss.txnMode && !ss.pinned && !ss.stopping
}

// takeKick consumes a wake-up of the pump sent by cancelDone when the
// server was held for a cancel. It reports whether the read timeout was
// that wake-up; then the deadline is cleared. The release itself happens in
// kickRelease.
func (ss *session) takeKick(sc *pool.ServerConn) bool {
	ss.mu.Lock()
	kicked := ss.pumpKick
	release := kicked && ss.server == sc && ss.releasable() && ss.cancels == 0
	if kicked && !release {
		ss.pumpKick = false
	}
	ss.mu.Unlock()
	if kicked && !release {
		sc.ClearInterrupt()
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
	ss.releaseServer(sc)
	return true
}

// waitForServer queues for a server connection of p, up to
// query_wait_timeout. A client that disconnected while queued is noticed
// when its turn comes: one non-blocking peek at its socket, and the server
// goes straight back to the pool, its query never sent. (Watching every
// queued client while it waits cost a goroutine, two deadline changes and
// a wake-up per queued transaction.) Errors are the pool's own (or
// errClientGone); link decides what the client is told.
func (ss *session) waitForServer(p *pool.Pool, readOnly bool) (*pool.ServerConn, error) {
	var expired <-chan time.Time
	if d := ss.srv.cfg.Load().QueryWaitTimeout.Std(); d > 0 {
		// query_wait_timeout, on a timer the session keeps for its waits.
		if ss.waitTimer == nil {
			ss.waitTimer = time.NewTimer(d)
		} else {
			ss.waitTimer.Reset(d)
		}
		defer ss.waitTimer.Stop()
		expired = ss.waitTimer.C
	}
	ss.waiting.Store(true)
	defer ss.waiting.Store(false)
	sc, err := p.AcquireUntil(expired)
	if errors.Is(err, pool.ErrPoolClosed) && ss.refreshEntry() {
		// A reload replaced the database's pools: carry on with the new
		// ones, the client keeps its session.
		var perr error
		if p, _, perr = ss.pickPool(readOnly); perr == nil {
			sc, err = p.AcquireUntil(expired)
		}
	}
	if err != nil {
		return nil, err // link turns it into what the client is told
	}
	if ss.rd.Buffered() == 0 {
		if ss.peeker == nil {
			ss.peeker = protocol.NewPeeker(ss.raw)
		}
		if ss.peeker.PeerClosed() {
			p.Release(sc)
			return nil, errClientGone
		}
	}
	return sc, nil
}
