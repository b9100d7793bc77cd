package router_test

// End-to-end tests of how pgferry follows the server skipping to the next
// Sync after an error in the extended protocol.

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// failWithFlush sends a failing statement in the extended protocol with a
// Flush and no Sync, and reads up to its error: the server then skips
// everything up to the next Sync.
func (c *rawClient) failWithFlush() {
	c.t.Helper()
	c.send(parse("", "SELECT 1/0"), bind(""), execMsg(), &pgproto3.Flush{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for {
		m, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.ErrorResponse); ok {
			return
		}
	}
}

// A client that leaves while the server skips to a Sync that never comes
// leaves a server that would skip the next client's requests too: it is
// not given back to the pool.
func TestAServerSkippingToASyncIsNotGivenBackWhenItsClientLeaves(t *testing.T) {
	t.Parallel()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	cfg.QueryWaitTimeout = configs.Duration(5 * time.Second)
	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	c.failWithFlush()
	c.send(&pgproto3.Terminate{})
	ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
	defer cancel()
	other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	for i := range 3 {
		if err := other.Exec(ctx, "SELECT 4").Close(); err != nil {
			t.Fatalf("another client's query %d: %v", i, err)
		}
	}
}

// What a client sends after the error, up to its Sync, the server skips:
// a simple Query, a SET, a named statement's Parse. None of it is owed,
// none of it counts, and the server goes back to the pool at the Sync.
func TestWhatTheServerSkipsAfterAnErrorCountsForNothing(t *testing.T) {
	t.Parallel()
	cfg, _, defaults := multiConfig(t, true)
	setPoolSize(cfg, "app", 1)
	cfg.QueryWaitTimeout = configs.Duration(5 * time.Second)
	ctx := testContext(t)
	f := ferrytest.Start(t, cfg)
	c := newRawClient(t, f.AppDSN())
	c.failWithFlush()
	c.want("the skipped requests", 1, "Z",
		&pgproto3.Query{String: "SELECT 3"},
		parse("", "SET search_path TO multi_a"), bind(""), execMsg(),
		parse("s1", "SELECT 7"), bind("s1"), execMsg(),
		syncMsg())
	// The server skipped the Parse of s1: the next one prepares it.
	c.want("s1 again", 1, "1 2 D:7 C Z", parse("s1", "SELECT 7"), bind("s1"), execMsg(), syncMsg())
	c.want("a query", 1, "T D:5 C Z", &pgproto3.Query{String: "SELECT 5"})
	if got := rawView(c); got != defaults {
		t.Fatalf("the client sees %+v; want the defaults %+v: the server skipped its SET", got, defaults)
	}
	other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	if err := other.Exec(ctx, "SELECT 4").Close(); err != nil {
		t.Fatalf("another client: %v (the first client's server connection was never given back)", err)
	}
}

// A client that leaves after an Execute it never followed with a Sync
// leaves its server inside the extended protocol's implicit transaction,
// which PostgreSQL rolls back when the client goes: the server is not
// given back, or the next client's first query would commit the work of
// the one that left.
func TestAServerLeftInsideAnImplicitTransactionIsNotGivenBackWhenItsClientLeaves(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.ConnectPgConn(t, ctx, cluster.SuperDSN(db))
	if err := setup.Exec(ctx, "create table unsynced (x int); grant all on unsynced to app").Close(); err != nil {
		t.Fatal(err)
	}
	c := newRawClient(t, f.AppDSN())
	c.send(parse("", "insert into unsynced values (1)"), bind(""), execMsg(), &pgproto3.Flush{})
	if got := c.next(3); got != "1 2 C" {
		t.Fatalf("the insert without a Sync: %s", got)
	}
	c.send(&pgproto3.Terminate{})
	other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	if err := other.Exec(ctx, "select 1").Close(); err != nil {
		t.Fatalf("the next client's query: %v", err)
	}
	res, err := setup.Exec(ctx, "select count(*) from unsynced").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if n := string(res[0].Rows[0][0]); n != "0" {
		t.Fatalf("unsynced holds %s rows; want none: the client that inserted left before its Sync", n)
	}
}

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
func TestMessagesTheServerSkipsAfterAnErrorAreNotOwed(t *testing.T) {
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
