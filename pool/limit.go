package pool

import "sync"

// Limit caps server connections across pools (max_db_connections,
// max_user_connections). A nil *Limit means no cap. Safe for concurrent use.
type Limit struct {
	// mu guards the fields below; pools are called outside it.
	mu    sync.Mutex
	max   int
	cur   int
	pools map[*Pool]struct{}
}

// NewLimit returns a cap of max connections; max <= 0 returns nil (no cap).
func NewLimit(max int) *Limit {
	if max <= 0 {
		return nil
	}
	return &Limit{max: max, pools: make(map[*Pool]struct{})}
}

func (l *Limit) register(p *Pool) {
	l.mu.Lock()
	l.pools[p] = struct{}{}
	l.mu.Unlock()
}

func (l *Limit) unregister(p *Pool) {
	l.mu.Lock()
	delete(l.pools, p)
	l.mu.Unlock()
}

func (l *Limit) tryTake() bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur >= l.max {
		return false
	}
	l.cur++
	return true
}

// untake returns a share taken by tryTake without waking pools; for use
// under a pool's lock.
func (l *Limit) untake() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.cur--
	l.mu.Unlock()
}

// give returns one connection's share and lets waiting pools grow. It must
// not be called with any pool's lock held.
func (l *Limit) give() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.cur--
	pools := make([]*Pool, 0, len(l.pools))
	for p := range l.pools {
		pools = append(pools, p)
	}
	l.mu.Unlock()
	for _, p := range pools {
		p.kick()
	}
}

// evictIdleElsewhere closes one idle connection of another pool under the
// same cap, so a pool with waiters can grow. It runs in its own goroutine
// because the caller holds its pool's lock.
func (l *Limit) evictIdleElsewhere(self *Pool) {
	if l == nil {
		return
	}
	l.mu.Lock()
	pools := make([]*Pool, 0, len(l.pools))
	for p := range l.pools {
		if p != self {
			pools = append(pools, p)
		}
	}
	l.mu.Unlock()
	if len(pools) == 0 {
		return
	}
	self.wg.Add(1)
	go func() {
		defer self.wg.Done()
		for _, p := range pools {
			if p.closeIdle(1) > 0 {
				return
			}
		}
	}()
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
