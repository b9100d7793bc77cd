package pool

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/pgferry/pgferry/internal/sockio"
	"github.com/pgferry/pgferry/protocol"
)

// ServerConn is one logged-in server connection. The Pool owns it; a session
// that borrowed it may use Conn, Rd, Wr, Params and Stmts until it ends the
// loan with Pool.Release or Pool.Destroy. It is not safe for concurrent use
// by more than the borrower's goroutines (which the borrower coordinates).
type ServerConn struct {
	// Conn is the connection in use (TLS-wrapped when TLS is on).
	Conn net.Conn
	raw  net.Conn
	// Addr is host:port as dialed; Host the configured host name.
	Addr, Host string
	// TLS reports whether the connection is encrypted.
	TLS bool
	// PID and Key are the server's BackendKeyData, used for cancels.
	PID, Key uint32
	// Params holds the server's ParameterStatus values. The borrower
	// updates it as it relays ParameterStatus messages.
	Params map[string]string
	// Rd and Wr frame the connection; their buffers are released while the
	// connection sits idle in the pool.
	Rd *protocol.Reader
	Wr *protocol.Writer
	// Stmts tracks the prepared statements pgferry created on this server.
	Stmts StmtCache
	// ParamsKey is the client parameter set the router last made Params
	// match, interned (one copy however many connections and clients
	// share it); the zero Handle means unknown. Whoever changes Params
	// otherwise resets it.
	ParamsKey unique.Handle[string]
	// Replay names what each statement of the query the borrower last
	// sent to restore its client's parameters sets ("" for one that sets
	// none), and ReplayRan counts those the server completed (negative:
	// the server refused the query, which left it inside an aborted
	// transaction): the router's, so that a refusal names the parameter.
	// The pool only carries them.
	Replay    []string
	ReplayRan int
	// EventSet is the borrower's record of the epoll set the socket is
	// registered in, as its descriptor + 1 (0: none): the router's relay
	// loop keeps a server's registration from one loan to the next, and
	// reads this to modify it rather than add it again. The pool only
	// carries it; a registration ends by itself when the socket closes.
	EventSet int32
	// Vouched is when a borrower last gave the connection back from a
	// transaction that ended cleanly (its ReadyForQuery the last byte
	// read), in the borrower's own monotonic clock (0: never). The pool
	// only carries it; TryAcquireChecked reads it against the time its
	// caller passes.
	Vouched int64

	peeker            *protocol.Peeker // liveness check of the raw socket
	pool              *Pool
	created, lastUsed time.Time
	gen               uint64
	id                uint64
	slot              int  // index in pool.conns
	closing           bool // its close is under way (see retireMarked); guarded by pool.mu

	// watch is the tick at which the borrower started a watch (see Watch),
	// watchFired once InterruptOverdue interrupted it, 0 when none runs.
	watch atomic.Int64
	// intMu orders Interrupt, ClearInterrupt and a watch firing, so that a
	// past read deadline is never left behind unrecorded. interrupted (set
	// under intMu, after the deadline) says a past read deadline is set on
	// Conn; endLoan reads it first without the lock.
	intMu       sync.Mutex
	interrupted atomic.Bool
	// noWait marks reads that do not wait (see NoWait); rawRd is the
	// descriptor a plain connection's Rd then reads.
	noWait bool
	rawRd  *sockio.Raw
}

// watchFired is the watch value of a watch that InterruptOverdue fired.
const watchFired = -1

// Interrupt sets a past read deadline on Conn: the borrower's read fails
// at once with a timeout, now or at its next call. It stays set until
// ClearInterrupt or the end of the loan (Release clears it).
func (sc *ServerConn) Interrupt() {
	sc.intMu.Lock()
	sc.Conn.SetReadDeadline(time.Unix(1, 0))
	sc.interrupted.Store(true)
	sc.intMu.Unlock()
}

// ClearInterrupt removes the read deadline Interrupt or a fired watch set,
// if any. Without one it makes no system call.
func (sc *ServerConn) ClearInterrupt() {
	sc.intMu.Lock()
	if sc.interrupted.Load() {
		sc.Conn.SetReadDeadline(time.Time{})
		sc.interrupted.Store(false)
	}
	sc.intMu.Unlock()
}

// Watch starts a watch: once the caller's clock (the tick values passed to
// Pool.InterruptOverdue) passes tick plus the caller's bound, the watch
// fires and interrupts the borrower as Interrupt does. tick must be > 0.
// A watch costs no timer and no system call; it ends with StopWatch or
// the loan.
func (sc *ServerConn) Watch(tick int64) { sc.watch.Store(tick) }

// StopWatch ends the watch. A fired watch's interrupt stays set: once
// StopWatch returns it is all set (interrupted), so that the loan's end
// clears it, even if it was still being set.
func (sc *ServerConn) StopWatch() {
	if sc.watch.Swap(0) == watchFired {
		sc.intMu.Lock() // wait for a firing still under way
		//lint:ignore SA2001 an empty critical section: the wait is the point
		sc.intMu.Unlock()
	}
}

// fireIfOverdue interrupts the borrower when its watch started at or
// before tick before, and reports whether a watch is running.
func (sc *ServerConn) fireIfOverdue(before int64) bool {
	t := sc.watch.Load()
	if t == 0 {
		return false
	}
	if t > 0 && t <= before {
		sc.intMu.Lock()
		if sc.watch.CompareAndSwap(t, watchFired) {
			sc.Conn.SetReadDeadline(time.Unix(1, 0))
			sc.interrupted.Store(true)
		}
		sc.intMu.Unlock()
	}
	return true
}

// endLoan leaves the connection as an idle one must be: no watch, no
// deadline. Its reads and writes stay as the borrower left them: an event
// loop's next loan finds them not waiting (NoWait) already, and every
// lending path to a borrower that waits makes them wait again (Wait).
func (sc *ServerConn) endLoan() {
	// A watch that fired, or is firing (its CAS is done, its deadline
	// perhaps not yet: Swap sees watchFired), is waited for under intMu;
	// one that has not fired cannot any more. Without either, and with no
	// Interrupt set (the borrower's interrupters have stopped: the loan is
	// over), there is nothing to clear and no lock to take.
	if sc.watch.Swap(0) == watchFired || sc.interrupted.Load() {
		sc.ClearInterrupt()
	}
}

// NoWait makes Rd's reads return protocol.ErrWouldBlock when the socket
// has nothing to read, instead of waiting, for a borrower that waits for
// readiness itself (an event loop, with FD). A plain connection's Rd and
// Wr then read and write the descriptor with raw system calls, past Go's
// descriptor lock and deadlines (the borrower owns the loan: nothing else
// reads, writes or closes the socket meanwhile), and a Flush that would
// block keeps the rest; under TLS only the socket's reads stop waiting
// (crypto/tls fails a connection for good on a write error). It
// reports false, changing nothing, for a connection that can do neither.
// Wait makes reads wait again; the pool calls it before it lends the
// connection to a borrower other than an event loop (see endLoan).
func (sc *ServerConn) NoWait() bool {
	if sc.noWait {
		return true // (left so by the last loan: see endLoan; inlined)
	}
	return sc.setNoWait()
}

// setNoWait is NoWait for a connection not yet made so.
func (sc *ServerConn) setNoWait() bool {
	if !sc.TLS {
		fd := sc.FD()
		if fd < 0 || !sockio.Available {
			return false
		}
		if sc.rawRd == nil || sc.rawRd.FD != fd {
			sc.rawRd = &sockio.Raw{FD: fd}
		}
		if sc.Wr == nil {
			sc.Wr = protocol.NewWriter(sc.Conn)
		}
		sc.Rd.SetSource(sc.rawRd)
		sc.Wr.SetDest(sc.rawRd) // a Flush that would block keeps the rest
	} else if !sockio.SetNoWait(sc.raw, true) {
		return false
	}
	sc.noWait = true
	return true
}

// Wait undoes NoWait.
func (sc *ServerConn) Wait() {
	if !sc.noWait {
		return
	}
	if sc.TLS {
		sockio.SetNoWait(sc.raw, false)
	} else {
		sc.Rd.SetSource(sc.Conn)
		sc.Wr.SetDest(sc.Conn)
	}
	sc.noWait = false
}

// FD returns the socket's descriptor, for a borrower's readiness waits
// (see NoWait), or -1. The descriptor stays the connection's: the
// borrower must not close it, and a registration it leaves in an event
// set after the loan (see EventSet) must be one that reports nothing until
// renewed (a one-shot that fired); the socket's close removes it.
func (sc *ServerConn) FD() int {
	if fd, ok := sockio.FD(sc.raw); ok {
		return fd
	}
	return -1
}

// Pool returns the pool that owns sc.
func (sc *ServerConn) Pool() *Pool { return sc.pool }

// ID is a process-unique number for logs and the admin console.
func (sc *ServerConn) ID() uint64 { return sc.id }

// Created returns when the connection was opened.
func (sc *ServerConn) Created() time.Time { return sc.created }

// LocalAddr returns the local address of the connection.
func (sc *ServerConn) LocalAddr() net.Addr { return sc.raw.LocalAddr() }

// alive reports whether an idle connection can be handed out.
func (sc *ServerConn) alive() bool {
	if sc.Rd.Buffered() != 0 {
		return false
	}
	sc.pool.looks.Add(1)
	return sc.peeker.Idle()
}

// closeWait bounds the wait for a closed server connection's backend to
// exit.
const closeWait = 500 * time.Millisecond

// close says goodbye and closes the socket. The Terminate is best effort.
func (sc *ServerConn) close() {
	sc.Wait() // a destroyed loan skips endLoan: the close waits for the backend
	sc.raw.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := sc.Conn.Write(protocol.AppendTerminate(nil)); err == nil {
		// Wait for the server to close its end: the backend has then
		// exited and freed its slot, so a cap counting this connection
		// (max_db_connections, a fleet share) lets another one open only
		// once the server would accept it. A backend busy with a query
		// reads the Terminate only after it; that wait is cut short.
		sc.raw.SetReadDeadline(time.Now().Add(closeWait))
		var b [256]byte
		for {
			if _, err := sc.raw.Read(b[:]); err != nil {
				break
			}
		}
	}
	sc.Conn.Close()
	sc.Rd.Release()
	sc.Wr.Release()
}

// StmtCache is the set of prepared statements pgferry created on one server
// connection, keyed by the statement's ID, with LRU order. An ID names one
// statement's content for the life of the process and is never reused (the
// router's prepared.Registry hands them out), so a cached ID cannot stand
// for another statement. Lookups of known statements do not allocate.
type StmtCache struct {
	max        int
	m          map[uint64]*stmtEntry
	head, tail *stmtEntry // head is most recently used
	// n is len(m), kept for Count: written by the borrower as m changes,
	// read by anyone (the admin console's SHOW SERVERS).
	n atomic.Int32
}

type stmtEntry struct {
	key        uint64
	prev, next *stmtEntry
}

// Len reports the number of cached statements.
func (c *StmtCache) Len() int { return len(c.m) }

// Count reports the number of cached statements, as the borrower last
// changed it. Unlike the other methods it is safe for concurrent use.
func (c *StmtCache) Count() int { return int(c.n.Load()) }

// Has reports whether key is prepared and marks it most recently used.
func (c *StmtCache) Has(key uint64) bool {
	e, ok := c.m[key]
	if ok {
		c.moveFront(e)
	}
	return ok
}

// Add records key as prepared. When the cache is full it evicts the least
// recently used statement and returns its key so the caller can Close it on
// the server.
func (c *StmtCache) Add(key uint64) (evicted uint64, didEvict bool) {
	if c.m == nil {
		c.m = make(map[uint64]*stmtEntry)
	}
	if e, ok := c.m[key]; ok {
		c.moveFront(e)
		return 0, false
	}
	if c.max > 0 && len(c.m) >= c.max && c.tail != nil {
		old := c.tail
		c.unlink(old)
		delete(c.m, old.key)
		evicted, didEvict = old.key, true
	}
	e := &stmtEntry{key: key}
	c.m[key] = e
	c.pushFront(e)
	c.n.Store(int32(len(c.m)))
	return evicted, didEvict
}

// Restore records key as prepared again, as the least recently used,
// without evicting anything: for undoing an eviction whose Close the server
// never ran, after the Add it made room for was undone (Remove). A key
// already cached stays where it is.
func (c *StmtCache) Restore(key uint64) {
	if c.m == nil {
		c.m = make(map[uint64]*stmtEntry)
	}
	if _, ok := c.m[key]; ok {
		return
	}
	e := &stmtEntry{key: key, prev: c.tail}
	c.m[key] = e
	if c.tail != nil {
		c.tail.next = e
	} else {
		c.head = e
	}
	c.tail = e
	c.n.Store(int32(len(c.m)))
}

// Remove forgets key.
func (c *StmtCache) Remove(key uint64) {
	if e, ok := c.m[key]; ok {
		c.unlink(e)
		delete(c.m, key)
		c.n.Store(int32(len(c.m)))
	}
}

// Drain appends the cached statements to dst, most recently used first,
// and forgets them: for a DISCARD ALL or DEALLOCATE ALL that may yet fail,
// after which Restore, in the order Drain gave, puts them back.
func (c *StmtCache) Drain(dst []uint64) []uint64 {
	for e := c.head; e != nil; e = e.next {
		dst = append(dst, e.key)
	}
	c.Clear()
	return dst
}

// Clear forgets everything (after DISCARD ALL or DEALLOCATE ALL).
func (c *StmtCache) Clear() {
	clear(c.m)
	c.head, c.tail = nil, nil
	c.n.Store(0)
}

// SetMax sets the LRU capacity; 0 means unbounded.
func (c *StmtCache) SetMax(n int) { c.max = n }

func (c *StmtCache) moveFront(e *stmtEntry) {
	if c.head == e {
		return
	}
	c.unlink(e)
	c.pushFront(e)
}

func (c *StmtCache) pushFront(e *stmtEntry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *StmtCache) unlink(e *stmtEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
