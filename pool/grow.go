// Growing the pool: dials for waiters within the size, the reserve and
// the shared caps, their outcome, and the back-off after failed logins.

package pool

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// growLocked starts dials while waiters outnumber connections being dialed
// and the limits allow.
func (p *Pool) growLocked() {
	for p.waiters.n > p.dialing && !p.closed && !p.paused && !p.retryArmed && !p.loginRetryLocked() {
		limit := p.cfg.Size
		if p.reserve {
			limit += p.cfg.ReserveSize
		}
		if p.total >= limit {
			if p.cfg.ReserveSize > 0 && !p.reserve {
				p.scheduleReserveLocked()
			}
			return
		}
		if l := takeCaps(p.cfg.DBLimit, p.cfg.UserLimit); l != nil {
			p.askRoomLocked(l, limit)
			return
		}
		p.total++
		p.dialing++
		p.wg.Add(1)
		go p.dialOne(p.gen)
	}
}

// scheduleReserveLocked arms a check that enables the reserve pool once the
// oldest waiter has waited ReserveTimeout.
func (p *Pool) scheduleReserveLocked() {
	w := p.waiters.head
	if w == nil || p.reserveArmed {
		return
	}
	wait := p.cfg.ReserveTimeout - p.now().Sub(w.enqueued)
	if wait <= 0 {
		p.reserve = true
		p.growLocked()
		return
	}
	// The janitor re-checks every tick; a timer gives finer resolution.
	p.reserveArmed = true
	p.wg.Add(1)
	p.reserveTimer = time.AfterFunc(wait, func() {
		defer p.wg.Done()
		p.mu.Lock()
		defer p.mu.Unlock()
		p.reserveArmed = false
		if h := p.waiters.head; h != nil && p.now().Sub(h.enqueued) >= p.cfg.ReserveTimeout && !p.reserve {
			p.reserve = true
		}
		// Dial with the reserve, or, if the waiter the check was armed for
		// has left, arm it again for the one oldest now.
		p.growLocked()
	})
}

// dialOne opens a connection for the pool as of generation gen (see
// Reconnect) and hands it to a waiter or parks it idle.
func (p *Pool) dialOne(gen uint64) {
	defer p.wg.Done()
	start := p.now()
	sc, err := p.dial(p.ctx, &p.cfg.Dial)
	if p.cfg.Hooks != nil {
		p.cfg.Hooks.LoginObserved(p.now().Sub(start), err)
	}
	if err == nil {
		sc.pool = p
		sc.id = connIDs.Add(1)
		sc.Stmts.SetMax(p.cfg.MaxPrepared)
	}
	p.mu.Lock()
	p.dialing--
	if gen != p.gen {
		// Begun before a Reconnect: a connection it opened is in conns
		// (CloseNeeded counts it there) from here until it is closed.
		p.staleDials--
	}
	p.stat.DialCount++
	if err != nil {
		p.total--
		p.stat.DialFailures++
		var pe *PasswordError
		if !errors.As(err, &pe) {
			p.loginErr, p.loginAt = err, p.now()
		}
		if Transient(err) && p.outageSince.IsZero() {
			p.outageSince = p.now()
		}
		if p.holds(err) && !p.closed {
			// The server is restarting, failing over or briefly
			// unreachable: queued clients keep waiting (up to their
			// query_wait_timeout) while the dial is retried.
			p.armRetryLocked()
			p.mu.Unlock()
			p.cfg.DBLimit.give()
			p.cfg.UserLimit.give()
			return
		}
		// Every client queued now gets the error (PgBouncer relays the
		// server's login error to all waiting clients).
		var failed []*waiter
		for w := p.waiters.pop(); w != nil; w = p.waiters.pop() {
			failed = append(failed, w)
		}
		p.mu.Unlock()
		p.cfg.DBLimit.give()
		p.cfg.UserLimit.give()
		for _, w := range failed {
			w.send(acquireResult{err: err})
		}
		return
	}
	p.loginErr = nil
	p.retryDelay = 0
	if !p.outageSince.IsZero() && p.cfg.Hooks != nil {
		p.cfg.Hooks.OutageEnded(p.now().Sub(p.outageSince))
	}
	p.outageSince = time.Time{}
	sc.gen = gen
	sc.slot = len(p.conns)
	p.conns = append(p.conns, sc)
	if p.closed {
		p.total--
		p.mu.Unlock()
		p.retire(sc)
		return
	}
	// A login that began before a Reconnect (to a host a failover has
	// since moved, with old credentials) closes, as the connections open
	// then do when released; so does one that ended over a cap lowered
	// meanwhile (SetMax counted it and leaves it to its release). Waiters
	// get a new login, as after a Destroy.
	if sc.gen != p.gen {
		p.total--
		p.growLocked()
		p.mu.Unlock()
		p.retire(sc)
		return
	}
	if db, user := p.cfg.DBLimit.claimExcess(), p.cfg.UserLimit.claimExcess(); db || user {
		p.total--
		p.growLocked()
		p.mu.Unlock()
		if !db {
			p.cfg.DBLimit.startClose()
		}
		if !user {
			p.cfg.UserLimit.startClose()
		}
		p.retireMarked(sc)
		return
	}
	parked := p.putLocked(sc, p.now(), true) // logged in just now
	p.mu.Unlock()
	if parked {
		p.parked()
	}
}

// armRetryLocked schedules the next dial after a transient failure, with a
// backoff that doubles from RetryMin to RetryMax. The timer's goroutine
// belongs to wg; Close stops it.
func (p *Pool) armRetryLocked() {
	if p.retryArmed {
		return
	}
	p.retryDelay = min(max(2*p.retryDelay, p.cfg.RetryMin), p.cfg.RetryMax)
	p.retryArmed = true
	p.stat.Retries++
	p.wg.Add(1)
	p.retryTimer = time.AfterFunc(p.retryDelay, func() {
		defer p.wg.Done()
		p.mu.Lock()
		defer p.mu.Unlock()
		p.retryArmed = false
		p.growLocked()
	})
}

// loginRetryLocked reports whether no login may start yet: one failed
// within LoginRetry (server_login_retry) in a way waiting would not cure,
// and connections that work are open, so waiters wait for them. With none
// open a dial goes ahead and tells queued clients the error (new ones fail
// fast in the meantime: acquireOnce). mu is held.
func (p *Pool) loginRetryLocked() bool {
	return p.loginErr != nil && p.total > 0 && !p.holds(p.loginErr) && p.now().Sub(p.loginAt) < p.cfg.LoginRetry
}

// holds reports whether clients keep waiting after a dial failed with err:
// a transient failure within HoldTimeout of the outage's start. mu is held.
func (p *Pool) holds(err error) bool {
	return p.cfg.HoldTimeout > 0 && Transient(err) &&
		(p.outageSince.IsZero() || p.now().Sub(p.outageSince) < p.cfg.HoldTimeout)
}

// Transient reports whether a failed server login is one that waiting may
// cure: the connection refused, reset or timed out (a server restarting or
// failing over), PostgreSQL starting up or shutting down (57P03, 57P01),
// or no writable host yet (a standby not yet promoted). Authentication and
// configuration errors are not: clients fail fast on them for
// server_login_retry, as with PgBouncer. Nor is a *PasswordError, even
// one that timed out: the server answered, and the password source (an
// Entra ID token endpoint) keeps its own backoff.
func Transient(err error) bool {
	if _, ok := errors.AsType[*PasswordError](err); ok {
		// No password could be had (an Entra ID token endpoint failing or
		// not answering within the dial's deadline): the server was never
		// asked, and the source keeps its own backoff. Holding clients
		// for it would keep them past server_connect_timeout, told nothing.
		return false
	}
	var se *ServerError
	if errors.As(err, &se) {
		switch se.Code {
		case "57P03", "57P01", "57P02": // cannot_connect_now, admin_shutdown, crash_shutdown
			return true
		}
		return false
	}
	if errors.Is(err, ErrReadOnlyServer) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
