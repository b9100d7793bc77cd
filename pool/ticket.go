package pool

import (
	"context"
	"errors"
	"runtime"
	"time"
)

// A Waker learns that the wait of a Ticket is over: a connection, or an
// error, is there for Take. Granted is called once per Ticket, from
// whichever goroutine released the connection or failed the wait,
// sometimes with the pool's lock held: it must be quick, must not block
// and must not call into the pool. It may run after the Ticket's owner
// saw the grant (Ticket.Granted) and ended the Ticket.
type Waker interface{ Granted() }

// Ticket is a place in a pool's queue taken by Enqueue, for a borrower
// that does not block while it waits (an event loop): its Waker says when
// to Take, and Cancel gives the place up. Exactly one of Take (after
// Granted; unless it returns ErrWouldWait), AcquireUntil (the borrower
// carries its request on to a wait that may block) or Cancel ends it.
// The zero Ticket is none.
type Ticket struct {
	p *Pool
	w *waiter
}

// IsZero reports whether t is no ticket.
func (t Ticket) IsZero() bool { return t.w == nil }

// ErrWouldWait says a borrower must get its connection with Acquire:
// Enqueue's answer when the pool is paused (PAUSE; only the resume ends
// that wait), checks every connection before a loan (server_check_delay
// = 0) or has an idle one due for its check, and Take's when the
// connection handed over turned out to need one, or to be dead (the
// ticket then carries on with Ticket.AcquireUntil).
var ErrWouldWait = errors.New("pool: this wait needs Acquire")

// Enqueue takes a place in the queue, in the same FIFO order as Acquire's
// waiters, behind them, and returns at once; wk.Granted runs when the
// wait is over (at once, before Enqueue returns, when a connection is
// idle and nobody waits: one may have come back since TryAcquireChecked
// found none). It fails as Acquire would, at once (ErrPoolClosed, a
// cached login failure), or with ErrWouldWait. A borrower that found no
// connection with TryAcquireChecked uses it.
func (p *Pool) Enqueue(wk Waker) (Ticket, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Ticket{}, ErrPoolClosed
	}
	if p.paused || p.cfg.CheckDelay == CheckAlways {
		return Ticket{}, ErrWouldWait
	}
	if n := len(p.idle); n > 0 && p.waiters.n == 0 && p.checkDue(p.idle[n-1]) {
		return Ticket{}, ErrWouldWait
	}
	if n := len(p.idle); n > 0 && p.waiters.n == 0 {
		p.stat.AcquireCount++
		sc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.active++
		w := waiters.Get().(*waiter)
		w.wake = wk
		t := Ticket{p, w}
		w.send(acquireResult{sc: sc, unqueued: true}) // Take peeks at it: it sat idle
		return t, nil
	}
	if p.loginErr != nil && p.total == 0 && !p.holds(p.loginErr) && p.now().Sub(p.loginAt) < p.cfg.LoginRetry {
		return Ticket{}, &LoginFailingError{Err: p.loginErr} // (the Acquire to come counts it)
	}
	p.stat.AcquireCount++
	w := waiters.Get().(*waiter)
	w.wake = wk
	w.enqueued = p.now()
	p.waiters.push(w)
	p.stat.WaitCount++
	p.growLocked()
	return Ticket{p, w}, nil
}

// Granted reports whether the wait is over (Take will not block). Only
// the ticket's owner calls it.
func (t Ticket) Granted() bool { return t.w != nil && t.w.sent.Load() }

// Take ends a granted ticket and returns what its wait got: a connection
// lent as Acquire lends one, or the error Acquire would have returned.
// A connection that cannot be lent without waiting (server_check_query
// is due on it, or its socket must be looked at and shows it dead) stays
// the ticket's: Take then returns (nil, ErrWouldWait), and the ticket
// goes on until its owner carries the request on to a wait that may
// block (AcquireUntil) or gives it up (Cancel). As with
// TryAcquireChecked, the connection's reads may not wait (NoWait).
func (t Ticket) Take() (*ServerConn, error) {
	p := t.p
	res := t.w.receive()
	if res.sc != nil && !(res.ready && p.cfg.CheckDelay != CheckAlways && res.sc.Rd.Buffered() == 0) {
		if p.checkDue(res.sc) || !res.sc.alive() {
			return nil, ErrWouldWait // (its result stays in w: AcquireUntil, Cancel)
		}
	}
	p.done(t.w, res)
	if res.err != nil {
		return nil, res.err
	}
	return res.sc, nil
}

// AcquireUntil ends a ticket whose owner carries its request on to a wait
// that may block (an event loop handing a queued borrower to a goroutine,
// or Take's ErrWouldWait): it is AcquireUntil for the same request, which
// keeps what the ticket had. A connection handed to the ticket is lent
// after the looks Take could not make (server_check_query); one still to
// come is waited for in the ticket's place in the queue, and one that
// turns out dead sends the request back to the head of the queue, as
// Acquire's waiters go back. The request and its wait are counted once
// (Stat.AcquireCount, WaitCount, WaitTime, the wait hook), as the
// ticket's: a borrower that gives up instead (Cancel) counts as one that
// waited and gave up. The Waker is not told any more.
func (t Ticket) AcquireUntil(expired <-chan time.Time) (*ServerConn, error) {
	return t.AcquireWhile(nil, expired)
}

// AcquireWhile is AcquireUntil that also gives up, with ErrWaitStopped,
// when a value arrives on stop (as Pool.AcquireWhile): the request then
// counts as one that waited and gave up.
func (t Ticket) AcquireWhile(stop <-chan struct{}, expired <-chan time.Time) (*ServerConn, error) {
	p, w := t.p, t.w
	p.mu.Lock()
	queued := w.queued
	if queued {
		w.wake = nil // (the grant comes on w.ch from here: send)
	}
	p.mu.Unlock()
	var res acquireResult
	if queued {
		select {
		case res = <-w.ch:
		case <-expired:
			p.abandon(w)
			waiters.Put(w)
			return nil, ErrWaitTimeout
		case <-stop:
			p.abandon(w)
			waiters.Put(w)
			return nil, ErrWaitStopped
		}
	} else {
		res = w.receive()
		w.wake, w.res = nil, acquireResult{}
		w.sent.Store(false)
	}
	if res.err != nil {
		p.observeWait(w)
		waiters.Put(w)
		return nil, res.err
	}
	tr := try{w: w, waited: res.waited}
	if res.unqueued {
		tr.w = nil // lent at once by Enqueue: it never waited
		waiters.Put(w)
	}
	if p.lends(res.sc, res.ready, &tr) {
		return res.sc, nil
	}
	p.Destroy(res.sc)
	tr.again = true
	return p.acquireTry(context.Background(), stop, expired, &tr)
}

// Cancel ends a ticket whose owner no longer waits: it leaves the queue,
// or, if a connection was handed to it meanwhile, the connection goes
// back to the pool, as old as it was (the ticket never used it:
// server_check_delay and the idle timeout still count). The request
// counts as one that waited and gave up, as an Acquire's that ends
// unserved.
func (t Ticket) Cancel() {
	p, w := t.p, t.w
	p.mu.Lock()
	if w.queued {
		p.waiters.remove(w)
		p.mu.Unlock()
		p.observeWait(w)
		w.wake = nil
		waiters.Put(w)
		return
	}
	p.mu.Unlock()
	res := w.receive() // sent already, or being sent: it never waits for long
	p.done(w, res)
	if sc := res.sc; sc != nil {
		sc.endLoan()
		p.releaseAged(sc, false, true, p.now())
	}
}

// done counts a ticket's wait and recycles its waiter.
func (p *Pool) done(w *waiter, res acquireResult) {
	if res.sc != nil {
		if !res.unqueued {
			p.hookWait(res.waited)
		}
	} else {
		p.observeWait(w)
	}
	w.wake, w.res = nil, acquireResult{}
	w.sent.Store(false)
	waiters.Put(w)
}

// send hands the waiter its result: on its channel, or, for a ticket's,
// in res, then telling its Waker.
func (w *waiter) send(res acquireResult) {
	wk := w.wake
	if wk == nil {
		w.ch <- res
		return
	}
	w.res = res
	w.sent.Store(true) // (w may be recycled from here on)
	wk.Granted()
}

// receive returns a ticket's result, waiting for a send that was under
// way (one that took the waiter out of the queue sends right after).
func (w *waiter) receive() acquireResult {
	for !w.sent.Load() {
		runtime.Gosched()
	}
	return w.res
}
