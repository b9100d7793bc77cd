package pool_test

import (
	"bytes"
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
)

func TestABurstOfWaitersUnderAFullSharedCapClosesOnlyTheIdleConnectionsElsewhereItCanUse(t *testing.T) {
	limit := pool.NewLimit(4)
	cb, ca := config(4), config(1)
	cb.DBLimit, ca.DBLimit = limit, limit
	b := newPool(t, cb)
	var lent []*pool.ServerConn
	for range 4 {
		lent = append(lent, acquire(t, b))
	}
	for _, sc := range lent {
		b.Release(sc) // b holds the whole cap, idle
	}
	a := newPool(t, ca)

	// Twenty borrowers queue on a (size 1) while b's idle connections
	// cannot be closed yet (its lock is held): each queueing asks for room.
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.WhileLocked(func() {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				sc, err := a.Acquire(ctx)
				if err != nil {
					errs <- err
					return
				}
				a.Release(sc)
			}()
		}
		waitFor(t, "the borrowers to queue", func() bool { return a.Stat().Waiting == n })
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// a could use one connection: b gives up one, not all four.
	if st := b.Stat(); st.Total != 3 {
		t.Fatalf("b keeps %d of its 4 idle connections; want 3 (a, of size 1, needed one)", st.Total)
	}
}

func TestAConnectionReleasedIdleInOnePoolMakesRoomForAPoolWaitingUnderTheSameFullCap(t *testing.T) {
	pool.SetJanitorInterval(t, time.Hour) // no janitor pass to fall back on
	limit := pool.NewLimit(1)
	ca, cb := config(1), config(1)
	ca.DBLimit, cb.DBLimit = limit, limit
	a, b := newPool(t, ca), newPool(t, cb)
	held := acquire(t, a) // a holds the cap, lent: nothing idle to close

	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		sc, err := b.Acquire(ctx)
		if err == nil {
			b.Release(sc)
		}
		got <- err
	}()
	waitFor(t, "b's borrower to ask for room under the cap", func() bool { return b.Stat().Waiting == 1 && b.Hungry() })
	// a's transaction ends: its connection goes idle, and b's borrower,
	// waiting for the cap, gets a connection in its stead.
	a.Release(held)
	if err := <-got; err != nil {
		t.Fatalf("b's borrower: %v; want a connection once a's went idle", err)
	}
}

func TestAConnectionParkedWhileAWaitingPoolLooksForOneToCloseIsNotMissed(t *testing.T) {
	pool.SetJanitorInterval(t, time.Hour) // no janitor pass to fall back on
	// b looks at a and c for an idle connection to close; a's is parked
	// while the look waits for c, after the look may have passed a. Which
	// of a and c the look visits first is chance: the rounds make it
	// likely that it visits a first at least once.
	for round := range 8 {
		limit := pool.NewLimit(2)
		ca, cb, cc := config(1), config(1), config(1)
		ca.DBLimit, cb.DBLimit, cc.DBLimit = limit, limit, limit
		a, b, c := newPool(t, ca), newPool(t, cb), newPool(t, cc)
		heldA, heldC := acquire(t, a), acquire(t, c) // the cap is full, nothing idle

		got := make(chan error, 1)
		c.WhileLocked(func() {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				sc, err := b.Acquire(ctx)
				if err == nil {
					b.Release(sc)
				}
				got <- err
			}()
			waitBlockedIn(t, "(*Pool).closeIdle") // b's look waits for c
			a.Release(heldA)                      // parked idle
		})
		if err := <-got; err != nil {
			t.Fatalf("round %d: b's borrower: %v; want the connection a parked meanwhile closed for it", round, err)
		}
		c.Release(heldC)
		for _, p := range []*pool.Pool{a, b, c} {
			p.Close()
		}
	}
}

// waitBlockedIn waits until a goroutine running fn waits for a sync.Mutex
// (a 20 s hang guard).
func waitBlockedIn(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for _, g := range bytes.Split(buf[:runtime.Stack(buf, true)], []byte("\n\n")) {
			if bytes.Contains(g, []byte(fn)) && bytes.Contains(g, []byte("sync.(*Mutex).Lock")) {
				return
			}
		}
	}
	t.Fatalf("no goroutine in %s waited for a lock", fn)
}
