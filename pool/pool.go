package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgferry/pgferry/protocol"
)

// ErrPoolClosed is returned by Acquire on a closed pool.
var ErrPoolClosed = errors.New("pool is closed")

// ErrWaitTimeout is returned by AcquireUntil when its time limit passed
// before a connection was free.
var ErrWaitTimeout = errors.New("query_wait_timeout")

// ErrWaitStopped is returned by AcquireWhile when its stop channel
// delivered before a connection was free.
var ErrWaitStopped = errors.New("wait for a server connection stopped")

// LoginFailingError is returned while server logins are failing, within
// server_login_retry of the last failure, so clients fail fast instead of
// queueing behind a broken server.
type LoginFailingError struct{ Err error }

func (e *LoginFailingError) Error() string {
	return "server login has been failing: " + e.Err.Error()
}
func (e *LoginFailingError) Unwrap() error { return e.Err }

// Config sizes and times one pool.
type Config struct {
	// Database and User name the pool (the client-facing database name and
	// the server login user); Dial says how to reach the server.
	Database, User string
	Dial           DialConfig
	// Size is the number of server connections the pool may hold;
	// ReserveSize more are allowed once a waiter has waited ReserveTimeout.
	// A ReserveTimeout of 0 allows none, as reserve_pool_timeout = 0
	// disables PgBouncer's reserve pool.
	Size, MinSize, ReserveSize int
	ReserveTimeout             time.Duration
	// Lifetime closes released connections older than this (0: never;
	// UseOnce: each as its first loan ends); IdleTimeout closes
	// connections idle longer than this (0: never).
	Lifetime, IdleTimeout time.Duration
	// LoginRetry is how long after a failed login new clients fail fast,
	// when the failure is one that waiting would not cure (authentication,
	// configuration), and no new login is tried while connections that
	// work are open (server_login_retry). Transient failures (see Transient) are retried with a
	// backoff from RetryMin, doubling up to RetryMax (defaults 50 ms and
	// 500 ms), while clients wait in the queue. A *PasswordError (no
	// password could be had) is not cached: the PasswordSource fails fast
	// on its own and recovers sooner.
	LoginRetry         time.Duration
	RetryMin, RetryMax time.Duration
	// HoldTimeout is how long from the start of an outage (the first
	// transient failure since the last successful dial) queued clients
	// keep waiting while dials are retried; 0 fails them at once, like any
	// other failure (replica pools: a read falls back to the primary
	// rather than wait for a replica).
	HoldTimeout time.Duration
	// MaxPrepared is the per-connection prepared statement LRU size.
	MaxPrepared int
	// CheckDelay and CheckQuery are server_check_delay and
	// server_check_query: a connection idle at least CheckDelay runs
	// CheckQuery ("" sends an empty query, as PgBouncer does) before it is
	// lent, and is replaced if that fails or takes longer than
	// CheckTimeout (default 5 s). CheckDelay 0 turns the check off;
	// CheckAlways checks before every loan (server_check_delay = 0).
	CheckDelay, CheckTimeout time.Duration
	CheckQuery               string
	// DBLimit and UserLimit are shared caps across pools (nil: none).
	DBLimit, UserLimit *Limit
	// Hooks receive distributions; nil is fine.
	Hooks Hooks
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// DialFunc replaces Dial (tests); nil means Dial.
	DialFunc func(ctx context.Context, cfg *DialConfig) (*ServerConn, error)
}

// Hooks observe a pool's distributions. Implementations must be cheap and
// safe for concurrent use.
type Hooks interface {
	// WaitObserved reports how long an Acquire waited for a connection:
	// until one was handed to it (not until its goroutine ran), or until
	// it gave up.
	WaitObserved(d time.Duration)
	// LoginObserved reports a server login attempt and its outcome.
	LoginObserved(d time.Duration, err error)
	// OutageEnded reports that a dial succeeded after transient failures
	// (a restart, crash or failover) that began d earlier.
	OutageEnded(d time.Duration)
}

// Stat is a snapshot of a pool. Counters are cumulative.
type Stat struct {
	Active, Idle, Dialing, Total, Waiting int
	MaxWait                               time.Duration
	AcquireCount, WaitCount               uint64
	WaitTime                              time.Duration
	DialCount, DialFailures               uint64
	Destroyed                             uint64
	// Retries counts dials retried after a transient failure; Checks the
	// server_check_query runs; Looks the looks at an idle connection's
	// socket before a loan (a system call each: see TryAcquireChecked).
	Retries, Checks, Looks uint64
	Paused                 bool
}

var connIDs atomic.Uint64

// Pool lends server connections for one (database, user).
type Pool struct {
	cfg  Config
	now  func() time.Time
	dial func(ctx context.Context, cfg *DialConfig) (*ServerConn, error)

	ctx    context.Context // canceled by Close; bounds dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // dials and the janitor

	// mu guards everything below. Nothing slow (I/O, dialing) runs under it.
	mu           sync.Mutex
	idle         []*ServerConn // LIFO: most recently released last
	conns        []*ServerConn // every open connection, lent or idle (see ServerConn.slot)
	waiters      waitQueue
	active       int
	dialing      int
	total        int  // active + idle + dialing
	evicting     int  // idle connections of other pools being closed for this one's waiters (askRoomLocked)
	fed          bool // a connection was parked under a cap this pool starves under since its last look (evict)
	gen          uint64
	staleDials   int // dials in flight begun before the last Reconnect (their gen is old)
	closed       bool
	paused       bool
	resumed      chan struct{} // closed on Resume
	loginErr     error
	loginAt      time.Time
	reserve      bool // reserve connections currently allowed
	reserveArmed bool // a reserve check timer is pending
	reserveTimer *time.Timer
	// retryArmed is set while a transient dial failure's backoff runs:
	// no dial starts until retryTimer fires. retryDelay is the next backoff.
	retryArmed bool
	retryTimer *time.Timer
	retryDelay time.Duration
	// outageSince is when the current run of transient dial failures
	// began; zero while the last dial succeeded.
	outageSince time.Time
	stat        Stat // cumulative counters

	// looks counts the looks at idle connections' sockets (alive), taken
	// outside mu.
	looks atomic.Uint64
	// coarse is the janitor's clock (Unix nanoseconds, updated every
	// second), so lending a connection reads no clock to decide whether it
	// needs a check.
	coarse atomic.Int64
}

// New creates a pool and starts its janitor, which keeps MinSize
// connections open and retires idle or old ones. Close stops it.
func New(cfg Config) *Pool {
	if cfg.Size <= 0 {
		cfg.Size = 1
	}
	if cfg.ReserveTimeout <= 0 {
		cfg.ReserveSize = 0
	}
	p := &Pool{cfg: cfg, now: cfg.Now, dial: cfg.DialFunc}
	if p.now == nil {
		p.now = time.Now
	}
	if p.dial == nil {
		p.dial = Dial
	}
	if p.cfg.RetryMin <= 0 {
		p.cfg.RetryMin = 50 * time.Millisecond
	}
	if p.cfg.RetryMax < p.cfg.RetryMin {
		p.cfg.RetryMax = max(p.cfg.RetryMin, 500*time.Millisecond)
	}
	if p.cfg.CheckTimeout <= 0 {
		p.cfg.CheckTimeout = 5 * time.Second
	}
	p.coarse.Store(p.now().UnixNano())
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for _, l := range []*Limit{cfg.DBLimit, cfg.UserLimit} {
		if l != nil {
			l.register(p)
		}
	}
	p.wg.Add(1)
	go p.janitor(janitorInterval)
	return p
}

// Database returns the pool's database name.
func (p *Pool) Database() string { return p.cfg.Database }

// User returns the pool's user name.
func (p *Pool) User() string { return p.cfg.User }

// Config returns the pool's configuration.
func (p *Pool) Config() Config { return p.cfg }

// Acquire lends a server connection, waiting in FIFO order when none is
// free. It returns ctx's error when ctx ends first (callers use a context
// with the query wait timeout), a *ServerError or *LoginFailingError when
// server logins fail, or ErrPoolClosed.
func (p *Pool) Acquire(ctx context.Context) (*ServerConn, error) {
	return p.acquire(ctx, nil)
}

// AcquireUntil is Acquire with a time limit instead of a context: it fails
// with ErrWaitTimeout once a value arrives on expired (a timer's channel
// the caller reuses; nil: no limit). A queued client then costs no context
// and no timer of its own per wait.
func (p *Pool) AcquireUntil(expired <-chan time.Time) (*ServerConn, error) {
	return p.acquire(context.Background(), expired)
}

// AcquireWhile is AcquireUntil that also gives up, with ErrWaitStopped,
// when a value arrives on stop, which it takes (a borrower another
// goroutine may stop: a client killed while it waits). A channel, not a
// context: the borrower keeps one for all its waits, and a wait
// allocates nothing (a context per wait cost three allocations).
func (p *Pool) AcquireWhile(stop <-chan struct{}, expired <-chan time.Time) (*ServerConn, error) {
	var t try
	return p.acquireTry(context.Background(), stop, expired, &t)
}

// acquire waits until ctx ends or expired delivers.
func (p *Pool) acquire(ctx context.Context, expired <-chan time.Time) (*ServerConn, error) {
	var t try
	return p.acquireTry(ctx, nil, expired, &t)
}

// acquireTry is acquire for a borrower whose earlier tries t carries (see
// try; a ticket's request carried on to a wait: Ticket.AcquireUntil),
// which also gives up when stop delivers (nil: never).
func (p *Pool) acquireTry(ctx context.Context, stop <-chan struct{}, expired <-chan time.Time, t *try) (*ServerConn, error) {
	done := ctx.Done() // nil for Background: no select case
	for {
		sc, ready, err := p.acquireOnce(ctx, done, stop, expired, t)
		if err != nil {
			t.end()
			return nil, err
		}
		if p.lends(sc, ready, t) {
			return sc, nil
		}
		// Died while idle (server restart, idle-session timeout): discard it
		// and try again, in the same place; it never reaches a client.
		p.Destroy(sc)
		t.again = true
	}
}

// lends reports whether sc, handed to the borrower t stands for, can be
// lent to it (it works: see usable) and, if so, ends t's wait.
func (p *Pool) lends(sc *ServerConn, ready bool, t *try) bool {
	// A connection handed over as ready was never idle: it has just
	// logged in, or its last loan has just ended on ReadyForQuery
	// (ReleaseReady). A peek at its socket (a system call per loan)
	// would learn nothing its last message did not say microseconds
	// ago, and no check delay has passed.
	if (ready && p.cfg.CheckDelay != CheckAlways && sc.Rd.Buffered() == 0) || p.usable(sc, false, false) {
		if t.w != nil {
			p.hookWait(t.waited)
		}
		t.end()
		sc.Wait() // (an event loop's loan may have left it not waiting)
		return true
	}
	return false
}

// try is what one Acquire carries from a try that was handed a dead
// connection to the next: the borrower is counted once (AcquireCount,
// WaitCount, and its wait in WaitTime and the hook from when it first
// queued), and it queues again at the head, the place it was served from
// (PgBouncer serves waiters in order), not behind those who came after it.
type try struct {
	again bool // a try before was handed a dead connection
	// w is the waiter it queued with (nil: it never queued), kept from
	// one try to the next; waited is its wait up to its last grant, which
	// putLocked counted in WaitTime.
	w      *waiter
	waited time.Duration
}

// end recycles the try's waiter once the Acquire is over.
func (t *try) end() {
	if t.w != nil {
		waiters.Put(t.w)
		t.w = nil
	}
}

// CheckAlways as Config.CheckDelay checks a connection before every loan.
const CheckAlways time.Duration = -1

// UseOnce as Config.Lifetime closes each connection when its first loan
// ends (PgBouncer's server_lifetime = 0); one never lent stays open.
const UseOnce time.Duration = -1

// checkDue reports whether server_check_query must run on an idle
// connection before it is lent.
func (p *Pool) checkDue(sc *ServerConn) bool {
	d := p.cfg.CheckDelay
	return d != 0 && (d < 0 || time.Duration(p.coarse.Load()-sc.lastUsed.UnixNano()) >= d)
}

// usable reports whether an idle connection about to be lent works: its
// socket is open with nothing unread (unless fresh: nothing is buffered,
// and the socket is not looked at), and, when it has been idle for
// CheckDelay, CheckQuery ran on it (server_check_query), unless noCheck
// (the caller decided under mu that no check was due).
func (p *Pool) usable(sc *ServerConn, noCheck, fresh bool) bool {
	if fresh {
		if sc.Rd.Buffered() != 0 {
			return false
		}
	} else if !sc.alive() {
		return false
	}
	if noCheck || !p.checkDue(sc) {
		return true
	}
	if sc.Wr == nil {
		sc.Wr = protocol.NewWriter(sc.Conn)
	}
	sc.Wait() // the check's reads wait, whatever the last loan left
	sc.Conn.SetDeadline(p.now().Add(p.cfg.CheckTimeout))
	status, err := protocol.Exec(sc.Rd, sc.Wr, p.cfg.CheckQuery, nil)
	sc.Conn.SetDeadline(time.Time{})
	p.mu.Lock()
	p.stat.Checks++
	p.mu.Unlock()
	return err == nil && status == protocol.TxIdle
}

// TryAcquire lends an idle connection if one is free right now and nobody
// is queued; it never waits for a connection or dials (server_check_query
// may run on the one it lends: see TryAcquireChecked).
func (p *Pool) TryAcquire() *ServerConn { return p.tryAcquire(false, 0) }

// TryAcquireChecked is TryAcquire for a borrower that must not wait at
// all (an event loop): it lends no connection that server_check_query
// would have to check first, and returns nil then. The connection's reads
// may not wait (NoWait), as the last such borrower left them. A
// connection Vouched for at vouchedSince or later (when it is above 0) is
// lent without a look at its socket: it was in use so recently that the
// look, a system call on every loan, would learn nothing its last answer
// did not say (a server that exits in between fails the loan, as one that
// exits during it does).
func (p *Pool) TryAcquireChecked(vouchedSince int64) *ServerConn {
	return p.tryAcquire(true, vouchedSince)
}

func (p *Pool) tryAcquire(noCheck bool, vouchedSince int64) *ServerConn {
	counted := false // (a request counts once, however many dead ones it finds)
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 || p.waiters.n > 0 || p.closed || p.paused || (noCheck && p.checkDue(p.idle[n-1])) {
			if counted {
				p.stat.AcquireCount-- // lent nothing: the wait it goes on to counts it
			}
			p.mu.Unlock()
			return nil
		}
		sc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.active++
		if !counted {
			p.stat.AcquireCount++
			counted = true
		}
		p.mu.Unlock()
		// With noCheck, checkDue said no under mu just now: a tick of the
		// coarse clock since must not make the loop wait for a check.
		if p.usable(sc, noCheck, vouchedSince > 0 && sc.Vouched >= vouchedSince) {
			if !noCheck {
				sc.Wait() // (an event loop's loan may have left it not waiting)
			}
			return sc
		}
		p.Destroy(sc)
	}
}

// acquireOnce lends an idle connection or queues for one; ready reports a
// connection handed over to the queued caller as ready (see ReleaseReady).
// t carries what the Acquire's earlier tries did (see try).
func (p *Pool) acquireOnce(ctx context.Context, done, stop <-chan struct{}, expired <-chan time.Time, t *try) (sc *ServerConn, ready bool, err error) {
	p.mu.Lock()
	for p.paused && !p.closed {
		ch := p.resumed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-done:
			return nil, false, ctx.Err()
		case <-stop:
			return nil, false, ErrWaitStopped
		case <-expired:
			return nil, false, ErrWaitTimeout
		}
		p.mu.Lock()
	}
	if p.closed {
		p.mu.Unlock()
		return nil, false, ErrPoolClosed
	}
	if !t.again {
		p.stat.AcquireCount++
	}
	if n := len(p.idle); n > 0 && p.waiters.n == 0 {
		sc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.active++
		if w := t.w; w != nil {
			// Its wait, which a dead connection interrupted, ends now.
			d := max(p.now().Sub(w.enqueued), 0)
			p.stat.WaitTime += d - t.waited
			t.waited = d
		}
		p.mu.Unlock()
		return sc, false, nil
	}
	if p.loginErr != nil && p.total == 0 && !p.holds(p.loginErr) && p.now().Sub(p.loginAt) < p.cfg.LoginRetry {
		err := p.loginErr
		p.mu.Unlock()
		return nil, false, &LoginFailingError{Err: err}
	}
	w := t.w
	switch {
	case w != nil:
		// Served from the head with a dead connection: back to the head,
		// its wait going on from when it first queued (putLocked counts
		// all of it again when it serves it).
		p.stat.WaitTime -= t.waited
		p.waiters.pushFront(w)
	case t.again:
		// Lent a dead idle connection at once, ahead of whoever queued
		// since: first in the queue.
		w = waiters.Get().(*waiter)
		w.enqueued = p.now()
		p.waiters.pushFront(w)
		p.stat.WaitCount++
	default:
		w = waiters.Get().(*waiter)
		w.enqueued = p.now()
		p.waiters.push(w)
		p.stat.WaitCount++
	}
	t.w = w
	p.growLocked()
	p.mu.Unlock()

	var res acquireResult
	select {
	case res = <-w.ch:
	case <-done:
		p.abandon(w)
		return nil, false, ctx.Err()
	case <-stop:
		p.abandon(w)
		return nil, false, ErrWaitStopped
	case <-expired:
		p.abandon(w)
		return nil, false, ErrWaitTimeout
	}
	if res.sc == nil {
		p.observeWait(w)
	}
	t.waited = res.waited
	return res.sc, res.ready, res.err
}

// putLocked hands sc to the oldest waiter or parks it idle, as of now;
// ready says sc is known to be idle this instant (see ReleaseReady). sc
// is not counted as active on entry. It reports whether sc was parked:
// the caller then calls parked once it has let go of mu.
func (p *Pool) putLocked(sc *ServerConn, now time.Time, ready bool) (parked bool) {
	return p.putAgedLocked(sc, now, now, ready)
}

// putAgedLocked is putLocked for a connection last used at lastUsed.
func (p *Pool) putAgedLocked(sc *ServerConn, now, lastUsed time.Time, ready bool) (parked bool) {
	sc.lastUsed = lastUsed
	if w := p.waiters.pop(); w != nil {
		p.active++
		// now was read before the lock: a waiter queued since is served at
		// once, not in the past.
		d := max(now.Sub(w.enqueued), 0)
		p.stat.WaitTime += d
		w.send(acquireResult{sc: sc, waited: d, ready: ready})
		return false
	}
	if p.waiters.n == 0 {
		p.reserve = false
	}
	p.idle = append(p.idle, sc)
	return true
}

// parked tells the caps over the pool that one of its connections was
// parked idle (see Limit.feed). It must not be called with mu held.
func (p *Pool) parked() {
	p.cfg.DBLimit.feed()
	p.cfg.UserLimit.feed()
}

// Release returns a clean, idle connection. Connections that are too old,
// from before a Reconnect, or returned to a closed pool are closed instead.
// The next borrower's loan first checks that the connection is still alive
// (nothing unread, not closed).
func (p *Pool) Release(sc *ServerConn) { p.release(sc, false) }

// ReleaseReady is Release for a connection whose ReadyForQuery 'I' was
// read just now with nothing after it (the end of a transaction): a client
// queued for a connection gets it without the liveness check, a system call
// that could learn nothing more.
func (p *Pool) ReleaseReady(sc *ServerConn) { p.release(sc, true) }

// ReleaseReadyAt is ReleaseReady as of now, a reading of the pool's clock
// (Config.Now; time.Now by default) the caller took a moment ago: an
// event loop reads the clock once per turn and passes it to every release
// of that turn, instead of one read each.
// The connection's last use is now, so server_check_delay, the idle
// timeout and the wait a queued borrower is told it had count from it.
func (p *Pool) ReleaseReadyAt(sc *ServerConn, now time.Time) {
	sc.endLoan()
	p.releaseAged(sc, true, false, now)
}

func (p *Pool) release(sc *ServerConn, ready bool) {
	sc.endLoan()
	if !ready {
		sc.Vouched = 0 // (a loan that did not end cleanly vouches for nothing)
	}
	p.releaseAged(sc, ready, false, p.now()) // one clock read per release, outside the lock
}

// releaseAged is release as of now, for a connection whose loan has
// ended; with keepAge the connection keeps its last use (a loan that never
// used it), so server_check_delay still counts.
func (p *Pool) releaseAged(sc *ServerConn, ready, keepAge bool, now time.Time) {
	p.mu.Lock()
	expired := p.closed || sc.gen != p.gen ||
		(p.cfg.Lifetime != 0 && (p.cfg.Lifetime < 0 || now.Sub(sc.created) >= p.cfg.Lifetime)) ||
		(p.paused && p.waiters.n == 0)
	if expired {
		p.mu.Unlock()
		p.Destroy(sc)
		return
	}
	// Over a lowered cap: this connection closes, claimed under the
	// limit's lock so that concurrent releases close only the excess.
	if db, user := p.cfg.DBLimit.claimExcess(), p.cfg.UserLimit.claimExcess(); db || user {
		p.mu.Unlock()
		p.destroy(sc, db, user)
		return
	}
	p.active--
	lastUsed := now
	if keepAge {
		lastUsed = sc.lastUsed
	}
	parked := p.putAgedLocked(sc, now, lastUsed, ready) // keeps its buffers until maintain finds it idle a while
	p.mu.Unlock()
	if parked && (p.cfg.DBLimit != nil || p.cfg.UserLimit != nil) {
		p.parked() // (no call on a release under no cap)
	}
}

// Destroy closes a lent connection whose state is unknown and lets the pool
// open a replacement for waiting clients.
func (p *Pool) Destroy(sc *ServerConn) { p.destroy(sc, false, false) }

// destroy is Destroy for a connection whose close is already counted
// (startClose) in the DB limit (dbMarked) or the user limit (userMarked).
func (p *Pool) destroy(sc *ServerConn, dbMarked, userMarked bool) {
	if !dbMarked {
		p.cfg.DBLimit.startClose()
	}
	if !userMarked {
		p.cfg.UserLimit.startClose()
	}
	p.mu.Lock()
	p.active--
	p.total--
	p.stat.Destroyed++
	p.growLocked()
	background := !p.closed
	if background {
		p.wg.Add(1) // under mu with the pool open: before Close's Wait
	}
	p.mu.Unlock()
	if !background {
		p.retireMarked(sc)
		return
	}
	// The close waits for the backend to exit; the borrower need not.
	go func() {
		defer p.wg.Done()
		p.retireMarked(sc)
	}()
}

// retire closes a connection that is no longer counted and returns its
// share of the shared limits once its backend has exited.
func (p *Pool) retire(sc *ServerConn) {
	p.cfg.DBLimit.startClose()
	p.cfg.UserLimit.startClose()
	p.retireMarked(sc)
}

// retireAll retires victims at once: each close may wait for its backend.
func (p *Pool) retireAll(victims []*ServerConn) {
	for range victims {
		p.cfg.DBLimit.startClose()
		p.cfg.UserLimit.startClose()
	}
	p.retireAllMarked(victims)
}

// retireAllMarked is retireAll for connections marked with startClose.
func (p *Pool) retireAllMarked(victims []*ServerConn) {
	if len(victims) == 1 {
		p.retireMarked(victims[0])
		return
	}
	var wg sync.WaitGroup
	for _, sc := range victims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.retireMarked(sc)
		}()
	}
	wg.Wait()
}

// retireMarked is retire for a connection already marked with startClose.
// The connection stays among the open ones (conns) until its close, which
// may wait for the backend to exit, is over: CloseNeeded, which WAIT_CLOSE
// waits on, counts one from before a Reconnect until then, as PgBouncer's
// WAIT_CLOSE waits until the connections are cleared.
func (p *Pool) retireMarked(sc *ServerConn) {
	p.mu.Lock()
	sc.closing = true
	p.mu.Unlock()
	sc.close()
	p.mu.Lock()
	if i := sc.slot; i < len(p.conns) && p.conns[i] == sc {
		last := p.conns[len(p.conns)-1]
		p.conns[i], last.slot = last, i
		p.conns[len(p.conns)-1] = nil
		p.conns = p.conns[:len(p.conns)-1]
	}
	p.mu.Unlock()
	p.cfg.DBLimit.closed()
	p.cfg.UserLimit.closed()
}

// InterruptOverdue fires the watch (see ServerConn.Watch) of every lent
// connection whose borrower started it at or before tick before, and
// reports how many connections have a watch running.
func (p *Pool) InterruptOverdue(before int64) (watched int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sc := range p.conns {
		if sc.closing {
			continue // its loan is over: a watch left set is not fired into its close's wait
		}
		if sc.fireIfOverdue(before) {
			watched++
		}
	}
	return watched
}

// Drained reports whether the pool is closed and every connection it
// opened, lent ones included, is closed too (their closes over).
func (p *Pool) Drained() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed && len(p.conns) == 0
}

// closeIdle closes up to n idle connections (n < 0: all) and reports how
// many it closed.
func (p *Pool) closeIdle(n int) int {
	p.mu.Lock()
	var victims []*ServerConn
	for len(p.idle) > 0 && n != 0 {
		victims = append(victims, p.idle[0])
		p.idle = p.idle[1:]
		p.total--
		n--
	}
	p.mu.Unlock()
	p.retireAll(victims)
	return len(victims)
}

// closeIdleAsync takes up to n idle connections out of the pool and closes
// them in a goroutine of the pool's; it returns how many it took.
func (p *Pool) closeIdleAsync(n int) int {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0
	}
	k := min(n, len(p.idle))
	victims := slices.Clone(p.idle[:k])
	clear(p.idle[:k])
	p.idle = p.idle[k:]
	p.total -= k
	if k > 0 {
		p.wg.Add(1) // under mu with the pool open: before Close's Wait
	}
	p.mu.Unlock()
	if k == 0 {
		return 0
	}
	for range victims {
		p.cfg.DBLimit.startClose()
		p.cfg.UserLimit.startClose()
	}
	go func() {
		defer p.wg.Done()
		p.retireAllMarked(victims)
	}()
	return k
}

// kick lets the pool dial again after a shared limit freed up.
func (p *Pool) kick() {
	p.mu.Lock()
	p.growLocked()
	p.mu.Unlock()
}

// Reconnect makes every current connection close when next released (and
// idle ones now), so new logins pick up changed settings or credentials.
func (p *Pool) Reconnect() {
	p.mu.Lock()
	p.gen++
	p.staleDials = p.dialing // every dial in flight began before it
	p.mu.Unlock()
	p.closeIdle(-1)
}

// Pause stops lending connections: new Acquire calls wait until Resume, and
// connections are closed as they are released. It returns once no
// connection is lent out or ctx ends.
func (p *Pool) Pause(ctx context.Context) error {
	p.mu.Lock()
	if !p.paused {
		p.paused = true
		p.resumed = make(chan struct{})
	}
	p.mu.Unlock()
	p.closeIdle(-1)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		p.mu.Lock()
		done := p.active == 0 && p.dialing == 0
		p.mu.Unlock()
		if done {
			p.closeIdle(-1)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Resume ends a Pause.
func (p *Pool) Resume() {
	p.mu.Lock()
	if p.paused {
		p.paused = false
		close(p.resumed)
	}
	p.growLocked()
	p.mu.Unlock()
}

// Close fails waiting clients with ErrPoolClosed, closes idle connections
// and waits for dials in flight. Lent connections are closed as they come
// back. Close is idempotent.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.closed = true
	var failed []*waiter
	for w := p.waiters.pop(); w != nil; w = p.waiters.pop() {
		failed = append(failed, w)
	}
	if p.paused {
		p.paused = false
		close(p.resumed)
	}
	if p.reserveArmed && p.reserveTimer.Stop() {
		p.reserveArmed = false
		p.wg.Done() // the timer's function will not run
	}
	if p.retryArmed && p.retryTimer.Stop() {
		p.retryArmed = false
		p.wg.Done()
	}
	p.mu.Unlock()
	for _, w := range failed {
		w.send(acquireResult{err: ErrPoolClosed})
	}
	p.cancel()
	p.closeIdle(-1)
	p.wg.Wait()
	for _, l := range []*Limit{p.cfg.DBLimit, p.cfg.UserLimit} {
		if l != nil {
			l.unregister(p)
		}
	}
}

// Stat returns a snapshot.
func (p *Pool) Stat() Stat {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stat
	s.Looks = p.looks.Load()
	s.Active, s.Idle, s.Dialing, s.Total, s.Waiting = p.active, len(p.idle), p.dialing, p.total, p.waiters.n
	s.Paused = p.paused
	if h := p.waiters.head; h != nil {
		s.MaxWait = p.now().Sub(h.enqueued)
	}
	return s
}

// String names the pool for logs.
func (p *Pool) String() string { return fmt.Sprintf("%s/%s", p.cfg.Database, p.cfg.User) }
