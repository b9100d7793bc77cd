package pool

import "time"

// Maintain runs one pass of the janitor (idle and lifetime retirement,
// min_pool_size, the reserve) now, instead of at its next tick.
func (p *Pool) Maintain() { p.maintain() }

// WhileLocked runs f with the pool's lock held: whatever needs the pool
// meanwhile (a close of its idle connections, a lend, a release) waits.
func (p *Pool) WhileLocked(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

// SetJanitorInterval makes the janitors of pools made until the end of the
// test run every d instead of every second.
func SetJanitorInterval(t interface{ Cleanup(func()) }, d time.Duration) {
	old := janitorInterval
	janitorInterval = d
	t.Cleanup(func() { janitorInterval = old })
}

// Hungry reports whether the pool waits for a connection of another pool
// to be parked idle under one of its caps, so that it can close it to grow.
func (p *Pool) Hungry() bool {
	for _, l := range []*Limit{p.cfg.DBLimit, p.cfg.UserLimit} {
		if l != nil {
			l.mu.Lock()
			_, ok := l.hungry[p]
			l.mu.Unlock()
			if ok {
				return true
			}
		}
	}
	return false
}
