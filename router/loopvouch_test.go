package router_test

import (
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
)

// The loop lends a connection whose last transaction ended within a
// millisecond of its turn without looking at its socket (the pool's test
// of TryAcquireChecked shows that side). Which loans that covers depends
// on timing, except this: a connection idle longer is always looked at.
func TestTheLoopLooksAtTheSocketOfAConnectionIdleLongerThanItVouchesFor(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 1)
	f := ferrytest.Start(t, cfg)
	pc := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	for i := 0; i < 3; i++ {
		if _, err := pc.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	c := hijack(t, pc)
	for i := 0; i < 3; i++ {
		before := f.Pool(t, "app").Stat.Looks
		time.Sleep(5 * time.Millisecond) // well past what the loop vouches for
		sendRaw(t, c, protocol.AppendQuery(nil, "select 1"))
		frames, closed, err := readFrames(c, 20*time.Second, func(fr frame) bool { return fr.typ == 'Z' })
		if got := describe(frames); closed || err != nil || got != "T D C Z" {
			t.Fatalf("answer %d: %s (%v)", i, got, err)
		}
		if n := f.Pool(t, "app").Stat.Looks - before; n != 1 {
			t.Fatalf("after 5 ms idle, the loop looked at the server's socket %d times before its loan; want once", n)
		}
	}
	if entries, handbacks := loopCounters(t, f); entries != 1 || handbacks != 0 {
		t.Fatalf("the client entered the relay loop %d times and was handed back %d times; want once and never", entries, handbacks)
	}
}
