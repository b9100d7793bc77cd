package pool_test

import (
	"sync"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
)

// fakeClock is a Config.Now that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// waitFor polls cond until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestOneJanitorPassClosesEveryConnectionIdlePastServerIdleTimeoutDownToMinPoolSize(t *testing.T) {
	tests := []struct {
		name      string
		open, min int
		wantTotal int
	}{
		{"min_pool_size 0", 8, 0, 0},
		{"min_pool_size 2", 8, 2, 2},
		{"min_pool_size 7", 8, 7, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			cfg := config(tc.open)
			cfg.MinSize = tc.min
			cfg.IdleTimeout = time.Minute
			cfg.Now = clock.Now
			p := newPool(t, cfg)
			var lent []*pool.ServerConn
			for range tc.open {
				lent = append(lent, acquire(t, p))
			}
			for _, sc := range lent {
				p.Release(sc)
			}
			clock.Advance(2 * time.Minute)
			p.Maintain()
			if st := p.Stat(); st.Total != tc.wantTotal || st.Idle != tc.wantTotal {
				t.Fatalf("after one janitor pass %d of %d connections idle past server_idle_timeout are open (%d idle); want %d",
					st.Total, tc.open, st.Idle, tc.wantTotal)
			}
		})
	}
}

func TestAPoolWithUseOnceClosesEachConnectionWhenItsLoanEnds(t *testing.T) {
	cfg := config(1)
	cfg.Lifetime = pool.UseOnce
	p := newPool(t, cfg)
	seen := make(map[uint32]bool)
	for _, end := range []func(*pool.ServerConn){p.Release, p.ReleaseReady} {
		sc := acquire(t, p)
		if seen[sc.PID] {
			t.Fatalf("backend %d lent a second time", sc.PID)
		}
		seen[sc.PID] = true
		end(sc)
		if st := p.Stat(); st.Idle != 0 || st.Destroyed != uint64(len(seen)) {
			t.Fatalf("after a loan ended: %+v; want the connection closed", st)
		}
	}
}
