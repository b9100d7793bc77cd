package pool

import (
	"context"
	"testing"
	"time"
)

// waitUntil polls cond until it holds (a hang guard fails the test after
// 20 s).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A pool whose dial the user cap refuses holds no share of the database
// cap meanwhile: another pool under the database cap that asks for room
// while the user cap is being looked at is not refused for it, and dials
// at once, without waiting for a janitor's pass (janitors are off here).
func TestAPoolRefusedByTheUserCapHoldsNoShareOfTheDatabaseCapMeanwhile(t *testing.T) {
	SetJanitorInterval(t, time.Hour) // (process-wide: not parallel)
	db := NewLimit(1)
	fullUser, otherUser := NewSettableLimit(0), NewLimit(5)
	hang := func(ctx context.Context, _ *DialConfig) (*ServerConn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	refused := New(Config{Size: 5, DBLimit: db, UserLimit: fullUser, DialFunc: hang})
	asking := New(Config{Size: 5, DBLimit: db, UserLimit: otherUser, DialFunc: hang})
	t.Cleanup(refused.Close)
	t.Cleanup(asking.Close)

	// The user cap is being looked at (its lock held) when the refused
	// pool's waiter asks for a dial.
	fullUser.mu.Lock()
	unlocked := false
	defer func() {
		if !unlocked {
			fullUser.mu.Unlock()
		}
	}()
	go refused.AcquireUntil(nil) //nolint:errcheck // (ends with the pool's Close)
	waitUntil(t, "the refused pool to be past the database cap", func() bool {
		if !db.mu.TryLock() {
			return true // held across the user cap's look, or being taken
		}
		defer db.mu.Unlock()
		return db.cur == 1
	})

	// The other pool asks for room under the database cap meanwhile.
	go asking.AcquireUntil(nil) //nolint:errcheck
	waitUntil(t, "the other pool to ask the database cap", func() bool {
		if db.mu.TryLock() {
			_, starved := db.hungry[asking]
			db.mu.Unlock()
			return starved // refused for the share the other pool holds
		}
		if asking.mu.TryLock() {
			asking.mu.Unlock()
			return false
		}
		return true // it waits for the database cap, with its own lock
	})

	fullUser.mu.Unlock() // the user cap refuses
	unlocked = true
	waitUntil(t, "the other pool to dial", func() bool { return asking.Stat().Dialing == 1 })
	if st := db.Stat(); st.InUse != 1 {
		t.Fatalf("the database cap counts %d connections; want the other pool's dial alone", st.InUse)
	}
}
