// The server's answers: relayServer relays them to the client until the
// transaction ends or something fails, and says why it stopped (relayEnd).

package router

import (
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

// relayEnd says why relayServer stopped.
type relayEnd uint8

const (
	// relayUnlinked: the transaction ended and the server went back to the
	// pool, or the server or the client failed; the server is unlinked.
	relayUnlinked relayEnd = iota
	// relayIdle (inline only): everything the server owed now was
	// relayed; the server stays linked, inside the client's transaction,
	// or owing the answers of a group the client has not ended yet (see
	// ring.asked), which the client's next Sync or Flush has it send.
	relayIdle
	// relayHandoff (inline only): the rest of the loan needs a pump running
	// beside the session goroutine (see handOff); in the relay loop, a
	// goroutine of its own (see evict).
	relayHandoff
	// relayAwaitServer (relay loop only): the server has sent nothing more
	// yet. The loop waits until its socket is readable and calls
	// relayServer again; a frame begun stays in the server's Reader.
	relayAwaitServer
	// relayAwaitClient (relay loop only): the client takes no more bytes
	// for now. What it did not take stays in its Writer; the loop waits
	// until the socket is writable and calls relayServer again, which
	// reads nothing more from the server meanwhile.
	relayAwaitClient
)

// relayServer relays server frames to the client until the transaction
// ends (then it returns the server to the pool) or something fails; inline,
// it also stops as relayInline describes, and in the relay loop, whose
// sockets never block (protocol.ErrWouldBlock), where it would wait.
//
// It notes every frame that is not data under mu; *held says whether it
// holds it, for the recover of whoever runs it to let go of if what runs
// under it panics (releaseHeld): inline, the session's owner (ownerHeld),
// else the pump (pumpHeld).
func (ss *session) relayServer(sc *pool.ServerConn, inline bool) relayEnd {
	rd, wr := sc.Rd, ss.wr
	held := &ss.pumpHeld
	if inline {
		held = &ss.ownerHeld
	}
	// In the relay loop no read waits: what the client is owed is flushed
	// when a read would (awaitServer) or it reaches relayFlushAt, not
	// before every read that might.
	looped := inline && ss.loop != 0
	for {
		if looped && wr.Len() >= relayFlushAt {
			if err := wr.Flush(); err != nil {
				if err == protocol.ErrWouldBlock {
					return relayAwaitClient
				}
				ss.clientFailed(sc, err)
				return relayUnlinked
			}
		} else if !looped && !rd.HasFrame() {
			if err := wr.Flush(); err != nil {
				ss.clientFailed(sc, err)
				return relayUnlinked
			}
		}
		typ, size, err := rd.Peek()
		if err != nil {
			if err == protocol.ErrWouldBlock {
				return ss.awaitServer(sc)
			}
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
		if size > protocol.BufferSize && inline && ss.loop != 0 {
			// Streamed through writes that wait for the client: a
			// goroutine relays it.
			return relayHandoff
		}
		if size > protocol.BufferSize && inline {
			// A frame larger than the buffer is read in pieces that cannot
			// resume after a timeout: the server is busy sending, so the
			// budget stops here.
			ss.endBudget(sc)
		}
		switch typ {
		case protocol.MsgDataRow, protocol.MsgCopyData, protocol.MsgNoticeResponse, protocol.MsgNotification:
			var err error
			if typ == protocol.MsgNotification && ss.txnMode {
				err = ss.forwardNotification(rd, wr, size) // (listenserved.go: dropped if pgferry's listener delivers it too)
			} else {
				err = rd.ForwardRun(wr, typ, size)
			}
			if err != nil {
				if err == protocol.ErrWouldBlock {
					return ss.awaitServer(sc) // the part read stays buffered
				}
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
			if err == protocol.ErrWouldBlock {
				return ss.awaitServer(sc)
			}
			if inline && size <= protocol.BufferSize && isTimeout(err) && ss.budgetSpent(sc) {
				return relayHandoff
			}
			ss.serverFailed(sc, err)
			return relayUnlinked
		}
		var swallow, needPump, watch, replayed bool
		var owed int
		owesNow := true
		if looped && ss.quietInQuery(frame) {
			// A frame inside a simple query's answer that changes no
			// state (a RowDescription, ...): the loop, the only writer of
			// the expectation ring while it serves the session (see
			// request), reads it without mu. (Its query still owes the
			// ReadyForQuery, which it asked for, so owed > 0, owesNow
			// holds, and needPump does not matter:
			// releaseDeferred, which a cancel's end writes, is not read.)
			// The rows buffered whole behind it, and a quiet
			// CommandComplete behind them, go with it, in one copy.
			owed = ss.q.n
			frame = rd.JoinRun(frame, protocol.MsgDataRow)
			if t, size, ok := rd.PeekBuffered(); ok && t == protocol.MsgCommandComplete && ss.quietInQuery(rd.Lookahead()[:size]) {
				frame, _ = rd.Join(frame, size)
			}
		} else {
			ss.mu.Lock()
			*held = heldMu
			ss.faultAt("server frame")
			if typ == protocol.MsgParameterStatus {
				ss.onParameterStatus(sc, frame)
				*held = 0
				ss.mu.Unlock()
				continue
			}
			head, _ := ss.q.peek()
			swallow = head.kind == kQuerySwallow
			switch {
			case typ == protocol.MsgErrorResponse:
				sev, code, msg := protocol.ParseErrorFields(frame)
				if ss.txnMode && !ss.pinned && (string(sev) == "FATAL" || string(sev) == "PANIC") {
					// The server is going away; serverFailed tells the client
					// with an ERROR it can survive.
					fatal := string(msg)
					ss.serverFatal = &fatal
					*held = 0
					ss.mu.Unlock()
					continue
				}
				ss.q.copyFailed() // (a COPY it fails reads no more)
				if head.tag == tagDup && head.kind == kParse {
					frame = ss.duplicateError(frame) // (stmtsdup.go: naming the client's statement)
				}
				ss.deallocFailed(head) // (stmtsdealloc.go: a stand-in left)
				if !swallow && ss.pendingParams() {
					ss.failParams() // (its transaction's pending SETs are undone: settle)
				}
				if head.kind != kQuery && head.kind != kQuerySwallow {
					ss.skipToSync(sc, code)
				} else if head.kind == kQuery && ss.stmts != nil {
					ss.dropUndone(sc, ss.q.answered()+1) // (stmts.go: a drop of its own that did not run)
				}
				// (The client has the error of the request the next
				// ReadyForQuery ends: a server lost before it sends that
				// one adds no other, lostServer.)
				ss.failedOwed = !swallow
				if swallow {
					ss.replayRefusedBy(sc, code, msg) // (paramsrefused.go: the server holds what it held before)
				} else if ss.replays == replayRefused {
					frame = ss.rare.refusal // (paramsrefused.go: the request did not run)
				}
			case typ == protocol.MsgReadyForQuery:
				switch head.kind {
				case kQuerySwallow:
					if ss.replays != replayRefused {
						ss.replays-- // (the replay ran: what is sent from now on needs no guard)
					}
					if ss.replays == 0 || ss.replays == replayRefused {
						replayed = ss.replayAnswered() // (paramsrefused.go: a request waits for it)
					}
				case kSyncSwallow:
					// The client's answer: the Query's own was held back
					// (below) or, refused, never came.
					swallow = false
				default:
					if next, ok := ss.q.second(); ok && next.kind == kSyncSwallow {
						// A Query (or FunctionCall) with pgferry's Sync behind
						// it (syncBehind) that ran: the client gets its
						// ReadyForQuery as that Sync's comes (the same
						// status), once the server owes nothing more, so
						// that its next request finds the loan at rest (the
						// relay loop serves it, where a request that comes
						// while the server works goes to a goroutine).
						swallow = true
					}
				}
				ss.failedOwed = false
				if ss.serverSkips {
					// The Sync the server skipped to after an error: what
					// was sent before it since then never ran.
					ss.serverSkips = false
					ss.dropSkipped(sc, ss.q.toSync())
				}
				if !swallow {
					// (A client's query: not pgferry's replay of its
					// parameters, nor the ReadyForQuery held back for the
					// Sync of pgferry's behind a guarded Query.)
					ss.entry.stats.queries.Add(1)
				}
				if ss.rare != nil {
					// (A LISTEN's subscribe made rare, as deallocQuery
					// does: a client that did neither is spared the look
					// at the ring.)
					switch h, _ := ss.q.peek(); {
					case h.tag == tagListen && h.kind == kQuery:
						ss.listenQueryAnswered(protocol.RFQStatus(frame)) // (listenlinked.go: its answer, held back)
					case h.tag == tagDealloc && h.kind == kQuery:
						ss.deallocAnswered(sc, protocol.RFQStatus(frame)) // (stmtsdealloc.go: likewise)
					}
				}
				ss.q.popAnswered()
				var now mono
				if ss.q.n == 0 {
					now = ss.srv.parker.clock(ss)
					// Every path that sends a query starts its clock (process,
					// refuse): a missing start would show here as pgferry's age.
					ss.entry.stats.queryTimeUS.Add(uint64(now.Sub(ss.queryStart) / time.Microsecond))
					ss.queryStart = 0
				}
				if ss.pendingParams() && protocol.RFQStatus(frame) == protocol.TxIdle {
					ss.settleParams(sc)
				}
				if ss.rare != nil && ss.rare.scsLive != "" {
					ss.scsReported() // (statescs.go: its ParameterStatus came)
				}
				if ss.q.n == 0 && ss.rare != nil && ss.rare.queryTimer != nil {
					ss.rare.queryTimer.Stop()
				}
				ss.status = protocol.RFQStatus(frame)
				if ss.replays == replayRefused {
					frame = readyIdle // (paramsrefused.go: the client's requests did not run)
					if ss.q.n == 0 {
						*held = 0
						if swallow {
							frame = nil
						}
						return ss.endRefused(sc, frame, now)
					}
				}
				if !inline && ss.q.n == 0 && ss.status != protocol.TxIdle {
					// Idle inside a transaction: the client's read deadline now
					// measures idle_transaction_timeout. (Inline, the session
					// goroutine arms it before its next read.)
					if d := ss.srv.cfg.Load().IdleTransactionTimeout.Std(); d > 0 {
						ss.raw.SetReadDeadline(time.Now().Add(d))
						if ss.has(evWake) {
							ss.raw.SetReadDeadline(pastDeadline) // a wake it may have replaced
						}
					}
				}
				if !swallow && ss.rare != nil && len(ss.rare.mailbox) > 0 {
					ss.mailToLinked() // (a client tied to its server: listen.go)
				}
				ss.releaseDeferred = false
				if ss.releasable() && ss.cancels > 0 {
					ss.releaseDeferred = true // after the cancel is delivered
				} else if ss.releasable() {
					ss.server = nil
					ss.pumpKick = false
					wrote := ss.entry.monitor != nil && !ss.onReplica && !ss.txReadOnly
					if wrote && !ss.entry.db.ReadYourWritesLSN {
						ss.lastWrite = uint64(monoNow()) // read_your_writes (the LSN: releaseServer)
					}
					*held = 0
					ss.mu.Unlock()
					if !swallow {
						wr.Append(frame)
					}
					ss.releaseServer(sc, wrote && ss.entry.db.ReadYourWritesLSN, now)
					return relayUnlinked
				}
			case typ == protocol.MsgCommandComplete:
				if head.kind == kQuerySwallow {
					sc.ReplayRan++ // (a statement of the replay: paramsrefused.go)
				} else if ss.rare != nil || (len(frame) > 5 && frame[5] == 'D') {
					ss.onCommandComplete(sc, frame) // (pending SETs, or a DISCARD/DEALLOCATE)
				}
				// A COPY that completes read every Sync sent during it: an
				// error later in the loan leaves none unanswered (ring.ignored).
				ss.q.ignored = false
				listen := head.kind == kExecute && head.tag == tagListen
				if listen {
					frame = execTagFrames[tagListen] // (its listenStandIn's UNLISTEN: state.go)
				} else if head.tag == tagPrepareRefused && head.kind == kQuery {
					frame = execTagFrames[tagPrepareRefused] // (its ROLLBACK's: prepareRefused)
				}
				if completes(head.kind, typ) {
					ss.q.popAnswered() // (and the Syncs its COPY ignored)
				}
				if listen {
					ss.listenAnswered(ss.q.answered()) // (listenlinked.go: the channel is served; no COPY ran)
				}
			default:
				if typ == protocol.MsgCopyInResponse || typ == protocol.MsgCopyBothResponse {
					ss.q.copyInBegan()
				}
				if completes(head.kind, typ) {
					ss.q.pop()
					swallow = head.kind == kParseSwallow || head.kind == kCloseSwallow || head.kind == kGuard
					if head.kind == kClose || head.tag == tagParse {
						ss.closeAnswered(ss.q.answered()) // (stmtsclose.go: the client's name goes for good; a Parse's, what it stood for before: parseSent)
					}
				}
				if head.tag != tagNone && typ == protocol.MsgEmptyQuery {
					switch {
					case (head.tag == tagListen || head.tag == tagDealloc) && head.kind == kQuery:
						swallow = true // (answered at its ReadyForQuery: listenQueryAnswered, deallocAnswered)
					case head.tag == tagListen:
						frame = execTagFrames[tagListen]
						ss.listenAnswered(ss.q.answered()) // (listenlinked.go: the channel is served)
					default:
						frame = execTagFrames[head.tag] // (an Execute's, or a Query's)
					}
				}
				if !swallow && quietAnswer(typ) {
					frame = ss.joinQuietAnswers(rd, frame)
				}
			}
			owed, owesNow = ss.q.n, ss.q.owesNow()
			needPump = ss.releaseDeferred || ss.pinned || !ss.txnMode
			if owed > 0 && !owesNow {
				watch = !ss.serverSkips // (unendedGroup)
			}
			*held = 0
			ss.mu.Unlock()
		}
		if !swallow {
			wr.Append(frame)
		}
		if !inline {
			continue
		}
		if replayed {
			return relayIdle // (awaitReplay: its request goes now; the rest is relayed behind it)
		}
		// Nothing more is owed now: the server owes nothing, or only the
		// answers of a group its client has not ended yet (no Sync or
		// Flush went behind it: ring.asked), which come after the client
		// sends more.
		// (Frames read already are relayed first: an error in such a
		// group comes with the answers the server held before it. In the
		// relay loop, a server under TLS is read again, which does not
		// wait: its TLS layer may hold such an error, read from the
		// socket with the answers before it, which the socket's
		// readiness would not announce to the loop's wait, loopGroup.)
		idle := owed == 0 || !owesNow && !rd.HasFrame() && !(looped && watch && sc.TLS)
		if typ == protocol.MsgCopyInResponse || typ == protocol.MsgCopyBothResponse ||
			(idle && (needPump || watch && ss.loop == 0 && ss.rd.Buffered() == 0 && ss.clientQuiet())) {
			// (A client that would block gets the rest from the pump. On
			// a goroutine, a group left unended with nothing more of the
			// client's in hand has the pump watch for an error in it:
			// unendedGroup.)
			if err := wr.Flush(); err != nil && err != protocol.ErrWouldBlock {
				ss.clientFailed(sc, err)
				return relayUnlinked
			}
			return relayHandoff
		}
		if idle {
			// (In the relay loop, a client that would block gets the rest
			// before the loop reads its next request.)
			if err := wr.Flush(); err != nil && err != protocol.ErrWouldBlock {
				ss.clientFailed(sc, err)
				return relayUnlinked
			}
			return relayIdle
		}
	}
}

// unendedGroup reports whether the server owes answers only later, to a
// group of extended-protocol requests its client has not ended with a
// Sync or Flush yet (see ring.asked), while an error in it would come at
// once: PostgreSQL holds the group's answers, but flushes an
// ErrorResponse (and a notice) as it sends it, with what it held before
// (elog.c, send_message_to_frontend), and a client waits for that error
// as it may for nothing else (libpq's pipeline mode, pgx's Pipeline). So
// where no more of the client's frames are in hand, a pump watches such
// a server (relayInline, relayServer), and the relay loop waits for the
// server as well as the client (loopGroup). A server that skips to the
// next Sync after an error (serverSkips) sends nothing before it. mu is
// held, or the relay loop owns the ring.
func (ss *session) unendedGroup() bool {
	return ss.q.n > 0 && !ss.q.owesNow() && !ss.serverSkips
}

// quietInQuery reports whether frame, of the server's answer to the
// request at the head of the ring, changes nothing pgferry tracks: a
// frame of a simple query's answer (completed by ReadyForQuery alone)
// that is not one relayServer acts on (a RowDescription, an
// EmptyQueryResponse, ...), or its CommandComplete when nothing waits for
// one (no pending changes, rare; no Sync a COPY read, ignored) and it is
// not a DISCARD's or DEALLOCATE's (onCommandComplete). The relay loop's
// own: it reads rare and the ring without mu.
func (ss *session) quietInQuery(frame []byte) bool {
	switch frame[0] {
	case protocol.MsgParameterStatus, protocol.MsgErrorResponse, protocol.MsgReadyForQuery,
		protocol.MsgCopyInResponse, protocol.MsgCopyBothResponse:
		return false
	case protocol.MsgCommandComplete:
		if ss.rare != nil || ss.q.ignored || len(frame) < 6 || frame[5] == 'D' {
			return false
		}
	}
	head, ok := ss.q.peek()
	return ok && head.kind == kQuery && head.tag == tagNone
}

// quietAnswer reports whether typ is an answer that changes nothing but
// the expectation ring: ParseComplete, BindComplete, the answers to a
// Describe.
func quietAnswer(typ byte) bool {
	switch typ {
	case protocol.MsgParseComplete, protocol.MsgBindComplete, protocol.MsgParameterDescription,
		protocol.MsgRowDescription, protocol.MsgNoData:
		return true
	}
	return false
}

// joinQuietAnswers joins to frame, a quiet answer relayServer has just
// noted, the answers buffered whole behind it that change nothing pgferry
// tracks but the ring, and notes them: the quiet answers to the client's
// own Parse, Bind or Describe at the head of the ring (not one of
// pgferry's, whose answer is dropped, nor one with a tag), and the
// DataRows and CommandComplete of its Execute or simple Query (for a
// session that tracks no pending changes, rare, and a command whose tag
// does not start with a D: DISCARD and DEALLOCATE are acted on,
// onCommandComplete). An extended-protocol group's answers up to its
// ReadyForQuery then cost one turn of relayServer's loop, one hold of mu
// and one copy to the client. It stops at anything else (a notice, an
// error, a ReadyForQuery, ...), which the loop reads as before. mu is
// held.
func (ss *session) joinQuietAnswers(rd *protocol.Reader, frame []byte) []byte {
	for {
		typ, size, ok := rd.PeekBuffered()
		if !ok {
			return frame
		}
		head, ok := ss.q.peek()
		if !ok || head.tag != tagNone {
			return frame
		}
		pop := false
		switch {
		case head.kind == kParse && typ == protocol.MsgParseComplete,
			head.kind == kBind && typ == protocol.MsgBindComplete,
			head.kind == kDescribe && (typ == protocol.MsgRowDescription || typ == protocol.MsgNoData):
			pop = true
		case head.kind == kDescribe && typ == protocol.MsgParameterDescription,
			(head.kind == kExecute || head.kind == kQuery) && typ == protocol.MsgDataRow:
			// (a statement's: its RowDescription or NoData follows; rows)
		case (head.kind == kExecute || head.kind == kQuery) && typ == protocol.MsgCommandComplete &&
			ss.rare == nil && size > 5 && rd.Lookahead()[5] != 'D':
			ss.q.ignored = false // (as relayServer notes a CommandComplete)
			pop = head.kind == kExecute
		default:
			return frame
		}
		if frame, ok = rd.Join(frame, size); !ok {
			return frame
		}
		if pop {
			ss.q.popAnswered()
		}
	}
}

// relayFlushAt is how many bytes relayServer lets the client be owed in
// the relay loop while the server has more to read at once: what one read
// of the server can bring, as when it flushed before every read.
const relayFlushAt = protocol.BufferSize

// awaitServer is where relayServer stops in the relay loop when the
// server has sent nothing more yet: it first flushes what the client is
// owed, and waits for the client instead if the client takes no more.
func (ss *session) awaitServer(sc *pool.ServerConn) relayEnd {
	if err := ss.wr.Flush(); err != nil {
		if err == protocol.ErrWouldBlock {
			return relayAwaitClient
		}
		ss.clientFailed(sc, err)
		return relayUnlinked
	}
	return relayAwaitServer
}

// skipToSync drops the expectations of the requests the server skips
// after an error in the extended protocol: it discards messages up to the
// next Sync (postgres.c, ignore_till_sync: a Query too). And a statement
// the server says it does not have (code, the error's SQLSTATE, 26000 for
// a Bind or Describe of it: something dropped it behind pgferry's back, a
// DEALLOCATE by its name) is forgotten, so that its next use prepares it
// again. With no Sync owed yet, the server also skips what the client
// sends from now on up to its Sync: serverSkips says so until that Sync's
// ReadyForQuery, which drops them in turn, and a server that skips is
// not given back to the pool meanwhile (releasable, finish). mu is held.
func (ss *session) skipToSync(sc *pool.ServerConn, code []byte) {
	q := &ss.q
	if e, ok := q.peek(); ok && e.key != 0 && (e.kind == kBind || e.kind == kDescribe) &&
		string(code) == protocol.SQLStateInvalidSQLStatementName {
		sc.Stmts.Remove(e.key)
	}
	n := q.toSync()
	ss.serverSkips = n == q.n
	ss.dropSkipped(sc, n)
}

// dropSkipped drops the n expectations at the head of the ring, of
// requests the server skips after an error (or failed with it). What sc's
// statement cache recorded for them as they were sent is undone, last
// first, so that it tells what the server holds: a statement whose Parse
// was skipped is forgotten, one whose eviction Close was skipped is cached
// again (a Close and a Parse of one statement in the same run undo to
// where it stood before both). Their pending SETs never run
// (skippedParams), nor their drops, of every statement or of one name
// (a DEALLOCATE, a Close: closeSent), which give back what they set aside
// (dropUndone), nor the client's Parses of named statements, whose names
// stand for what they stood for before (parseSent). mu is held.
func (ss *session) dropSkipped(sc *pool.ServerConn, n int) {
	q := &ss.q
	if ss.pendingParams() {
		ss.skippedParams(n)
	}
	ss.listensSkipped(n) // (listenlinked.go: nor do their LISTENs)
	drops := ss.stmts != nil && len(ss.stmts.drops) > 0
	for i := n - 1; i >= 0; i-- {
		e := q.buf[(q.head+i)%len(q.buf)]
		if drops && (e.kind == kQuery || e.kind == kExecute || e.kind == kClose || e.tag == tagParse) {
			ss.dropUndone(sc, q.answered()+1+uint64(i))
		}
		switch {
		case e.key == 0:
		case e.kind == kParse || e.kind == kParseSwallow:
			sc.Stmts.Remove(e.key)
		case e.kind == kCloseSwallow:
			sc.Stmts.Restore(e.key)
		}
	}
	for range n {
		q.pop()
	}
}
