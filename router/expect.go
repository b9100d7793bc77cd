// What a linked server still owes the session: the expectation ring, in
// the order the requests went out.

package router

import "github.com/pgferry/pgferry/protocol"

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
	kSyncIgnored               // a Sync the server read in copy-in mode, which it ignores: no answer (copyInBegan)
	kGuard                     // injected Parse that fails after a refused replay (guardReplay): ParseComplete dropped
	kSyncSwallow               // injected Sync behind a guarded Query: its ReadyForQuery is the client's, the Query's own dropped (relayServer)
)

type expect struct {
	kind uint8
	tag  uint8  // kExecute: an answer replacing EmptyQueryResponse (execTag)
	key  uint64 // statement ID (prepared.Statement.ID): what kParse/kParseSwallow prepare, kCloseSwallow evicts, kBind/kDescribe use (0: none)
}

// ring is a FIFO of expectations that grows as needed and then reuses its
// storage, so steady-state relaying does not allocate.
type ring struct {
	buf  []expect
	head int
	n    int
	// seq numbers the requests pushed: the last one pushed is number seq.
	// clear keeps it, so that numbers never repeat within a ring's life.
	seq uint64
	// copyEnd is seq as the client last ended a COPY outside copyIn: a
	// client that sent its CopyDone before the CopyInResponse reached
	// pgferry ended the COPY there. clear resets it.
	copyEnd uint64
	// open says a request of the extended protocol went out since the
	// last Sync or simple Query (process sets it): the server is inside
	// the implicit transaction PostgreSQL commits only at a Sync, even
	// with nothing owed (a client that sent Execute and Flush). clear
	// resets it.
	open bool
	// copyIn says the server is in copy-in mode (it sent CopyInResponse)
	// and the client has not yet ended the COPY (CopyDone, CopyFail) nor
	// the server failed it: a Sync the client sends meanwhile is read by
	// the COPY, which ignores it (protocol.sgml, "COPY Operations": "the
	// backend will ignore Flush and Sync messages received during copy-in
	// mode"), so nothing answers it. libpq sends one after the Execute of
	// every COPY by the extended protocol (PQexecParams), then another
	// after the CopyDone (PQputCopyEnd), which ReadyForQuery answers.
	// clear resets it.
	copyIn bool
	// ignored says a Sync of this loan was taken for read by a COPY
	// (copyIn, copyInBegan). A COPY that fails may not have read them
	// all: the server then answers those it had not, after the error,
	// and pgferry cannot tell how many. doubt says a COPY failed with
	// such Syncs about: its answers may not be all in, so the server goes
	// back to no other client (releaseServer, finish destroy it); or that
	// a DEALLOCATE's stand-in may be left on it (deallocFailed). A
	// CommandComplete (the COPY's own: nothing else is answered during
	// one) resets ignored; clear resets both. (The four flags share a
	// word: the session, one per client, stays in its size class.)
	ignored bool
	doubt   bool
	// asked is the number (its low 32 bits) of the last request the
	// server answers without waiting for more from the client: a Sync, a
	// simple Query or a FunctionCall, or the last request sent before a
	// Flush, CopyDone or CopyFail. PostgreSQL holds the answers of an
	// extended-protocol group in its output buffer until it sends a
	// ReadyForQuery or reads a Flush (postgres.c; an error goes out at
	// once), so up to asked the server's answers are owed now (owesNow),
	// and those of the requests after it (a group its client has not
	// ended yet) once such a message follows them. (An extended-protocol
	// COPY's CommandComplete may wait for the Sync after its CopyDone:
	// counting CopyDone here at worst has a relay wait, and hand the loan
	// to a pump, as before.) clear sets it to seq: nothing is owed. 32
	// bits are enough, compared with answered as a difference: within a
	// loan, asked and answered never lie 2^31 requests apart; and they
	// share the flags' word, so the session, one per client, stays in
	// its size class.
	asked uint32
}

// ask notes that everything sent so far is answered now (see asked).
func (r *ring) ask() { r.asked = uint32(r.seq) }

// owesNow reports whether the server owes answers it sends without
// waiting for the client (see asked): a relay reads them now, and not
// those that come after them.
func (r *ring) owesNow() bool { return int32(r.asked-uint32(r.answered())) > 0 }

// push records a request. It is inlined on the relay's path: the rare
// growth of the buffer is grow's.
func (r *ring) push(e expect) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
	r.seq++
}

// grow doubles the ring's buffer (16 at first), keeping its requests in
// order.
func (r *ring) grow() {
	nb := make([]expect, max(16, 2*len(r.buf)))
	for i := 0; i < r.n; i++ {
		nb[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = nb, 0
}

// unpush takes back the last request pushed, with its number: a caller
// that must record another request before it pushes it again (a Describe
// behind the Parse it injects, processDescribe). seq must not keep the
// number, or answered would count the request as answered.
func (r *ring) unpush() {
	r.n--
	r.seq--
}

// answered is the number of the last request answered (popped): every
// request up to it is.
func (r *ring) answered() uint64 { return r.seq - uint64(r.n) }

func (r *ring) peek() (expect, bool) {
	if r.n == 0 {
		return expect{}, false
	}
	return r.buf[r.head], true
}

// tagLast sets the tag of the request pushed last.
func (r *ring) tagLast(tag uint8) { r.buf[(r.head+r.n-1)%len(r.buf)].tag = tag }

// second returns the request behind the head, if any.
func (r *ring) second() (expect, bool) {
	if r.n < 2 {
		return expect{}, false
	}
	return r.buf[(r.head+1)%len(r.buf)], true
}

// firstQuery reports whether the request pushed last is the only one in
// the ring that a client's ReadyForQuery ends (a Query or FunctionCall, a
// Sync): those ahead of it are its own group's, or pgferry's.
func (r *ring) firstQuery() bool {
	for i := 0; i < r.n-1; i++ {
		if k := r.buf[(r.head+i)%len(r.buf)].kind; k == kQuery || k == kSync {
			return false
		}
	}
	return true
}

// toSync is how many requests at the head of the ring come before the
// first Sync (all of them if none does).
func (r *ring) toSync() int {
	n := 0
	for n < r.n {
		if k := r.buf[(r.head+n)%len(r.buf)].kind; k == kSync || k == kSyncSwallow {
			break
		}
		n++
	}
	return n
}

func (r *ring) pop() {
	if r.n == 0 {
		return
	}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
}

func (r *ring) clear() {
	r.head, r.n, r.open, r.copyIn, r.copyEnd, r.ignored, r.doubt = 0, 0, false, false, 0, false, false
	r.asked = uint32(r.seq)
}

// popAnswered pops the request at the head, which the server has
// answered, and the Syncs after it that its COPY read and ignored
// (copyInBegan): nothing answers those.
func (r *ring) popAnswered() {
	r.pop()
	for r.n > 0 && r.buf[r.head].kind == kSyncIgnored {
		r.pop()
	}
}

// copyInBegan notes the server's CopyInResponse (or CopyBothResponse) to
// the request at the head: the Syncs the client sent after that request
// and before it ended the COPY reach the server in copy-in mode, which
// ignores them (see copyIn). Those already pushed are marked so that
// popAnswered drops them with the COPY's request; while the client has not
// ended the COPY, the next ones are not pushed (process).
func (r *ring) copyInBegan() {
	head := r.answered() + 1
	last := r.seq
	if r.copyEnd >= head {
		last = r.copyEnd // (the client ended the COPY already)
	} else {
		r.copyIn = true
	}
	for i := 1; i < r.n && head+uint64(i) <= last; i++ {
		if e := &r.buf[(r.head+i)%len(r.buf)]; e.kind == kSync || e.kind == kSyncSwallow {
			// (A Sync of pgferry's right behind a Query that began a COPY
			// FROM STDIN: syncBehind.)
			e.kind = kSyncIgnored
			r.ignored = true
		}
	}
}

// copyFailed notes an ErrorResponse: a COPY in copy-in mode stops reading,
// and if Syncs were taken for read by a COPY in this loan, some may not
// have been (see doubt).
func (r *ring) copyFailed() {
	r.copyIn = false
	if r.ignored {
		r.doubt = true
	}
}

// copyEnded notes a CopyDone or CopyFail from the client (see copyIn).
func (r *ring) copyEnded() {
	if r.copyIn {
		r.copyIn = false
		return
	}
	r.copyEnd = r.seq
}

// completes reports whether a server message of type typ is the last
// response to a request of kind k.
func completes(k uint8, typ byte) bool {
	switch k {
	case kParse, kParseSwallow, kGuard:
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
