// The janitor: the pool's background pass that retires idle and old
// connections and keeps min_pool_size open.

package pool

import "time"

// janitorInterval is how often the janitor runs (tests lengthen it to see
// what happens without it).
var janitorInterval = time.Second

// janitor retires idle connections past IdleTimeout or Lifetime and keeps
// MinSize connections open.
func (p *Pool) janitor(every time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			p.maintain()
		}
	}
}

func (p *Pool) maintain() {
	now := p.now()
	p.coarse.Store(now.UnixNano())
	p.mu.Lock()
	var victims []*ServerConn
	keep := p.idle[:0]
	for _, sc := range p.idle {
		if now.Sub(sc.lastUsed) >= time.Second {
			// Buffers stay with a connection in use, so a busy pool does
			// not take and return them on every loan; one idle for a
			// second gives them back.
			sc.Rd.Release()
			sc.Wr.Release()
		}
		// (p.total no longer counts the victims taken so far.)
		if (p.cfg.IdleTimeout > 0 && now.Sub(sc.lastUsed) >= p.cfg.IdleTimeout && p.total > p.cfg.MinSize) ||
			(p.cfg.Lifetime > 0 && now.Sub(sc.created) >= p.cfg.Lifetime) || sc.gen != p.gen {
			victims = append(victims, sc)
			p.total--
			continue
		}
		keep = append(keep, sc)
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	// Keep MinSize open, unless logins are failing right now.
	for p.total < p.cfg.MinSize && !p.closed && !p.paused && !p.retryArmed &&
		(p.loginErr == nil || now.Sub(p.loginAt) >= p.cfg.LoginRetry) {
		if takeCaps(p.cfg.DBLimit, p.cfg.UserLimit) != nil {
			break
		}
		p.total++
		p.dialing++
		p.wg.Add(1)
		go p.dialOne(p.gen)
	}
	if h := p.waiters.head; h != nil && p.cfg.ReserveSize > 0 && !p.reserve && now.Sub(h.enqueued) >= p.cfg.ReserveTimeout {
		p.reserve = true
	}
	p.growLocked()
	p.mu.Unlock()
	p.retireAll(victims)
}
