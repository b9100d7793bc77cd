package pool_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
)

// chanWaker is a pool.Waker that posts to a channel.
type chanWaker chan struct{}

func (w chanWaker) Granted() {
	select {
	case w <- struct{}{}:
	default:
		panic("a ticket was granted twice")
	}
}

// borrowAndEnd ends a loan in one of the ways a session does.
func borrowAndEnd(p *pool.Pool, sc *pool.ServerConn, r *rand.Rand) {
	switch r.IntN(6) {
	case 0:
		p.Destroy(sc)
	case 1:
		p.Release(sc)
	default:
		p.ReleaseReady(sc)
	}
}

// churn borrows from p in every way a session does, for n rounds: blocking
// waits that give up, tries, tickets taken and tickets cancelled as they
// are granted.
func churn(t *testing.T, p *pool.Pool, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, 1))
	wk := make(chanWaker, 1)
	for range n {
		switch r.IntN(4) {
		case 0: // a wait with a short query_wait_timeout
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(20000))*time.Microsecond)
			sc, err := p.Acquire(ctx)
			cancel()
			if err == nil {
				borrowAndEnd(p, sc, r)
			} else if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Acquire: %v", err)
				return
			}
		case 1:
			if sc := p.TryAcquireChecked(0); sc != nil {
				borrowAndEnd(p, sc, r)
			}
		default: // a ticket
			tk, err := p.Enqueue(wk)
			if errors.Is(err, pool.ErrWouldWait) {
				continue
			}
			if err != nil {
				t.Errorf("Enqueue: %v", err)
				return
			}
			if r.IntN(3) == 0 {
				tk.Cancel() // perhaps in the instant it is granted
				select {
				case <-wk: // (told before the Cancel: drain it)
				default:
				}
				continue
			}
			select {
			case <-wk:
			case <-time.After(time.Duration(r.IntN(20000)) * time.Microsecond):
				tk.Cancel()
				select {
				case <-wk:
				default:
				}
				continue
			}
			sc, err := tk.Take()
			if errors.Is(err, pool.ErrWouldWait) {
				continue
			}
			if err != nil {
				t.Errorf("Take: %v", err)
				return
			}
			borrowAndEnd(p, sc, r)
		}
	}
}

func TestPoolsUnderSharedCapsCountEveryConnectionAndWaiterRightAfterAChurnOfLoansWaitsAndTickets(t *testing.T) {
	db, user := pool.NewSettableLimit(4), pool.NewLimit(5)
	ca, cb := config(3), config(2)
	ca.ReserveSize, ca.ReserveTimeout = 1, time.Millisecond
	cb.MinSize = 1
	ca.DBLimit, cb.DBLimit, ca.UserLimit, cb.UserLimit = db, db, user, user
	pools := []*pool.Pool{pool.New(ca), pool.New(cb)}

	var wg sync.WaitGroup
	for i, p := range pools {
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				churn(t, p, uint64(i*100+g), 150)
			}()
		}
	}
	// Meanwhile: RECONNECT, janitor passes, the cap lowered and raised.
	stop := make(chan struct{})
	var admin sync.WaitGroup
	admin.Add(1)
	go func() {
		defer admin.Done()
		r := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			switch r.IntN(4) {
			case 0:
				pools[r.IntN(2)].Reconnect()
			case 1:
				pools[r.IntN(2)].Maintain()
			case 2:
				db.SetMax(2 + r.IntN(3))
			}
		}
	}()
	wg.Wait()
	close(stop)
	admin.Wait()
	db.SetMax(4)

	// Nothing is lent, queued or dialing; every open connection is idle and
	// counted once under each cap.
	settled := func() bool {
		total := 0
		for _, p := range pools {
			st := p.Stat()
			if st.Active != 0 || st.Waiting != 0 || st.Dialing != 0 || st.Idle != st.Total {
				return false
			}
			total += st.Total
		}
		return db.Stat().InUse == total && user.Stat().InUse == total
	}
	waitFor(t, "the pools' counts to settle", settled)
	for _, p := range pools {
		t.Logf("%v: %+v", p, p.Stat())
	}
	for _, p := range pools {
		if st := p.Stat(); st.Total > p.Config().Size+p.Config().ReserveSize {
			t.Errorf("%v: %d open, over its size", p, st.Total)
		}
	}
	// Each pool can still lend: none thinks it is full.
	for _, p := range pools {
		p.Release(acquire(t, p))
	}
	for _, p := range pools {
		p.Close()
	}
	waitFor(t, "every connection to close", func() bool {
		return pools[0].Drained() && pools[1].Drained() && db.Stat().InUse == 0 && user.Stat().InUse == 0
	})
}
