package pool_test

import (
	"context"
	"errors"
	"sync/atomic"
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

// A ticket whose request its borrower carries on to a wait that may block
// (AcquireUntil) counts one request and one wait (Stat.AcquireCount,
// WaitCount), whether it bounced off a dead connection (Take's
// ErrWouldWait), was handed on granted and not taken, or while still
// queued; so does one whose borrower gives it up (Cancel), as a waiter
// that gives up does.
func TestATicketCarriedOnToAWaitIsCountedOnce(t *testing.T) {
	t.Parallel()
	carry := func(t *testing.T, tk pool.Ticket) *pool.ServerConn {
		sc, err := tk.AcquireUntil(nil)
		if err != nil {
			t.Error(err) // (not Fatal: it may run on a goroutine of the test's)
		}
		return sc
	}
	tests := []struct {
		name    string
		granted bool // the held connection, dead, went to the ticket
		end     func(t *testing.T, tk pool.Ticket) *pool.ServerConn
	}{
		{"bounced off a dead connection", true, func(t *testing.T, tk pool.Ticket) *pool.ServerConn {
			if sc, err := tk.Take(); !errors.Is(err, pool.ErrWouldWait) {
				t.Fatalf("Take of a dead connection: %v, %v; want ErrWouldWait", sc, err)
			}
			return carry(t, tk)
		}},
		{"handed on after its grant", true, carry},
		{"handed on while queued", false, carry},
		{"given up", false, func(t *testing.T, tk pool.Ticket) *pool.ServerConn { tk.Cancel(); return nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPool(t, config(1))
			held := acquire(t, p)
			before := p.Stat()
			g := make(grantSignal, 1)
			tk, err := p.Enqueue(g)
			if err != nil {
				t.Fatal(err)
			}
			var sc *pool.ServerConn
			if tc.granted {
				killBackend(t, held)
				p.Release(held)
				waitGranted(t, g)
				sc = tc.end(t, tk)
			} else {
				got := make(chan *pool.ServerConn, 1)
				go func() { got <- tc.end(t, tk) }()
				p.Release(held) // (to the ticket, or idle if it gave up)
				sc = <-got
			}
			if sc != nil {
				if tc.granted && sc == held {
					t.Fatal("the dead connection was lent")
				}
				p.Release(sc)
			}
			st := p.Stat()
			if n := st.AcquireCount - before.AcquireCount; n != 1 {
				t.Fatalf("%d acquires counted for one request", n)
			}
			if n := st.WaitCount - before.WaitCount; n != 1 {
				t.Fatalf("%d waits counted for one request", n)
			}
		})
	}
}

// A ticket handed a connection that server_check_query must check first
// keeps the connection: its borrower, which carries the request on to a
// wait that may block (Ticket.AcquireUntil), checks it and gets it, and
// the waiter queued behind the ticket waits for the next one.
func TestATicketHandedAConnectionDueForItsCheckKeepsIt(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	cfg := config(1)
	cfg.CheckDelay, cfg.CheckQuery = time.Minute, "select 1"
	cfg.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	p := newPool(t, cfg)
	held := acquire(t, p)
	g := make(grantSignal, 1)
	tk, err := p.Enqueue(g)
	if err != nil {
		t.Fatal(err)
	}
	behind := make(chan *pool.ServerConn, 1)
	go func() {
		sc, _ := p.Acquire(context.Background()) // (nil once the pool closes)
		behind <- sc
	}()
	waitFor(t, "the waiter to queue behind the ticket", func() bool { return p.Stat().Waiting == 2 })
	p.Release(held) // to the ticket (not as ready: it is looked at before its loan)
	waitGranted(t, g)
	clock.Add(int64(2 * time.Minute))
	p.Maintain() // (the clock a loan's check is decided by)
	if sc, err := tk.Take(); !errors.Is(err, pool.ErrWouldWait) {
		t.Fatalf("Take of a connection due for its check: %v, %v; want ErrWouldWait", sc, err)
	}
	if st := p.Stat(); st.Waiting != 1 || st.Active != 1 {
		t.Fatalf("after the ticket's Take: %d waiting, %d active; want the connection still the ticket's, the waiter behind waiting", st.Waiting, st.Active)
	}
	checks := p.Stat().Checks
	sc, err := tk.AcquireUntil(nil)
	if err != nil || sc != held {
		t.Fatalf("AcquireUntil: %v, %v; want the connection handed to the ticket", sc, err)
	}
	if n := p.Stat().Checks - checks; n != 1 {
		t.Fatalf("%d checks ran before the loan; want one", n)
	}
	select {
	case <-behind:
		t.Fatal("the waiter behind the ticket was served while the ticket's borrower holds the one connection")
	default:
	}
	p.Release(sc)
	if sc := <-behind; sc != nil {
		p.Release(sc)
	}
}

// A ticket's borrower that waits on in its place (Ticket.AcquireWhile) and
// is stopped (a kill of its client) leaves the queue: the request counts
// as one that waited and gave up, and the next connection released goes
// idle, to nobody.
func TestATicketsWaitStoppedLeavesTheQueue(t *testing.T) {
	t.Parallel()
	p := newPool(t, config(1))
	held := acquire(t, p)
	before := p.Stat()
	tk, err := p.Enqueue(make(grantSignal, 1))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{}, 1)
	stop <- struct{}{}
	if sc, err := tk.AcquireWhile(stop, nil); !errors.Is(err, pool.ErrWaitStopped) {
		t.Fatalf("a stopped wait: %v, %v; want ErrWaitStopped", sc, err)
	}
	p.Release(held)
	st := p.Stat()
	if st.Waiting != 0 || st.Idle != 1 {
		t.Fatalf("after the stop: %d waiting, %d idle; want 0 and 1", st.Waiting, st.Idle)
	}
	if n := st.AcquireCount - before.AcquireCount; n != 1 {
		t.Fatalf("%d acquires counted for one request", n)
	}
	if n := st.WaitCount - before.WaitCount; n != 1 {
		t.Fatalf("%d waits counted for one request", n)
	}
}
