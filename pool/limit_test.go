package pool_test

import (
	"context"
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
