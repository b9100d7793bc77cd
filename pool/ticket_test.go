package pool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
)

// grantSignal is a pool.Waker that says when it was told.
type grantSignal chan struct{}

func (g grantSignal) Granted() { g <- struct{}{} }

func waitGranted(t *testing.T, g grantSignal) {
	t.Helper()
	select {
	case <-g:
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("the ticket was never granted")
	}
}

func TestATicketIsGrantedInQueueOrderAndTakesTheConnection(t *testing.T) {
	p := newPool(t, config(1))
	held := acquire(t, p)
	first := make(chan *pool.ServerConn, 1)
	go func() { first <- acquire(t, p) }() // Acquire's waiter, ahead
	for p.Stat().Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	g := make(grantSignal, 1)
	tk, err := p.Enqueue(g)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Stat(); st.Waiting != 2 {
		t.Fatalf("waiting %d; want the ticket queued behind the waiter", st.Waiting)
	}
	if tk.Granted() {
		t.Fatal("a ticket granted while the connection is lent")
	}
	p.ReleaseReady(held)
	sc := <-first // the waiter ahead gets it first
	select {
	case <-g:
		t.Fatal("the ticket was granted before the waiter ahead of it")
	case <-time.After(20 * time.Millisecond):
	}
	p.ReleaseReady(sc)
	waitGranted(t, g)
	if !tk.Granted() {
		t.Fatal("told, but Granted reports false")
	}
	got, err := tk.Take()
	if err != nil || got != sc {
		t.Fatalf("Take: %v, %v; want the released connection", got, err)
	}
	if st := p.Stat(); st.Active != 1 || st.Waiting != 0 {
		t.Fatalf("stat after Take %+v", st)
	}
	p.Release(got)
}

func TestACancelledTicketLeavesTheQueueOrGivesTheConnectionBack(t *testing.T) {
	p := newPool(t, config(1))
	held := acquire(t, p)

	// Cancelled while queued: it leaves the queue.
	tk, err := p.Enqueue(make(grantSignal, 1))
	if err != nil {
		t.Fatal(err)
	}
	tk.Cancel()
	if st := p.Stat(); st.Waiting != 0 {
		t.Fatalf("waiting %d after Cancel", st.Waiting)
	}

	// Cancelled after its grant: the connection goes back to the pool.
	g := make(grantSignal, 1)
	if tk, err = p.Enqueue(g); err != nil {
		t.Fatal(err)
	}
	p.ReleaseReady(held)
	waitGranted(t, g)
	tk.Cancel()
	if st := p.Stat(); st.Active != 0 || st.Idle != 1 {
		t.Fatalf("stat after cancelling a granted ticket %+v; want the connection idle", st)
	}
}

func TestATicketLearnsThatItsPoolClosed(t *testing.T) {
	p := pool.New(config(1))
	held := acquire(t, p)
	g := make(grantSignal, 1)
	tk, err := p.Enqueue(g)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	waitGranted(t, g)
	if _, err := tk.Take(); !errors.Is(err, pool.ErrPoolClosed) {
		t.Fatalf("Take after Close: %v", err)
	}
	p.Release(held)
	<-done
	if _, err := p.Enqueue(g); !errors.Is(err, pool.ErrPoolClosed) {
		t.Fatalf("Enqueue on a closed pool: %v", err)
	}
}

func TestEnqueueSendsToAcquireWhatOnlyAcquireCanWaitFor(t *testing.T) {
	// A paused pool.
	p := newPool(t, config(1))
	if err := p.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Enqueue(make(grantSignal, 1)); !errors.Is(err, pool.ErrWouldWait) {
		t.Fatalf("Enqueue on a paused pool: %v", err)
	}
	p.Resume()

	// An idle connection that server_check_query must check first.
	cfg := config(1)
	cfg.CheckDelay, cfg.CheckQuery = pool.CheckAlways, "select 1"
	c := newPool(t, cfg)
	c.Release(acquire(t, c))
	if sc := c.TryAcquireChecked(0); sc != nil {
		t.Fatal("TryAcquireChecked lent a connection due for its check")
	}
	if _, err := c.Enqueue(make(grantSignal, 1)); !errors.Is(err, pool.ErrWouldWait) {
		t.Fatalf("Enqueue beside an idle connection due for its check: %v", err)
	}
	// With server_check_delay = 0 every loan needs the check: a ticket
	// would only bounce, so Enqueue refuses even with nothing idle.
	held := acquire(t, c)
	if _, err := c.Enqueue(make(grantSignal, 1)); !errors.Is(err, pool.ErrWouldWait) {
		t.Fatalf("Enqueue with server_check_delay = 0 and the connection lent: %v", err)
	}
	c.Release(held)
	if st := c.Stat(); st.Waiting != 0 {
		t.Fatalf("waiting %d; want nobody queued", st.Waiting)
	}
}

func TestATicketBesideAnIdleConnectionIsGrantedAtOnce(t *testing.T) {
	p := newPool(t, config(1))
	p.Release(acquire(t, p))
	g := make(grantSignal, 1)
	tk, err := p.Enqueue(g)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-g:
	default:
		t.Fatal("Enqueue beside an idle connection did not grant it at once")
	}
	sc, err := tk.Take()
	if err != nil || sc == nil {
		t.Fatalf("Take: %v, %v", sc, err)
	}
	if st := p.Stat(); st.Active != 1 || st.Idle != 0 || st.Waiting != 0 {
		t.Fatalf("stat after Take %+v", st)
	}
	p.Release(sc)
}

// A ticket whose request its borrower carries on to Acquire counts one
// request, not two (Stat.AcquireCount): one that bounced off a dead
// connection (Take's ErrWouldWait), and one passed on after it was granted
// (Pass: the connection goes to whoever is next).
func TestATicketCarriedOnToAcquireIsCountedOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		end  func(t *testing.T, tk pool.Ticket)
	}{
		{"bounced off a dead connection", func(t *testing.T, tk pool.Ticket) {
			if sc, err := tk.Take(); !errors.Is(err, pool.ErrWouldWait) {
				t.Fatalf("Take of a dead connection: %v, %v; want ErrWouldWait", sc, err)
			}
		}},
		{"passed on after its grant", func(t *testing.T, tk pool.Ticket) { tk.Pass() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPool(t, config(1))
			held := acquire(t, p)
			before := p.Stat().AcquireCount
			g := make(grantSignal, 1)
			tk, err := p.Enqueue(g)
			if err != nil {
				t.Fatal(err)
			}
			killBackend(t, held)
			p.Release(held)
			waitGranted(t, g)
			tc.end(t, tk)
			p.Release(acquire(t, p)) // the Acquire the request is carried on to
			if n := p.Stat().AcquireCount - before; n != 1 {
				t.Fatalf("%d acquires counted for one request", n)
			}
		})
	}
}
