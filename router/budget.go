package router

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgferry/pgferry/pool"
)

// budgetWatch enforces inlineBudget without a timer per loan. A loan that
// starts an inline relay records the current tick on its server
// (ServerConn.Watch: one atomic store, no system call); the watch's
// goroutine advances the tick every budgetTick and interrupts servers
// whose loans started budgetTicks or more ticks ago. Setting and clearing
// a read deadline per loan cost more CPU than relaying a short query.
//
// While no loan is watched for a second, the goroutine sleeps until the
// next loan starts, so an idle pgferry does not wake up. It starts with the
// first loan and Server.Shutdown stops it.
type budgetWatch struct {
	srv     *Server
	tick    atomic.Int64
	dormant atomic.Bool
	wake    chan struct{} // one pending wake-up from dormancy

	once    sync.Once
	mu      sync.Mutex
	stop    chan struct{} // closed by close
	done    chan struct{} // closed when loop returns (or was never started)
	closed  bool
	running bool

	entries []*poolEntry // loop's scratch list of pools
}

const (
	budgetTick = 25 * time.Millisecond
	// budgetTicks is how many ticks a loan must have started before for
	// its watch to fire: a loan that started anywhere inside tick k fires
	// at tick k+3, after more than 50 ms (inlineBudget) and at most 75 ms.
	budgetTicks = int64(inlineBudget/budgetTick) + 1
	// budgetQuietTicks without a watched loan make the goroutine sleep.
	budgetQuietTicks = int(time.Second / budgetTick)
)

// watch starts a watch on the loan's server, starting the goroutine on
// first use and waking it from dormancy. The watch is stored first: either
// the loop's last scan before sleeping sees it, or this finds the loop
// dormant and wakes it.
func (b *budgetWatch) watch(sc *pool.ServerConn) {
	b.once.Do(b.start)
	sc.Watch(b.tick.Load())
	if b.dormant.Load() && b.dormant.CompareAndSwap(true, false) {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

func (b *budgetWatch) start() {
	b.tick.Store(1)
	b.wake = make(chan struct{}, 1)
	b.stop = make(chan struct{})
	b.done = make(chan struct{})
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(b.done)
		return
	}
	b.running = true
	go b.loop()
}

func (b *budgetWatch) loop() {
	defer close(b.done)
	t := time.NewTicker(budgetTick)
	defer t.Stop()
	quiet := 0
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		now := b.tick.Add(1)
		if b.scan(now-budgetTicks) > 0 {
			quiet = 0
			continue
		}
		if quiet++; quiet < budgetQuietTicks {
			continue
		}
		// Announce dormancy, then look once more: a loan that started
		// before the announcement is found here, one after it wakes us.
		b.dormant.Store(true)
		if b.scan(now-budgetTicks) > 0 && b.dormant.CompareAndSwap(true, false) {
			quiet = 0
			continue
		}
		t.Stop()
		select {
		case <-b.stop:
			return
		case <-b.wake:
		}
		quiet = 0
		t.Reset(budgetTick)
	}
}

// scan fires the watches that started at or before tick before and
// reports how many loans are watched. Entries a reload retired are scanned
// until their pools have closed every connection: a transaction that began
// before the reload keeps its server, and its inline relay its budget.
func (b *budgetWatch) scan(before int64) int {
	s := b.srv
	s.mu.Lock()
	b.entries = b.entries[:0]
	for _, e := range s.pools {
		b.entries = append(b.entries, e)
	}
	s.retired = slices.DeleteFunc(s.retired, (*poolEntry).drained)
	b.entries = append(b.entries, s.retired...)
	s.mu.Unlock()
	watched := 0
	for _, e := range b.entries {
		watched += e.pool.InterruptOverdue(before)
		for _, r := range e.replicas {
			watched += r.pool.InterruptOverdue(before)
		}
	}
	clear(b.entries)
	return watched
}

// close stops the goroutine and waits for it.
func (b *budgetWatch) close() {
	b.mu.Lock()
	b.closed = true
	running := b.running
	b.running = false
	b.mu.Unlock()
	if running {
		close(b.stop)
		<-b.done
	}
}
