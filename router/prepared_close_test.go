package router_test

// End-to-end tests of a Close of a named statement that the client
// prepared through the protocol, which pgferry answers itself: the
// client's name goes as PostgreSQL's would, for good when the server runs
// the Close, and not when it skips it after an error earlier in its
// pipeline (up to the Sync) or the server is lost first. Each script runs
// on PostgreSQL directly first and then through pgferry, with the relay
// loop off and on, and must get the same answers.

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

func TestACloseThatPostgreSQLSkipsLeavesTheStatement(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		c.want("c prepares k", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
		c.want("a Close skipped after a Parse's error, and a Bind of k after its Sync", 2, "E:42601 Z 2 D:k C Z",
			parse("", "not sql"), closeStmt("k"), syncMsg(), bind("k"), execMsg(), syncMsg())
		between()
		c.want("a Close skipped after a Bind's error", 1, "E:26000 Z", bind("nope"), execMsg(), closeStmt("k"), syncMsg())
		between()
		c.want("k is still there", 1, "2 D:k C Z", bind("k"), execMsg(), syncMsg())
		c.want("a Close skipped, then one that runs", 3, "E:42601 Z 3 Z E:26000 Z",
			parse("", "not sql"), closeStmt("k"), syncMsg(), closeStmt("k"), syncMsg(), bind("k"), execMsg(), syncMsg())
		between()
		c.want("k is gone", 1, "E:26000 Z", bind("k"), execMsg(), syncMsg())
	})
}

func TestACloseThatPostgreSQLRunsDropsTheStatement(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		c.want("c prepares k", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
		c.want("a Close, and a Bind of k in its run and after its Sync", 2, "3 E:26000 Z E:26000 Z",
			closeStmt("k"), bind("k"), execMsg(), syncMsg(), bind("k"), execMsg(), syncMsg())
		between()
		c.want("k is gone", 1, "E:26000 Z", bind("k"), execMsg(), syncMsg())
		c.want("c prepares k again", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
		c.wantTagged("begin and an error", 2, "C:BEGIN Z:T E:22012 Z:E", simpleQuery("begin"), simpleQuery("select 1/0"))
		c.wantTagged("a Close in the failed transaction runs", 1, "3 Z:E", closeStmt("k"), syncMsg())
		c.wantTagged("rollback", 1, "C:ROLLBACK Z:I", simpleQuery("rollback"))
		between()
		c.want("k is gone", 1, "E:26000 Z", bind("k"), execMsg(), syncMsg())
	})
}

// A Close of a name that a drop still unanswered set aside (DEALLOCATE
// ALL after an error in its query, so that it fails) takes that name
// alone if the drop fails, and so does a DEALLOCATE of one name behind
// it: the drop's other names come back to the client.
func TestAFailedDropGivesBackWhatTheClosesAndDeallocatesBehindItDoNotTake(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		c.want("c prepares k and m", 1, "1 1 Z", parse("k", "select 'k'"), parse("m", "select 'm'"), syncMsg())
		c.want("a failed DEALLOCATE ALL, a Close of m behind it, then k and m bound", 4, "E:22012 Z 3 Z 2 D:k C Z E:26000 Z",
			simpleQuery("select 1/0; deallocate all"), closeStmt("m"), syncMsg(),
			bind("k"), execMsg(), syncMsg(), bind("m"), execMsg(), syncMsg())
		between()
		c.want("c prepares m again", 1, "1 Z", parse("m", "select 'm'"), syncMsg())
		c.want("a failed DEALLOCATE ALL, a Close of k and k prepared again, DEALLOCATE k, then m and k bound", 5,
			"E:22012 Z 3 1 Z C Z 2 D:m C Z E:26000 Z",
			simpleQuery("select 1/0; deallocate all"), closeStmt("k"), parse("k", "select 'k2'"), syncMsg(),
			simpleQuery("deallocate k"), bind("m"), execMsg(), syncMsg(), bind("k"), execMsg(), syncMsg())
		between()
		c.want("m is still there", 1, "2 D:m C Z", bind("m"), execMsg(), syncMsg())
	})
}

// A Close that went to a server lost before it answered gets the lost
// connection's error with the rest of its group, and the client keeps its
// statement, as behind an error on PostgreSQL, where the Close is skipped.
func TestACloseWhoseServerIsLostLeavesTheStatement(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
		p := startCutPipeline(t, loop)
		p.want("prepare k", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
		p.cut(1, closeStmt("k"))
		if got := p.until(1); got != "1 2 E:08006 Z" {
			t.Fatalf("the group whose server was lost: %q, want 1 2 E:08006 Z", got)
		}
		rest := msgs(syncMsg(), bind("k"), execMsg(), syncMsg())
		p.send(rest...)
		got := p.until(2)
		if got != "E:08006 Z 2 D:k C Z" {
			t.Fatalf("the Close's Sync, then a Bind of k: %q, want E:08006 Z 2 D:k C Z", got)
		}
		direct := newRawClient(t, cluster.DSN(p.db, ferrytest.User, ferrytest.Password))
		direct.want("prepare k", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
		direct.send(append(msgs(parse("", "not sql"), closeStmt("k")), rest...)...)
		if pg := direct.until(2); withoutCodes(pg) != withoutCodes(got) {
			t.Fatalf("pgferry answered %q, PostgreSQL %q behind an error", got, pg)
		}
	})
}

// A Close of a named statement, or a simple-query DEALLOCATE of one, read
// while its group still goes to a server that is lost before pgferry looks
// at it (the fault point "local" holds it until then) is skipped with the
// rest of the group, and the client keeps its statement, as PostgreSQL
// skips it behind an error. Only with the relay loop off: there a pump
// reads the server while the session's goroutine reads the client, and
// sees the loss in between; the relay loop does both itself.
func TestAStatementDropReadAsItsServerIsLostIsSkipped(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	tests := []struct {
		name string
		drop pgproto3.FrontendMessage
	}{
		{"a Close", closeStmt("k")},
		{"a simple-query DEALLOCATE", simpleQuery("deallocate k")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, db := configWithOwnDatabase(t)
			cfg.MaxPreparedStatements = 10
			cfg.RelayLoop, cfg.RelayLoopSet = false, true
			f := ferrytest.Start(t, cfg)
			var held atomic.Bool
			reached, release := make(chan struct{}), make(chan struct{})
			t.Cleanup(router.SetFaultFor(f.Server, func(app, where string) {
				if app == "cut" && where == "local" && held.CompareAndSwap(false, true) {
					close(reached)
					<-release
				}
			}))
			c := newRawClient(t, withApp(f, "cut"))
			c.want("prepare k", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
			c.send(parse("", "select pg_sleep(60)"), bind(""), execMsg(), syncMsg())
			waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)' and state = 'active'")
			rest := msgs(tc.drop, syncMsg(), bind("k"), execMsg(), syncMsg())
			c.send(append(msgs(parse("", "select 2")), rest...)...)
			select {
			case <-reached:
			case <-time.After(20 * time.Second):
				t.Fatal("pgferry did not read the drop")
			}
			before := f.Pool(t, "app").Stat.Destroyed
			if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'select pg_sleep(60)'", db); err != nil {
				t.Fatal(err)
			}
			ferrytest.Eventually(t, 20*time.Second, "the lost server destroyed", func() (bool, error) {
				return f.Pool(t, "app").Stat.Destroyed > before, nil
			})
			close(release)
			got := c.until(3)
			first, tail, _ := strings.Cut(got, " Z ")
			if first != "1 2 E:08006" || tail != "E:08006 Z 2 D:k C Z" {
				t.Fatalf("the groups: %q, want 1 2 E:08006 Z E:08006 Z 2 D:k C Z", got)
			}
			direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
			direct.want("prepare k", 1, "1 Z", parse("k", "select 'k'"), syncMsg())
			direct.send(append(msgs(parse("", "not sql")), rest...)...)
			if pg := direct.until(2); withoutCodes(pg) != withoutCodes(tail) {
				t.Fatalf("pgferry answered %q, PostgreSQL %q behind an error", tail, pg)
			}
		})
	}
}

// A Close of a named statement that begins a loan whose server replays
// another client's parameters goes behind the replay's guard as any
// request does, so the requests behind it wait for the replay's answer:
// a second simple Query in a group that failed before it is skipped with
// the rest of the group up to the client's Sync, as PostgreSQL skips it.
// Before, with the relay loop, the Close went unguarded (closeLocally's
// Close of its throwaway name, sent in place of the client's, bypassed
// process), so nothing waited for the replay's answer, and the second
// Query, which the first had left outside a group (ring.open), went
// behind a guard and a Sync of pgferry's (syncBehind): that Sync ended
// the server's skip, and the client got a ReadyForQuery too many and the
// Describe's error behind it (the pipeline differential test's seed 318
// in a deep run: "3 1 E:34000 Z E:26000 Z E:26000 Z" for "3 1 E:34000 Z
// E:26000 Z").
func TestAQueryInAFailedGroupBehindACloseThatBeganAReplayingLoanIsSkipped(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
		cfg, db := configWithOwnDatabase(t)
		cfg.RelayLoop, cfg.RelayLoopSet = loop, true
		setPoolSize(cfg, "app", 1)
		f := ferrytest.Start(t, cfg)
		leave := msgs(simpleQuery("set search_path = public"))
		pipeline := msgs(closeStmt("s2"), parse("", "select 1"), &pgproto3.Execute{Portal: "p1"}, simpleQuery("select 1"),
			simpleQuery("select 2"), describeStmt("nope"), syncMsg(), bind("nope"), syncMsg())
		direct := cluster.DSN(db, ferrytest.User, ferrytest.Password)
		pipelineAnswers(t, direct, leave)
		pg := pipelineAnswers(t, direct, pipeline)
		if want := "3 1 E:34000 Z E:26000 Z I Z"; pg != want {
			t.Fatalf("PostgreSQL answered %q, the test expects %q", pg, want)
		}
		for round := range 5 {
			// A client before leaves its search_path on the server: the
			// next client's loan begins with a replay.
			pipelineAnswers(t, f.AppDSN(), leave)
			if got := pipelineAnswers(t, f.AppDSN(), pipeline); got != pg {
				t.Fatalf("round %d: pgferry answered %q, PostgreSQL %q", round, got, pg)
			}
		}
	})
}
