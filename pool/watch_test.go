package pool_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
)

func TestAnOverdueWatchInterruptsTheBorrowersReadAndReleaseClearsIt(t *testing.T) {
	p := newPool(t, config(1))
	sc := acquire(t, p)

	sc.Watch(5)
	if n := p.InterruptOverdue(4); n != 1 {
		t.Fatalf("InterruptOverdue(4) reports %d watched loans, want 1", n)
	}
	// Not due yet: a query still gets its answer.
	sc.Wr.SetBuffer(protocol.AppendQuery(sc.Wr.Buffer(), "select 1"))
	if err := sc.Wr.Flush(); err != nil {
		t.Fatal(err)
	}
	readUntilReady(t, sc.Rd)

	// Due: the next read fails at once with a timeout.
	p.InterruptOverdue(5)
	if _, err := sc.Rd.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the watch fired: err = %v, want a deadline error", err)
	}
	if n := p.InterruptOverdue(100); n != 1 {
		t.Fatalf("a fired watch still counts until the loan ends: got %d, want 1", n)
	}

	p.Release(sc)
	if n := p.InterruptOverdue(100); n != 0 {
		t.Fatalf("after Release %d loans are watched, want 0", n)
	}
	// The next borrower gets the same connection without the deadline.
	sc = acquire(t, p)
	sc.Wr.SetBuffer(protocol.AppendQuery(sc.Wr.Buffer(), "select 2"))
	if err := sc.Wr.Flush(); err != nil {
		t.Fatal(err)
	}
	readUntilReady(t, sc.Rd)
	p.Release(sc)
}

func TestAStoppedWatchNeverFires(t *testing.T) {
	p := newPool(t, config(1))
	sc := acquire(t, p)
	sc.Watch(1)
	sc.StopWatch()
	if n := p.InterruptOverdue(100); n != 0 {
		t.Fatalf("InterruptOverdue reports %d watched loans after StopWatch, want 0", n)
	}
	sc.Wr.SetBuffer(protocol.AppendQuery(sc.Wr.Buffer(), "select 1"))
	if err := sc.Wr.Flush(); err != nil {
		t.Fatal(err)
	}
	readUntilReady(t, sc.Rd)
	p.Release(sc)
}

func readUntilReady(t *testing.T, rd *protocol.Reader) {
	t.Helper()
	for {
		f, err := rd.Next()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if f[0] == protocol.MsgReadyForQuery {
			return
		}
	}
}

func TestAConnectionKeepsItsBuffersBetweenLoansAndReturnsThemOnceIdle(t *testing.T) {
	p := newPool(t, config(1))
	sc := acquire(t, p)
	sc.Wr.SetBuffer(protocol.AppendQuery(sc.Wr.Buffer(), "select 1"))
	if err := sc.Wr.Flush(); err != nil {
		t.Fatal(err)
	}
	readUntilReady(t, sc.Rd)
	p.Release(sc)
	sc = acquire(t, p)
	if !sc.Rd.HoldsBuffer() || !sc.Wr.HoldsBuffer() {
		t.Fatal("a connection lent again at once had given its buffers back; every loan would take them anew")
	}
	p.Release(sc)
	// The janitor runs once a second and frees buffers idle a second.
	time.Sleep(2500 * time.Millisecond)
	sc = acquire(t, p)
	defer p.Release(sc)
	if sc.Rd.HoldsBuffer() || sc.Wr.HoldsBuffer() {
		t.Fatal("a connection idle for seconds still held its read or write buffer")
	}
}

func TestAcquireUntilGivesUpWhenItsTimerFiresAndLeavesTheQueue(t *testing.T) {
	p := newPool(t, config(1))
	held := acquire(t, p)
	timer := time.NewTimer(50 * time.Millisecond)
	if _, err := p.AcquireUntil(timer.C); !errors.Is(err, pool.ErrWaitTimeout) {
		t.Fatalf("AcquireUntil with the only connection lent: %v, want ErrWaitTimeout", err)
	}
	if st := p.Stat(); st.Waiting != 0 {
		t.Fatalf("%d waiters still queued after the wait expired", st.Waiting)
	}
	p.Release(held)
	// The same timer, reset, serves the next wait; a free connection comes
	// back at once.
	timer.Reset(time.Minute)
	sc, err := p.AcquireUntil(timer.C)
	timer.Stop()
	if err != nil {
		t.Fatal(err)
	}
	p.Release(sc)
	// No limit at all.
	sc, err = p.AcquireUntil(nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Release(sc)
}
