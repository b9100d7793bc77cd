//go:build linux && !pgferry_nopark

// The parker's sweeps: asking idle sessions to park (sweep), and those
// that just logged in sooner (admitted, sweepYoung); and giving memory back
// to the OS once a wave of parking is over (releaseState, releaser).

package router

import (
	"runtime"
	"runtime/debug"
	"syscall"
	"time"
)

// sweepEvery is how often idle sessions are asked to park; a session must
// have been idle through a whole interval first.
const sweepEveryMS = 1000

// youngIdle is how long a session that has just logged in may sit idle
// before it is asked to park (see sweepYoung); youngSlack how much later
// the loop may look, to look at many at once.
const (
	youngIdle  = 100 * time.Millisecond
	youngSlack = 50 * time.Millisecond
)

// youngSession is a session that logged in at a time.
type youngSession struct {
	ss *session
	at mono
}

// sweep asks sessions idle since before the previous sweep to park, and
// sees whether a wave of parking is over (see releaseState).
func (p *parker) sweep() {
	now := p.tick.Add(1)
	if p.srv.isDraining() {
		p.expireLogins() // (Shutdown waits for them)
		return
	}
	asked := p.settleLooped(now)
	p.srv.eachSession(func(ss *session) {
		if ss.admin || ss.has(stParked|stWaiting) || now-ss.activeTick.Load() < 2 {
			return
		}
		ss.mu.Lock()
		idle := ss.server == nil && !ss.pumpRunningLocked()
		ss.mu.Unlock()
		if idle {
			ss.flags.Or(evPark)
			ss.wake()
			asked++
		}
	})
	asked += p.youngAsked // a wave is not over while its last sessions are asked
	p.youngAsked = 0
	if p.release.next(asked, p.count(), p.logins.Load(), monoNow()) {
		select {
		case p.releases <- struct{}{}:
		default: // one is under way
		}
	}
}

// releaser returns memory to the OS when the loop asks, until close. It is
// a goroutine of its own: a collection takes a while, and the loop must
// go on resuming sessions meanwhile.
func (p *parker) releaser() {
	defer close(p.releaserDone)
	for range p.releases {
		// Two collections: the first moves what sync.Pools hold (the
		// burst's login states, record and frame buffers) to their victim
		// caches, where it is still live; the second, which FreeOSMemory
		// runs before returning memory, drops it.
		runtime.GC()
		debug.FreeOSMemory()
	}
}

// releaseState decides when a wave of parking is over, so that the memory
// the wave's sessions held (their logins' garbage, goroutines, pooled
// buffers) goes back to the OS at once: the runtime's background scavenger
// would keep most of it, as it only returns memory above the heap goal,
// and slowly; and an idle pooler never needs the collection that would
// free the garbage of the wave's last logins.
//
// A wave is over when a sweep asks nobody to park and at least
// releaseAfterParking more sessions are parked than at the last release.
// Memory goes back then, if no login arrived since the previous sweep (the
// burst is over), or after releaseQuietSweeps such sweeps if logins keep
// trickling in; and not more often than every releaseEvery.
type releaseState struct {
	parkedAtRelease int    // parked at the last release, or fewer since
	logins          uint64 // logins counted at the previous sweep
	quiet           int    // sweeps in a row past the threshold that asked nobody
	last            mono   // the last release (0: none yet)
}

const (
	releaseAfterParking = 256
	releaseQuietSweeps  = 5
	releaseEvery        = 10 * time.Second
)

// next takes one sweep's figures (sessions it asked to park, sessions
// parked, logins so far) and reports whether to release memory now.
func (r *releaseState) next(asked, parked int, logins uint64, now mono) bool {
	r.parkedAtRelease = min(r.parkedAtRelease, parked)
	arrived := logins != r.logins
	r.logins = logins
	if asked > 0 || parked-r.parkedAtRelease < releaseAfterParking {
		r.quiet = 0
		return false
	}
	r.quiet++
	if arrived && r.quiet < releaseQuietSweeps {
		return false
	}
	if r.last != 0 && now.Sub(r.last) < releaseEvery {
		return false
	}
	r.parkedAtRelease, r.quiet, r.last = parked, 0, now
	return true
}

// admitted notes a session that has just logged in, for sweepYoung, and
// marks it young until it reads its first request (see serve).
func (p *parker) admitted(ss *session) {
	p.logins.Add(1)
	ss.flags.Or(stYoung)
	p.mu.Lock()
	if p.running && !p.failed {
		p.young = append(p.young, youngSession{ss, monoNow()})
		if len(p.young) == 1 {
			p.oldestYoung.Store(int64(p.young[0].at))
			// The loop may be waiting for its next sweep: it must look
			// at this one sooner.
			syscall.Write(p.nudge[1], []byte{0})
		}
	}
	p.mu.Unlock()
}

// sweepYoung asks sessions that logged in youngIdle ago or more and have
// sent nothing since (stYoung) to park if they are idle, once each,
// without waiting for a whole sweep interval. A burst of clients that
// connect and then wait (a connection pool filling up, a fleet of
// functions starting) would otherwise keep a goroutine each for a second
// or two, and Go keeps a goroutine's descriptor for good once that many
// have run at once. A session that has sent a request is left to the
// regular sweep, and one that ended (most, for clients that connect per
// query) is not touched. The young list is in admission order: only its
// due head is looked at.
func (p *parker) sweepYoung(now mono) {
	p.mu.Lock()
	n := 0
	for n < len(p.young) && now.Sub(p.young[n].at) >= youngIdle {
		n++
	}
	if n == 0 {
		p.mu.Unlock()
		return
	}
	p.due = append(p.due[:0], p.young[:n]...)
	rest := copy(p.young, p.young[n:])
	clear(p.young[rest:]) // no session kept alive past the list's end
	p.young = p.young[:rest]
	if rest > 0 {
		p.oldestYoung.Store(int64(p.young[0].at))
	} else {
		p.oldestYoung.Store(0)
		if cap(p.young) > maxKeptYoung {
			p.young = nil // a burst's worth, not kept for good
		}
	}
	p.mu.Unlock()
	if p.srv.isDraining() {
		clear(p.due)
		return
	}
	for _, y := range p.due {
		ss := y.ss
		if !ss.has(stYoung) || ss.has(stParked|stWaiting|stEnded) {
			continue
		}
		ss.mu.Lock()
		idle := !ss.stopping && ss.server == nil && !ss.pumpRunningLocked()
		ss.mu.Unlock()
		if idle {
			ss.flags.Or(evPark)
			ss.wake()
			p.youngAsked++
		}
	}
	clear(p.due)
	if cap(p.due) > maxKeptYoung {
		p.due = nil
	}
}

// maxKeptYoung bounds the young lists' capacity kept after a burst.
const maxKeptYoung = 1024
