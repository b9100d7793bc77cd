package router

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// authThrottle slows down repeated authentication failures from one client
// address: each failure doubles the delay before that address's next
// attempt, from base up to 5 s; a success or a quiet minute resets it.
// Other addresses are not affected. Safe for concurrent use.
type authThrottle struct {
	// mu guards base, most and fails.
	mu    sync.Mutex
	base  time.Duration
	most  time.Duration // the longest delay, maxAuthDelay (a test may raise it)
	fails map[netip.Addr]failRecord
}

// setBase changes the base delay (reload).
func (t *authThrottle) setBase(d time.Duration) {
	t.mu.Lock()
	t.base = d
	t.mu.Unlock()
}

type failRecord struct {
	n    int
	last time.Time
}

const maxAuthDelay = 5 * time.Second

func newAuthThrottle(base time.Duration) *authThrottle {
	return &authThrottle{base: base, most: maxAuthDelay, fails: make(map[netip.Addr]failRecord)}
}

// hostOf is the client's IP address (the zero Addr for other networks),
// IPv4-mapped IPv6 addresses unmapped. A netip.Addr keys the map without
// the allocation of a string.
func hostOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// delay returns how long to wait before authenticating a client from a.
func (t *authThrottle) delay(a net.Addr) time.Duration {
	h := hostOf(a)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.base <= 0 {
		return 0
	}
	r, ok := t.fails[h]
	if !ok {
		return 0
	}
	if time.Since(r.last) > time.Minute {
		delete(t.fails, h)
		return 0
	}
	d := t.base << min(r.n-1, 16)
	return min(d, t.most)
}

// wait sleeps the delay before authenticating ss (delay), cut short by a
// kill or shutdown's deadline (loginContext), whose error it returns.
func (t *authThrottle) wait(ss *session) error {
	d := t.delay(ss.peer)
	if d <= 0 {
		return nil
	}
	ctx, cancel := ss.loginContext(0)
	defer cancel()
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
	}
	if k := ss.killed(); k != nil {
		return k
	}
	return errDraining // (ctx has no deadline of its own: shutdown's cut it)
}

func (t *authThrottle) failed(a net.Addr) {
	h := hostOf(a)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.base <= 0 {
		return
	}
	if len(t.fails) > 100000 {
		// Bound memory under a distributed attack: forget the oldest half.
		now := time.Now()
		for k, r := range t.fails {
			if now.Sub(r.last) > 10*time.Second {
				delete(t.fails, k)
			}
		}
	}
	r := t.fails[h]
	r.n++
	r.last = time.Now()
	t.fails[h] = r
}

func (t *authThrottle) succeeded(a net.Addr) {
	h := hostOf(a)
	t.mu.Lock()
	if len(t.fails) > 0 {
		delete(t.fails, h)
	}
	t.mu.Unlock()
}
