package router_test

// End-to-end test of a server its pump loses while the session handles the
// client's next frame: after handleFrame looked whether the session skips
// to its client's Sync, before it sends the frame.

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// A group whose server the pump loses while the session is between its
// look at the client's next frame (a simple Query, DEALLOCATE of one of
// the client's statements, sent behind an Execute and a Flush) and the
// frame's send gets the loss's error once (08006): the frame finds no
// server and the session skipping to the client's Sync (handleFrame's
// errSkipToSync), so it is skipped as the rest of the group is, its
// DEALLOCATE undone (the client keeps its statement); the Sync is
// answered, and the next group runs whole on another server, the kept
// statement prepared again there.
func TestAFrameWhoseServerThePumpLosesAfterTheLookIsSkippedToTheSync(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
		ctx := testContext(t)
		cfg, db := configWithOwnDatabase(t)
		cfg.RelayLoop, cfg.RelayLoopSet = loop, true
		f := ferrytest.Start(t, cfg)
		var killing atomic.Bool
		t.Cleanup(router.SetFaultFor(f.Server, func(app, where string) {
			if app != "look" || where != "local" || !killing.CompareAndSwap(true, false) {
				return
			}
			// handleFrame looked already: the pump loses the server now.
			before := f.Pool(t, "app").Stat.Destroyed
			if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'select pg_sleep(60)'", db); err != nil {
				t.Error(err)
			}
			ferrytest.Eventually(t, 20*time.Second, "the pump saw the server lost", func() (bool, error) {
				return f.Pool(t, "app").Stat.Destroyed > before, nil
			})
		}))
		c := newRawClient(t, withApp(f, "look"))
		c.want("the client's statement", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
		c.send(parse("", "select pg_sleep(60)"), bind(""), execMsg(), flushMsg())
		waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)' and state = 'active'")
		killing.Store(true)
		c.send(&pgproto3.Query{String: "DEALLOCATE k"})
		if got := c.next(3); got != "1 2 E:08006" {
			t.Fatalf("the group whose server was lost: %q, want 1 2 E:08006", got)
		}
		if killing.Load() {
			t.Fatal("the DEALLOCATE was not looked at")
		}
		c.send(syncMsg(), bind("k"), execMsg(), syncMsg())
		if got := c.until(2); got != "Z 2 D:k C Z" {
			t.Fatalf("the group's Sync, then the next group: %q, want Z 2 D:k C Z", got)
		}
	})
}
