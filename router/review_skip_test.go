package router_test

// Review tests: defects found in how pgferry follows the server skipping
// to the next Sync after an error in the extended protocol.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// skipToSync dropped only the expectations already in the ring when the
// error came: a client that sent its pipeline with a Flush and the Sync
// after the error (or whose pipeline the relay loop flushed in part before
// handing the rest to the goroutine, evict) got its later messages pushed
// too, and the server skips them all. The ReadyForQuery of the Sync then
// popped one expectation and left the others, so the ring never emptied:
// the server was never given back (the other client below waited until
// query_wait_timeout), its answers were matched to the wrong requests, and
// notifications and pending SETs waited for a ReadyForQuery that settled
// nothing. Now skipToSync marks the server as skipping (serverSkips) when
// no Sync is owed yet, and the ReadyForQuery of the Sync drops what was
// sent before it.
func TestReviewMessagesTheServerSkipsAfterAnErrorAreNotOwed(t *testing.T) {
	t.Parallel()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	cfg.QueryWaitTimeout = configs.Duration(3 * time.Second)
	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	c.send(parse("", "SELECT 1/0"), bind(""), execMsg(), &pgproto3.Flush{})
	ctx := testContext(t)
	for {
		m, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.ErrorResponse); ok {
			break
		}
	}
	// The server skips these up to the Sync, and answers it alone.
	c.send(parse("", "SELECT 2"), bind(""), execMsg(), syncMsg())
	if got := c.until(1); got != "Z" {
		t.Fatalf("after the error: %q, want the Sync's ReadyForQuery alone", got)
	}
	c.send(&pgproto3.Query{String: "SELECT 3"})
	if got := c.until(1); got != "T D:3 C Z" {
		t.Fatalf("the next query: %q", got)
	}
	// The transaction is over: the one server connection is free for
	// another client.
	other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	if err := other.Exec(ctx, "SELECT 4").Close(); err != nil {
		t.Fatalf("another client: %v (the first client's server connection was never given back)", err)
	}
}
