package pool_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
)

// gatedDials is a Config.DialFunc whose dials wait, once begun, until the
// test opens the gate; it remembers which connection each dial opened.
type gatedDials struct {
	began chan struct{} // one value per dial begun

	mu     sync.Mutex
	gate   chan struct{} // closed: dials go ahead
	opened []*pool.ServerConn
	marks  map[*pool.ServerConn]bool
	mark   bool // marks[sc] for the dials begun from now on
}

func newGatedDials() *gatedDials {
	return &gatedDials{began: make(chan struct{}, 100), gate: make(chan struct{}), marks: make(map[*pool.ServerConn]bool)}
}

func (g *gatedDials) dial(ctx context.Context, cfg *pool.DialConfig) (*pool.ServerConn, error) {
	g.mu.Lock()
	mark, gate := g.mark, g.gate
	g.mu.Unlock()
	g.began <- struct{}{}
	select {
	case <-gate:
	case <-ctx.Done():
		return nil, &pool.DialError{Err: ctx.Err()}
	}
	sc, err := pool.Dial(ctx, cfg)
	if err == nil {
		g.mu.Lock()
		g.opened = append(g.opened, sc)
		g.marks[sc] = mark
		g.mu.Unlock()
	}
	return sc, err
}

// open lets the dials begun go ahead, and those that begin until shut.
func (g *gatedDials) open() {
	g.mu.Lock()
	close(g.gate)
	g.mu.Unlock()
}

// shut makes the dials that begin from now on wait for the next open.
func (g *gatedDials) shut() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

// markFromNow marks the connections of the dials begun from now on.
func (g *gatedDials) markFromNow() {
	g.mu.Lock()
	g.mark = true
	g.mu.Unlock()
}

func (g *gatedDials) marked(sc *pool.ServerConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.marks[sc]
}

func waitBegun(t *testing.T, g *gatedDials) {
	t.Helper()
	select {
	case <-g.began:
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("no dial began")
	}
}

func TestAConnectionWhoseLoginBeganBeforeReconnectIsClosedAndAWaiterGetsOneLoggedInAfter(t *testing.T) {
	g := newGatedDials()
	cfg := config(1)
	cfg.DialFunc = g.dial
	p := newPool(t, cfg)
	got := make(chan *pool.ServerConn, 1)
	go func() { got <- acquire(t, p) }()
	waitBegun(t, g) // the login is under way, to the server as it was

	// RECONNECT (a failover moved the host, credentials changed): the
	// login under way predates it, as the connections open do.
	g.markFromNow()
	p.Reconnect()
	g.open()
	sc := <-got
	defer p.Release(sc)
	if !g.marked(sc) {
		t.Fatal("the waiter was lent the connection whose login began before RECONNECT")
	}
	// The one from before RECONNECT counts until its close is over (as
	// WAIT_CLOSE waits); the waiter's, logged in after, never does.
	waitFor(t, "the connection from before RECONNECT to close", func() bool {
		st := p.Stat()
		return st.Total == 1 && st.Dialing == 0 && p.CloseNeeded() == 0
	})
}

func TestAConnectionWhoseDialEndsOverALoweredCapIsClosedNotKeptIdle(t *testing.T) {
	g := newGatedDials()
	limit := pool.NewSettableLimit(2)
	cfg := config(2)
	cfg.DBLimit = limit
	cfg.DialFunc = g.dial
	p := newPool(t, cfg)

	first := make(chan *pool.ServerConn, 1)
	go func() { first <- acquire(t, p) }()
	waitBegun(t, g)
	g.open()
	held := <-first
	defer p.Release(held)

	// A second borrower gives up while its dial is under way...
	g.shut()
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := p.Acquire(ctx)
		gaveUp <- err
	}()
	waitBegun(t, g)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the second borrower: %v", err)
	}
	// ... and the cap is lowered to the one connection lent.
	limit.SetMax(1)
	g.open()
	waitFor(t, "the dial to end", func() bool { return p.Stat().Dialing == 0 })
	if st := p.Stat(); st.Idle != 0 || st.Total != 1 {
		t.Fatalf("the dial that ended over the cap left %d idle of %d open; want it closed (0 of 1)", st.Idle, st.Total)
	}
	waitFor(t, "the cap's count to come back under it", func() bool { return limit.Stat() == pool.LimitStat{Max: 1, InUse: 1} })
}

// A login begun before Reconnect counts among the connections to close
// (CloseNeeded, which WAIT_CLOSE waits on) until the connection it opens
// is closed; one begun after it does not.
func TestALoginBegunBeforeReconnectCountsAsAConnectionToCloseUntilItIsClosed(t *testing.T) {
	t.Parallel()
	g := newGatedDials()
	cfg := config(1)
	cfg.DialFunc = g.dial
	p := newPool(t, cfg)
	got := make(chan *pool.ServerConn, 1)
	go func() { got <- acquire(t, p) }()
	waitBegun(t, g) // the login is under way
	p.Reconnect()
	if n := p.CloseNeeded(); n != 1 {
		t.Fatalf("CloseNeeded %d with a login begun before Reconnect under way; want 1", n)
	}
	g.open() // it logs in, is closed, and the waiter gets a login begun after
	sc := <-got
	waitFor(t, "the connection of the login begun before Reconnect to close", func() bool { return p.CloseNeeded() == 0 })
	p.Release(sc)
	if n := p.CloseNeeded(); n != 0 {
		t.Fatalf("CloseNeeded %d with only a connection logged in after Reconnect; want 0", n)
	}
}
