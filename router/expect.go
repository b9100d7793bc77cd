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
	// open says a request of the extended protocol went out since the
	// last Sync or simple Query (process sets it): the server is inside
	// the implicit transaction PostgreSQL commits only at a Sync, even
	// with nothing owed (a client that sent Execute and Flush). clear
	// resets it.
	open bool
}

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

// toSync is how many requests at the head of the ring come before the
// first Sync (all of them if none does).
func (r *ring) toSync() int {
	n := 0
	for n < r.n && r.buf[(r.head+n)%len(r.buf)].kind != kSync {
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

func (r *ring) clear() { r.head, r.n, r.open = 0, 0, false }

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
