// The queue of borrowers waiting for a connection: its records, their
// recycling, and what a wait that ends unserved leaves behind.

package pool

import (
	"sync"
	"sync/atomic"
	"time"
)

type waiter struct {
	ch chan acquireResult // buffered 1; receives exactly once (Acquire's)
	// wake is told when the result is there, for a waiter that does not
	// block on ch (Enqueue's); nil for Acquire's. Its result is res, set
	// once before sent: the owner of an event loop looks at many tickets
	// per transaction, and a channel is a second object to touch.
	wake     Waker
	res      acquireResult
	sent     atomic.Bool
	enqueued time.Time
	next     *waiter
	prev     *waiter
	queued   bool
}

type acquireResult struct {
	sc  *ServerConn
	err error
	// waited is how long the waiter queued, when sc is set: putLocked
	// measured and counted it already.
	waited time.Duration
	// ready marks a connection known to be idle this instant (see
	// ReleaseReady): it is lent without a liveness peek.
	ready bool
	// unqueued marks a connection Enqueue lent at once: no wait to count.
	unqueued bool
}

// waitQueue is an intrusive FIFO of waiters.
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) push(w *waiter) {
	w.prev, w.next, w.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

// pushFront queues w at the head: a waiter served with a connection that
// turned out dead keeps its place.
func (q *waitQueue) pushFront(w *waiter) {
	w.prev, w.next, w.queued = nil, q.head, true
	if q.head != nil {
		q.head.prev = w
	} else {
		q.tail = w
	}
	q.head = w
	q.n++
}

func (q *waitQueue) remove(w *waiter) {
	if !w.queued {
		return
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	q.n--
}

func (q *waitQueue) pop() *waiter {
	w := q.head
	if w != nil {
		q.remove(w)
	}
	return w
}

// waiters recycles waiter records. A waiter goes back once its result
// was received (from its channel, or a ticket's res) or it left the queue
// unserved: whoever served it sent exactly once and kept no use of it
// after the send.
var waiters = sync.Pool{New: func() any { return &waiter{ch: make(chan acquireResult, 1)} }}

// abandon takes w out of the queue after its wait ended unserved, or gives
// back the connection it was handed at the same moment.
func (p *Pool) abandon(w *waiter) {
	p.mu.Lock()
	if w.queued {
		p.waiters.remove(w)
		p.mu.Unlock()
		p.observeWait(w)
		return
	}
	p.mu.Unlock()
	if res := <-w.ch; res.sc != nil {
		p.Release(res.sc)
		p.hookWait(res.waited)
		return
	}
	p.observeWait(w)
}

// observeWait counts the wait of a waiter that got no connection.
func (p *Pool) observeWait(w *waiter) {
	d := p.now().Sub(w.enqueued)
	p.mu.Lock()
	p.stat.WaitTime += d
	p.mu.Unlock()
	p.hookWait(d)
}

func (p *Pool) hookWait(d time.Duration) {
	if p.cfg.Hooks != nil {
		p.cfg.Hooks.WaitObserved(d)
	}
}
