//go:build linux && !pgferry_nopark

package router

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/internal/epoll"
)

// parker holds idle client sessions without a goroutine. A goroutine
// parked in a read keeps its stack (8 KiB once growStack has run; the
// garbage collector halves a stack only while a quarter of it is unused),
// which was half of what an idle client cost. A session that has been idle
// for a full sweep interval instead registers its socket in a private
// epoll set (one-shot) and its goroutine exits; the first byte (or EOF)
// from the client, a wake (a notification, shutdown) or a kill starts a
// fresh goroutine that carries on where the old one left off (with
// relay_loop on, the loop serves the first byte of a session it can
// serve itself: adopt). Busy clients
// do not park: the sweep only picks sessions that sent nothing for a second
// or more, and a session that has logged in and sent no request yet is
// asked once, youngIdle after its login, if it is idle then (sweepYoung).
// A session parked
// with client_idle_timeout armed gets a timer that resumes it when due. A
// TLS session parks on the socket TLS runs over, once tlsHoldsInput found
// nothing left in the TLS layer.
//
// The parker's goroutine (loop) waits on the epoll set, sweeps once a
// second and looks at young sessions as they come due; a login nudges it
// through a pipe in the set when the young list was empty, and
// Server.Shutdown stops it through another.
type parker struct {
	srv  *Server
	once sync.Once
	epfd int
	pipe [2]int // loop's stop signal: close writes to pipe[1]
	// nudge wakes the loop when a session is admitted to an empty young
	// list (admitted writes to nudge[1]), so its wait is recomputed.
	nudge [2]int
	done  chan struct{}
	tick  atomic.Uint32 // sweeps so far; sessions record it when active

	// release decides when memory goes back to the OS (see sweep); loop
	// only. releases asks the releaser goroutine to return it, and
	// releaserDone is closed when that goroutine ends; logins counts the
	// sessions admitted.
	release      releaseState
	releases     chan struct{}
	releaserDone chan struct{}
	logins       atomic.Uint64
	// loopLoginsDone counts the logins the relay loop saw through, and
	// loginHandoffs those it handed to a goroutine (looplogin_linux.go).
	loopLoginsDone, loginHandoffs atomic.Uint64
	// loopAccepts counts the clients the loop accepted itself (acceptOn).
	loopAccepts atomic.Uint64
	// listeners are the loop-mode listeners the loop accepts on or did
	// (see takeListener); guarded by mu.
	listeners []*rawListener
	// due is the loop's slice of young sessions being looked at (see
	// sweepYoung), and youngAsked how many it asked to park since the last
	// sweep.
	due        []youngSession
	youngAsked int
	// settling is the loop's slice of idle sessions of the relay loop
	// being parked (see settleLooped).
	settling []*session
	// granting is the loop's slice of sessions posted to grants (see
	// serveGrants), expired its slice of queued sessions past
	// query_wait_timeout (see expireQueuedLocked).
	granting, expired []*session
	// loopWaiting is set while the loop waits in epoll: a grant posted
	// then nudges it; one posted while it works is seen before it waits.
	loopWaiting atomic.Bool
	// grantsPosted is set with a post to grants (under mu) and cleared as
	// serveGrants takes them: a turn with none takes no lock for them.
	grantsPosted atomic.Bool
	// oldestYoung is young[0].at, or 0 while young is empty: set under mu
	// with young, read by the loop's turn without it.
	oldestYoung atomic.Int64
	// turnNow is the clock the loop read as its turn began (see clock),
	// and turnWall the same reading as a time.Time, for the pool
	// (releaseServer); turnEvents, the events of the socket event a
	// session of the loop is turned for (queuedClientSpoke tells a hang-up
	// by them).
	turnNow    mono
	turnWall   time.Time
	turnEvents uint32
	// queueings counts the waits for a server the loop made (queue),
	// queuedReads the reads of what queued clients sent meanwhile
	// (queuedClientSpoke), nudgeWakes the times the nudge pipe woke it,
	// serverAdds the server sockets it added to its epoll set, and
	// settles the idle sessions of the loop the sweep parked (settle),
	// whose next request the loop adopts and counts as an entry again,
	// with no hand-back in between (for tests).
	queueings, queuedReads, nudgeWakes, serverAdds, settles atomic.Uint64

	mu sync.Mutex
	// slots, freeSlots and held are the set of sessions the parker holds
	// (parkset_linux.go): parked ones, and those the relay loop serves
	// between their steps; held counts them.
	slots     []parkSlot
	freeSlots []int32
	held      int
	// grants are the sessions of the relay loop whose pool tickets were
	// granted, posted by Granted for serveGrants.
	grants []*session
	// inLoop counts the sessions in parked that the relay loop serves
	// (waiting for a socket between its steps), which are not idle.
	inLoop int
	// young are the sessions admitted and not yet looked at by sweepYoung,
	// with when, in admission order.
	young   []youngSession
	closed  bool // Shutdown is done with sessions: no more parking
	failed  bool // epoll could not be set up or failed: never park
	running bool // loop was started and close has not stopped it
}

// stopKey and nudgeKey are the epoll data of the stop and nudge pipes;
// a session's (keyLocked) is neither.
const (
	stopKey  = 0
	nudgeKey = ^uint64(0)
)

// start sets up the epoll set and the loop on first use (the first plain
// TCP session) and reports whether parking is available.
func (p *parker) start() bool {
	p.once.Do(func() {
		p.done = make(chan struct{})
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			p.failed = true
			close(p.done)
			return
		}
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			p.failed = true
			close(p.done)
			return
		}
		if err := syscall.Pipe2(p.pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
			syscall.Close(epfd)
			p.failed = true
			close(p.done)
			return
		}
		if err := syscall.Pipe2(p.nudge[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
			syscall.Close(epfd)
			syscall.Close(p.pipe[0])
			syscall.Close(p.pipe[1])
			p.failed = true
			close(p.done)
			return
		}
		stop := syscall.EpollEvent{Events: syscall.EPOLLIN}
		epoll.SetKey(&stop, stopKey)
		nudge := syscall.EpollEvent{Events: syscall.EPOLLIN}
		epoll.SetKey(&nudge, nudgeKey)
		if syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.pipe[0], &stop) != nil ||
			syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.nudge[0], &nudge) != nil {
			for _, fd := range []int{epfd, p.pipe[0], p.pipe[1], p.nudge[0], p.nudge[1]} {
				syscall.Close(fd)
			}
			p.failed = true
			close(p.done)
			return
		}
		p.epfd = epfd
		p.mu.Lock()
		p.running = true
		p.mu.Unlock()
		p.releases = make(chan struct{}, 1)
		p.releaserDone = make(chan struct{})
		go p.releaser()
		go p.loop()
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.failed
}

// loop resumes sessions whose client became readable (or serves them, with
// relay_loop on: turn, adopt) and sweeps idle ones until close.
func (p *parker) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	pw := epoll.NewWaiter(events)
	defer syscall.Close(p.epfd)
	defer pw.Release()
	defer syscall.Close(p.pipe[0])
	defer syscall.Close(p.nudge[0])
	var drain [64]byte
	rawOK := runtime.GOMAXPROCS(0) > 1 // and relay_loop is on: see epoll.Wait
	// One clock read per turn of the loop, right after the wait: the
	// waits computed from it are late by the turn's own work at most,
	// which the sweeps' slack absorbs (a busy relay loop turns once per
	// batch of events, and clock reads were a tenth of its cost).
	now := monoNow()
	lastSweep, lastBusy := now, mono(0)
	for {
		wait := sweepEveryMS - int(now.Sub(lastSweep)/time.Millisecond)
		// No lock for either look: a grant posted after this one is
		// seen, or nudges the wait (see granted); so does the first
		// session admitted to an empty young list (admitted).
		p.loopWaiting.Store(true) // before looking at grants: see granted
		if p.grantsPosted.Load() {
			wait = 0
		}
		// oldestYoung is when the oldest young session was admitted (the
		// list is in admission order), or 0: one admitted during the wait
		// is not due before the next turn's look.
		oldestYoung := mono(p.oldestYoung.Load())
		if oldestYoung != 0 {
			// Until it is due, and youngSlack more, so that under a
			// stream of logins one look takes many and the loop wakes a
			// few times a second, not once per login.
			wait = min(wait, int((youngIdle+youngSlack-now.Sub(oldestYoung))/time.Millisecond)+1)
		}
		raw := rawOK && p.loopOn() && now.Sub(lastBusy) < loopBusyHold
		if raw {
			wait = min(wait, int(loopBusyHold/time.Millisecond))
		}
		var n int
		var err error
		if raw {
			pw.Release()
			n, err = epoll.Wait(p.epfd, events, max(wait, 0), true)
		} else {
			n, err = pw.Wait(p.epfd, max(wait, 0))
		}
		p.loopWaiting.Store(false)
		// time.Now reads the wall clock as well as the monotonic one, so
		// the pool's releases in this turn need no reading of their own;
		// its wall part is a true one (server_check_delay compares it
		// with the pool's clock).
		p.turnWall = time.Now()
		now = toMono(p.turnWall)
		p.turnNow = now
		if n > 0 && rawOK && p.loopOn() {
			lastBusy = now
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			p.srv.log.Error("idle-session poller failed; idle clients keep a goroutine from now on", zap.Error(err))
			p.fail()
			return
		}
		for evs := events[:n]; len(evs) > 0; {
			var stop bool
			if evs, stop = p.serveEvents(evs, drain[:]); stop {
				return
			}
		}
		if p.grantsPosted.Load() {
			p.serveGrants()
		}
		if oldestYoung != 0 && now.Sub(oldestYoung) >= youngIdle {
			p.sweepYoung(now)
		}
		if now.Sub(lastSweep) >= sweepEveryMS*time.Millisecond {
			lastSweep = now
			p.sweep()
		}
	}
}

// serveEvents handles the events of one wait, in order, until the stop
// event (stop). A session whose turn panics is ended (turnPanicked), and
// serveEvents returns the events after its one, for the loop to go on
// with: one deferred recover per wait, not one per turn. drain is a buffer
// for emptying the nudge pipe.
func (p *parker) serveEvents(evs []syscall.EpollEvent, drain []byte) (rest []syscall.EpollEvent, stop bool) {
	// turning is the logged-in session whose turn runs, nil between turns:
	// a panic outside one (the loop's own code, or a login's recovery
	// itself) is not a session's to end.
	var turning *session
	i := 0
	defer func() {
		if turning == nil {
			return
		}
		if r := recover(); r != nil {
			p.turnPanicked(turning, r)
			rest, stop = evs[i+1:], false
		}
	}()
	for ; i < len(evs); i++ {
		key := epoll.Key(&evs[i])
		switch key {
		case stopKey:
			return nil, true
		case nudgeKey:
			p.nudgeWakes.Add(1)
			for {
				if n, _ := syscall.Read(p.nudge[0], drain); n <= 0 {
					break
				}
			}
			continue
		}
		if key&listenKeyBit != 0 {
			p.acceptOn(int(key &^ listenKeyBit))
			continue
		}
		client := key&serverKeyBit == 0
		key &^= serverKeyBit // the session's, for either of its sockets
		p.mu.Lock()
		ss := p.takeKeyLocked(key)
		p.mu.Unlock()
		switch {
		case ss == nil:
		case ss.loop != 0:
			p.turnEvents = evs[i].Events
			if ss.handshake == nil {
				turning = ss // (a login's turn recovers its own: loginTurn)
			}
			p.turn(ss, client)
			turning = nil
		case !client || evs[i].Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0:
			// A goroutine resumes it: a wake, or a client that left
			// (its goroutine reads what it sent last and ends).
			p.resume(ss)
		default:
			// A parked client spoke. adopt makes the session the loop's
			// before anything in it may panic: a panic ends it then.
			turning = ss
			adopted := p.adopt(ss)
			if adopted {
				p.turn(ss, true) // its registration fired
			}
			turning = nil
			if !adopted {
				p.resume(ss)
			}
		}
	}
	return nil, false
}

// clock is monoNow for the session's timestamps, or, while the relay loop
// serves it (on the loop's goroutine), the clock the loop read as its turn
// began: late by the turn's work at most, as PgBouncer's cached time is,
// and one clock read per turn instead of two per transaction.
func (p *parker) clock(ss *session) mono {
	if ss.loop != 0 {
		return p.turnNow
	}
	return monoNow()
}

// wall is the clock's reading as a time.Time, for the pool: the loop's
// turnWall while the relay loop serves ss (see clock), the zero Time
// otherwise (the pool reads its own).
func (p *parker) wall(ss *session) time.Time {
	if ss.loop != 0 {
		return p.turnWall
	}
	return time.Time{}
}

// fail stops parking and resumes every parked session.
func (p *parker) fail() {
	p.mu.Lock()
	p.failed = true
	p.young = nil // nobody will look at them
	p.oldestYoung.Store(0)
	rest := make([]*session, 0, p.held)
	p.eachHeldLocked(func(ss *session) { rest = append(rest, ss) })
	for _, ss := range rest {
		p.unholdLocked(ss)
	}
	p.mu.Unlock()
	for _, ss := range rest {
		p.resume(ss)
	}
	p.giveBackListeners()
}

// resume starts a goroutine for a session taken out of the parked set (a
// session the relay loop serves goes back to one: evict).
func (p *parker) resume(ss *session) {
	if ss.loop != 0 {
		p.handOn(ss) // a session or a login the relay loop serves
		return
	}
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(ss.fd), nil)
	p.releaseSlot(ss)
	ss.flags.And(^stParked)
	if ss.rare != nil && ss.rare.idleTimer != nil {
		ss.rare.idleTimer.Stop()
	}
	ss.resumed = true
	go func() {
		growStack()
		ss.run()
	}()
}

// park registers the idle session's socket and reports whether it did; the
// caller's goroutine must then return without touching the session.
func (p *parker) park(ss *session) bool {
	if !p.start() {
		return false
	}
	if ss.fd < 0 {
		return false
	}
	if !ss.idleDeadline.IsZero() {
		ss.ensureRare() // for idleTimer, before p.mu: ss.mu is never taken under it
	}
	if ss.detachable() {
		ss.detach() // or, out of descriptors, park with the conn
	}
	// The registration is done under mu: an event (or an unpark) that
	// comes at once waits for it and then finds the session in the set.
	p.mu.Lock()
	if p.closed || p.failed {
		p.mu.Unlock()
		return false
	}
	if !ss.idleDeadline.IsZero() {
		// client_idle_timeout: the socket keeps its read deadline, but
		// nothing reads while parked; a timer resumes the session when it
		// is due, and the resumed read times out at once.
		d := ss.idleDeadline.Sub(monoNow())
		if r := ss.rare; r.idleTimer == nil {
			r.idleTimer = time.AfterFunc(d, func() { p.take(ss) })
		} else {
			r.idleTimer.Reset(d)
		}
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	epoll.SetKey(&ev, p.keyLocked(ss))
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(ss.fd), &ev); err != nil {
		p.releaseSlotLocked(ss)
		if ss.rare != nil && ss.rare.idleTimer != nil {
			ss.rare.idleTimer.Stop()
		}
		p.mu.Unlock()
		return false
	}
	p.holdLocked(ss)
	p.mu.Unlock()
	p.lookAgain(ss)
	return true
}

// holdLocked puts ss in the parked set, where events, wakes and kills find
// it (the caller registered its socket under mu). mu is held; once the
// caller lets go of it, it calls lookAgain.
func (p *parker) holdLocked(ss *session) {
	p.slots[ss.slot].held = true
	p.held++
	ss.flags.Or(stParked)
}

// lookAgain follows holdLocked, without mu: a wake, a kill or a cancel of
// the request the loop queued (evCancelQueued) that came before the
// session was in the set found nothing to take, and takes it now.
func (p *parker) lookAgain(ss *session) {
	if ss.has(evWake | evKill | evCancelQueued) {
		p.unpark(ss)
	}
}

// unpark resumes a parked session for a wake, a kill or a cancel of the
// request the loop queued; it does nothing for a session that is not
// parked.
func (p *parker) unpark(ss *session) {
	if ss.has(stParked) {
		p.take(ss)
	}
}

// take resumes ss if it is in the parked set. Unlike unpark it always
// looks, so a timer that fires while park still holds mu is not lost.
func (p *parker) take(ss *session) {
	p.mu.Lock()
	ok := p.heldLocked(ss)
	if ok {
		p.unholdLocked(ss)
	}
	p.mu.Unlock()
	if ok {
		p.resume(ss)
	}
}

// count reports how many sessions are parked (idle, without a
// goroutine; not those the relay loop serves).
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held - p.inLoop
}

// close stops the loop; sessions still parked are resumed so that they can
// end (Shutdown has woken them all already). Only the first call does
// anything: the pipe's descriptors are closed once, and a second write or
// close on their numbers would hit whatever file reused them (Shutdown may
// be called twice).
func (p *parker) close() {
	p.mu.Lock()
	p.closed = true
	running := p.running
	p.running = false
	p.mu.Unlock()
	if !running {
		return
	}
	p.fail()
	syscall.Write(p.pipe[1], []byte{0})
	<-p.done
	syscall.Close(p.pipe[1])
	close(p.releases) // the loop, its only sender, has ended
	<-p.releaserDone
	p.mu.Lock()
	syscall.Close(p.nudge[1]) // under mu: admitted writes to it under mu
	p.mu.Unlock()
}
