package pool

import (
	"sync"
	"sync/atomic"
)

// Limit caps server connections across pools (max_db_connections,
// max_user_connections, a fleet share). A nil *Limit means no cap. Safe for
// concurrent use.
type Limit struct {
	// mu guards the fields below; pools are called outside it.
	mu    sync.Mutex
	max   int
	cur   int
	pools map[*Pool]struct{}
	// closing counts connections of cur being closed: they still count
	// against the cap (their backends have not exited yet) but no longer
	// against exceeded.
	closing int
	// over is cur - closing > max, kept under mu and read without it on every
	// Release: a connection returned while the cap is exceeded is closed.
	over atomic.Bool
	// hungry holds the pools that wait for room under the cap and found no
	// idle connection of another pool to close for it (Pool.evict), until
	// one is parked idle (feed). anyHungry is len(hungry) > 0, kept under
	// mu and read without it by every release that parks a connection.
	hungry    map[*Pool]struct{}
	anyHungry atomic.Bool
}

// NewLimit returns a cap of max connections; max <= 0 returns nil (no cap).
func NewLimit(max int) *Limit {
	if max <= 0 {
		return nil
	}
	return NewSettableLimit(max)
}

// NewSettableLimit returns a cap of max connections that SetMax may change
// later; unlike NewLimit, a max of 0 means no connection at all.
func NewSettableLimit(max int) *Limit {
	return &Limit{max: max, pools: make(map[*Pool]struct{}), hungry: make(map[*Pool]struct{})}
}

// SetMax changes the cap. Raising it lets waiting pools grow. Lowering it
// below the connections open now closes idle ones across the pools under
// it (in the background: a close waits for the backend to exit), and lent
// ones as they are returned, until the count is back under the cap. It must
// not be called with any pool's lock held.
func (l *Limit) SetMax(max int) {
	l.mu.Lock()
	grew := max > l.max
	l.max = max
	excess := l.cur - l.closing - l.max
	l.over.Store(excess > 0)
	pools := l.poolsLocked(nil)
	l.mu.Unlock()
	if grew {
		for _, p := range pools {
			p.kick()
		}
		return
	}
	for _, p := range pools {
		if excess <= 0 {
			return
		}
		excess -= p.closeIdleAsync(excess)
	}
}

// claimExcess reports whether more connections are open than the cap
// allows now (after SetMax lowered it) and, if so, counts one of them as
// closing: the caller closes it. Without excess it costs one atomic load.
func (l *Limit) claimExcess() bool {
	if l == nil || !l.over.Load() {
		return false // (inlined at every release: no limit, or not over it)
	}
	return l.claimExcessSlow()
}

// claimExcessSlow is claimExcess for a limit that may be over: it takes
// the limit's lock.
func (l *Limit) claimExcessSlow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur-l.closing <= l.max {
		return false
	}
	l.closing++
	l.over.Store(l.cur-l.closing > l.max)
	return true
}

func (l *Limit) poolsLocked(except *Pool) []*Pool {
	pools := make([]*Pool, 0, len(l.pools))
	for p := range l.pools {
		if p != except {
			pools = append(pools, p)
		}
	}
	return pools
}

func (l *Limit) register(p *Pool) {
	l.mu.Lock()
	l.pools[p] = struct{}{}
	l.mu.Unlock()
}

func (l *Limit) unregister(p *Pool) {
	l.mu.Lock()
	delete(l.pools, p)
	delete(l.hungry, p)
	l.anyHungry.Store(len(l.hungry) > 0)
	l.mu.Unlock()
}

// starve records that p waits for room under the cap that no idle
// connection made; the next one parked idle may (feed).
func (l *Limit) starve(p *Pool) {
	l.mu.Lock()
	l.hungry[p] = struct{}{}
	l.anyHungry.Store(true)
	l.mu.Unlock()
}

// feed lets the pools waiting for room under the cap ask for it again,
// now that a connection under it was parked idle: they close it to grow
// (askRoomLocked), at once rather than at their janitor's next pass.
// Without such pools it costs one atomic load. It must not be called with
// any pool's lock held.
func (l *Limit) feed() {
	if l == nil || !l.anyHungry.Load() {
		return // (inlined at every release that parks a connection)
	}
	l.feedSlow()
}

func (l *Limit) feedSlow() {
	l.mu.Lock()
	pools := make([]*Pool, 0, len(l.hungry))
	for p := range l.hungry {
		pools = append(pools, p)
	}
	clear(l.hungry)
	l.anyHungry.Store(false)
	l.mu.Unlock()
	for _, p := range pools {
		p.feedKick()
	}
}

// feedKick is kick for a pool starved under a cap, now fed: an eviction
// of its under way that finds nothing looks again (evict).
func (p *Pool) feedKick() {
	p.mu.Lock()
	p.fed = true
	p.growLocked()
	p.mu.Unlock()
}

// takeCaps takes a share of a pool's database cap and of its user cap
// (either may be nil: no cap) for one dial, both or neither, and returns
// the cap that refused (nil: both taken). Both are looked at under both
// locks: taken one after the other, a share of the first held while the
// second refused would refuse another pool's dial for nothing, and
// giving it back wakes nobody (only the janitor's next pass would see the
// room). The locks are taken in one order, the database cap's first;
// nothing else holds two caps' locks at once, and a Limit is only ever a
// database cap or only a user cap (the router makes them apart), so two
// dials cannot wait for each other. A pool's lock may be held.
func takeCaps(db, user *Limit) (refused *Limit) {
	if db == user && db != nil {
		// One cap as both: two shares, as the two releases give back.
		db.mu.Lock()
		defer db.mu.Unlock()
		if db.cur+2 > db.max {
			return db
		}
		db.cur += 2
		return nil
	}
	if db != nil {
		db.mu.Lock()
		defer db.mu.Unlock()
	}
	if user != nil {
		user.mu.Lock()
		defer user.mu.Unlock()
	}
	switch {
	case db != nil && db.cur >= db.max:
		return db
	case user != nil && user.cur >= user.max:
		return user
	}
	if db != nil {
		db.cur++
	}
	if user != nil {
		user.cur++
	}
	return nil
}

// startClose marks one connection as being closed; give ends it.
func (l *Limit) startClose() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.closing++
	l.over.Store(l.cur-l.closing > l.max)
	l.mu.Unlock()
}

// give returns a share whose dial failed and lets waiting pools grow. It
// must not be called with any pool's lock held.
func (l *Limit) give() { l.release(0) }

// closed returns the share of a connection that startClose marked, now
// closed, and lets waiting pools grow. It must not be called with any
// pool's lock held.
func (l *Limit) closed() { l.release(1) }

func (l *Limit) release(closing int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.cur--
	l.closing -= closing
	l.over.Store(l.cur-l.closing > l.max)
	var pools []*Pool
	if l.cur < l.max {
		pools = l.poolsLocked(nil)
	}
	l.mu.Unlock()
	for _, p := range pools {
		p.kick()
	}
}

// starveAmong records that p waits for room under the cap (see starve)
// and returns the other pools under it, where an idle connection may make
// it.
func (l *Limit) starveAmong(p *Pool) []*Pool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hungry[p] = struct{}{}
	l.anyHungry.Store(true)
	return l.poolsLocked(p)
}

// askRoomLocked asks the other pools under l, a cap that is full, to close
// idle connections so that this pool can dial for its waiters: one for
// each waiter it could dial for (within limit, its size now) that no
// eviction under way already covers. A close takes a while (it waits for
// the backend to exit) and every waiter that queues meanwhile asks again,
// so without the count one pool's burst of waiters would close every idle
// connection under the cap. mu is held.
func (p *Pool) askRoomLocked(l *Limit, limit int) {
	need := min(p.waiters.n-p.dialing, limit-p.total) - p.evicting
	if need <= 0 {
		return
	}
	pools := l.starveAmong(p) // before the look: a connection parked during it feeds p
	if len(pools) == 0 {
		return
	}
	p.fed = false
	p.evicting += need
	p.wg.Add(1) // under mu with the pool open (growLocked): before Close's Wait
	go p.evict(l, pools, need)
}

// evict closes up to n idle connections of pools under l, for
// askRoomLocked. Each close lets the pools under the cap grow as it ends
// (Limit.closed); once all are done, the pool looks again at what its
// waiters need. With nothing closed, p stays starved under l (marked
// before each look), so the next connection parked idle under it feeds p
// (Limit.feed); one parked during the look, perhaps behind it, fed p
// already, and the look is made again.
func (p *Pool) evict(l *Limit, pools []*Pool, n int) {
	defer p.wg.Done()
	for {
		closed := 0
		for _, o := range pools {
			if closed >= n {
				break
			}
			closed += o.closeIdle(n - closed)
		}
		p.mu.Lock()
		if closed == 0 && p.fed && !p.closed {
			p.fed = false
			l.starve(p)
			p.mu.Unlock()
			continue
		}
		p.evicting -= n
		if closed > 0 {
			p.growLocked()
		}
		p.mu.Unlock()
		return
	}
}

// LimitStat is a snapshot of a Limit: its cap and the connections counted
// against it right now (open or being opened, in every pool under it).
type LimitStat struct {
	Max, InUse int
}

// Stat returns the cap and its current use. A nil Limit (no cap) returns
// the zero LimitStat. Safe for concurrent use.
func (l *Limit) Stat() LimitStat {
	if l == nil {
		return LimitStat{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return LimitStat{Max: l.max, InUse: l.cur}
}
