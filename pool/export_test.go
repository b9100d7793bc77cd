package pool

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
