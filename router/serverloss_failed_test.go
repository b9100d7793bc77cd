package router_test

// End-to-end test of a server lost after it failed a group of
// extended-protocol messages: the group has its error, and its Sync gets
// no second one.

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// A group the server failed (its error relayed at once, no Sync yet),
// whose Sync then goes to a server lost before it answers, gets its
// ReadyForQuery and no second error: the client had the group's error,
// as from PostgreSQL, whose loss then would have closed the connection;
// pgferry's session goes on, and the next group runs on another server.
// Before, the Sync got the lost connection's error too (08006), a second
// error for one group.
func TestAGroupTheServerFailedWhoseSyncFindsTheServerLostGetsOneError(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
		ctx := testContext(t)
		cfg, db := configWithOwnDatabase(t)
		cfg.RelayLoop, cfg.RelayLoopSet = loop, true
		f := ferrytest.Start(t, cfg)
		var killing atomic.Bool
		t.Cleanup(router.SetFaultFor(f.Server, func(app, where string) {
			if app != "lost" || where != "process" || !killing.CompareAndSwap(true, false) {
				return
			}
			// The Sync is about to go: its server goes first.
			if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and usename = 'app'", db); err != nil {
				t.Error(err)
			}
			waitNoBackends(t, ctx, db)
		}))
		c := newRawClient(t, withApp(f, "lost"))
		c.want("a first group", 1, "1 2 D:1 C Z", parse("", "select 1"), bind(""), execMsg(), syncMsg())
		c.send(append(failingStatement(), flushMsg())...)
		if got := c.next(3); got != "1 2 E:22012" {
			t.Fatalf("the failed group: %q", got)
		}
		killing.Store(true)
		c.send(syncMsg())
		if got := c.until(1); got != "Z" {
			t.Fatalf("the failed group's Sync, its server lost: %q, want Z", got)
		}
		c.want("the next group", 1, "1 2 D:3 C Z", parse("", "select 3"), bind(""), execMsg(), syncMsg())
	})
}

// waitNoBackends waits until database db has no backend of user app.
func waitNoBackends(t *testing.T, ctx context.Context, db string) {
	t.Helper()
	ferrytest.Eventually(t, 20*time.Second, "the backend gone", func() (bool, error) {
		n, err := cluster.QueryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and usename = 'app'", db)
		return n == 0, err
	})
}
