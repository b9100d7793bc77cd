package pool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
)

func TestTheReservePoolOpensForAWaiterThatBecameOldestAfterTheOneItsCheckWasArmedForLeft(t *testing.T) {
	pool.SetJanitorInterval(t, time.Hour) // no janitor pass to fall back on
	const timeout = 400 * time.Millisecond
	cfg := config(1)
	cfg.ReserveSize, cfg.ReserveTimeout = 1, timeout
	p := newPool(t, cfg)
	held := acquire(t, p)
	defer p.Release(held)

	// The first waiter queues: the reserve's check is armed for it...
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := p.Acquire(ctx1)
		first <- err
	}()
	waitFor(t, "the first waiter to wait half reserve_pool_timeout", func() bool { return p.Stat().MaxWait >= timeout/2 })
	// ... a second queues half reserve_pool_timeout later, and the first
	// gives up before the check: the second has not waited long enough then.
	second := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		sc, err := p.Acquire(ctx)
		if err == nil {
			p.Release(sc)
		}
		second <- err
	}()
	waitFor(t, "the second waiter to queue", func() bool { return p.Stat().Waiting == 2 })
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the first waiter: %v", err)
	}
	// Once it has waited reserve_pool_timeout, the reserve opens for it.
	if err := <-second; err != nil {
		t.Fatalf("the second waiter: %v; want a reserve connection once it had waited reserve_pool_timeout", err)
	}
	if st := p.Stat(); st.Total != 2 {
		t.Fatalf("%d open; want 2 with the reserve", st.Total)
	}
}

// TestAReserveTimeoutOfZeroOpensNoReserve: reserve_pool_timeout = 0
// disables the reserve pool in PgBouncer 1.25.2 (objects.c
// launch_new_connection tries the reserve only when cf_res_pool_timeout
// is not 0; its doc/config.md: "0 disables"). pgferry opened the reserve
// for a waiter at once, as if it had waited long enough: with a pool of 1
// and a reserve of 1, a second client got a second connection instead of
// waiting for the first to come back.
func TestAReserveTimeoutOfZeroOpensNoReserve(t *testing.T) {
	pool.SetJanitorInterval(t, 10*time.Millisecond) // janitor passes that would open it
	cfg := config(1)
	cfg.ReserveSize, cfg.ReserveTimeout = 1, 0
	p := newPool(t, cfg)
	held := acquire(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waiter := make(chan error, 1)
	go func() {
		sc, err := p.Acquire(ctx)
		if err == nil {
			p.Release(sc)
		}
		waiter <- err
	}()
	waitFor(t, "the waiter to wait through janitor passes (it got a reserve connection instead?)", func() bool {
		return p.Stat().MaxWait >= 200*time.Millisecond
	})
	if st := p.Stat(); st.Total != 1 {
		t.Fatalf("%d open; want 1: reserve_pool_timeout = 0 opens no reserve", st.Total)
	}
	p.Release(held)
	if err := <-waiter; err != nil {
		t.Fatalf("the waiter, once the connection came back: %v", err)
	}
}
