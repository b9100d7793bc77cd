package router_test

// End-to-end tests of drops of every prepared statement (DEALLOCATE ALL,
// DISCARD ALL) that the server does not run: refused in an aborted
// transaction, skipped after an earlier error of their pipeline, or cut
// short by a lost server. The client keeps its statements, as it would on
// PostgreSQL directly; each script that PostgreSQL can answer runs there
// first, to show that it answers so.

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// onBoth runs script with a raw client straight to PostgreSQL, and then
// through pgferry with maxPrepared statements cached per server
// connection and a pool of one server connection, which another client
// uses where the script calls between.
func onBoth(t *testing.T, maxPrepared int, script func(c *rawClient, between func())) {
	t.Helper()
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	cfg.MaxPreparedStatements = maxPrepared
	f := ferrytest.Start(t, cfg)
	t.Run("postgresql", func(t *testing.T) {
		script(newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password)), func() {})
	})
	t.Run("pgferry", func(t *testing.T) {
		other := newRawClient(t, f.AppDSN())
		script(newRawClient(t, f.AppDSN()), func() {
			other.want("another client on the server", 1, "1 2 D:o C 3 Z", parse("o", "select 'o'"), bind("o"), execMsg(), closeStmt("o"), syncMsg())
		})
	})
}

func simpleQuery(sql string) *pgproto3.Query { return &pgproto3.Query{String: sql} }

func TestAClientsStatementsOutliveADropRefusedInAnAbortedTransaction(t *testing.T) {
	t.Parallel()
	drops := map[string][]pgproto3.FrontendMessage{
		"deallocate all by simple query": {simpleQuery("deallocate all")},
		"discard all by simple query":    {simpleQuery("discard all")},
		"deallocate all by Execute":      {parse("", "deallocate all"), bind(""), execMsg(), syncMsg()},
		"discard all by Execute":         {parse("", "discard all"), bind(""), execMsg(), syncMsg()},
	}
	for name, drop := range drops {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			onBoth(t, 10, func(c *rawClient, between func()) {
				c.want("c prepares", 1, "1 2 D:mine C Z", parse("s", "select 'mine'"), bind("s"), execMsg(), syncMsg())
				c.want("begin", 1, "C Z", simpleQuery("begin"))
				c.want("an error aborts the transaction", 1, "E:22012 Z", simpleQuery("select 1/0"))
				c.want("the drop is refused", 1, "E:25P02 Z", drop...)
				c.want("rollback", 1, "C Z", simpleQuery("rollback"))
				between()
				c.want("c binds its statement", 1, "2 D:mine C Z", bind("s"), execMsg(), syncMsg())
				c.want("and describes it", 1, "t T Z", describeStmt("s"), syncMsg())
			})
		})
	}
}

func TestAClientsStatementsOutliveADropSkippedAfterAnErrorInItsPipeline(t *testing.T) {
	t.Parallel()
	for _, d := range pipelinedDrops {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			onBoth(t, 10, func(c *rawClient, between func()) {
				c.want("c prepares", 1, "1 2 D:mine C Z", parse("s", "select 'mine'"), bind("s"), execMsg(), syncMsg())
				msgs := append([]pgproto3.FrontendMessage{bind("nope"), execMsg()}, d.msgs...)
				c.want("an error, then the drop, skipped", 1, "E:26000 Z", append(msgs, syncMsg())...)
				between()
				c.want("c binds its statement", 1, "2 D:mine C Z", bind("s"), execMsg(), syncMsg())
			})
		})
	}
}

func TestADropThatFailsInItsOwnQueryLeavesTheStatementsAsTheClientPreparedThemSince(t *testing.T) {
	t.Parallel()
	onBoth(t, 10, func(c *rawClient, between func()) {
		c.want("c prepares", 1, "1 1 Z", parse("s", "select 'a'"), parse("t", "select 't'"), syncMsg())
		// The error comes before the DEALLOCATE ALL runs; c closes s and
		// prepares it again behind it, before its answer.
		c.want("the failing drop, and s prepared again", 2, "E:22012 Z 3 1 2 D:b C Z",
			simpleQuery("select 1/0; deallocate all"), closeStmt("s"), parse("s", "select 'b'"), bind("s"), execMsg(), syncMsg())
		between()
		c.want("s is the new one", 1, "2 D:b C Z", bind("s"), execMsg(), syncMsg())
		c.want("t is still there", 1, "2 D:t C Z", bind("t"), execMsg(), syncMsg())
		c.want("the failing drop, and t closed", 2, "E:22012 Z 3 Z", simpleQuery("select 1/0; deallocate all"), closeStmt("t"), syncMsg())
		between()
		c.want("t stays closed", 1, "E:26000 Z", bind("t"), execMsg(), syncMsg())
		c.want("s is still the new one", 1, "2 D:b C Z", bind("s"), execMsg(), syncMsg())
	})
}

func TestADropRefusedBehindAnotherUnansweredDropGoesWithIt(t *testing.T) {
	t.Parallel()
	onBoth(t, 10, func(c *rawClient, between func()) {
		c.want("c prepares", 1, "1 Z", parse("s", "select 's'"), syncMsg())
		c.want("begin and an error", 2, "C Z E:22012 Z", simpleQuery("begin"), simpleQuery("select 1/0"))
		// Both drops go before the first is answered.
		c.want("a refused drop, then one that runs", 3, "E:25P02 Z C Z C Z", simpleQuery("deallocate all"), simpleQuery("rollback"), simpleQuery("deallocate all"))
		between()
		c.want("s is gone", 1, "E:26000 Z", bind("s"), execMsg(), syncMsg())
		c.want("s is still gone", 1, "E:26000 Z", bind("s"), execMsg(), syncMsg())
		c.want("c prepares again", 1, "1 Z", parse("s", "select 's'"), syncMsg())
		c.want("begin and an error", 2, "C Z E:22012 Z", simpleQuery("begin"), simpleQuery("select 1/0"))
		c.want("two refused drops", 3, "E:25P02 Z E:25P02 Z C Z", simpleQuery("deallocate all"), simpleQuery("discard all"), simpleQuery("rollback"))
		between()
		c.want("s is still there", 1, "2 D:s C Z", bind("s"), execMsg(), syncMsg())
	})
}

func TestARefusedDropLeavesTheServersStatementsCachedAndWithinTheCache(t *testing.T) {
	t.Parallel()
	cs, _ := clientsOnOneServer(t, 2, 1)
	c := cs[0]
	c.want("c prepares two", 1, "1 1 Z", parse("a", "select 'a'"), parse("b", "select 'b'"), syncMsg())
	before := c.pgferryStatements(byNameWithTime)
	for _, drop := range []string{"deallocate all", "discard all"} {
		c.want("begin and an error", 2, "C Z E:22012 Z", simpleQuery("begin"), simpleQuery("select 1/0"))
		c.want("the refused "+drop, 2, "E:25P02 Z C Z", simpleQuery(drop), simpleQuery("rollback"))
		c.want("a and b run", 1, "2 D:a C 2 D:b C Z", bind("a"), execMsg(), bind("b"), execMsg(), syncMsg())
		if got := c.pgferryStatements(byNameWithTime); got != before {
			t.Fatalf("after the refused %s, the server's statements are %q, want %q as before (not prepared again)", drop, got, before)
		}
	}
	c.want("begin and an error", 2, "C Z E:22012 Z", simpleQuery("begin"), simpleQuery("select 1/0"))
	c.want("the refused drop", 2, "E:25P02 Z C Z", simpleQuery("deallocate all"), simpleQuery("rollback"))
	c.want("c prepares two more", 1, "1 1 2 D:d C Z", parse("c", "select 'c'"), parse("d", "select 'd'"), bind("d"), execMsg(), syncMsg())
	if n := strings.Count(c.pgferryStatements(byName), ",") + 1; n > 2 {
		t.Fatalf("%d statements on the server, over max_prepared_statements = 2", n)
	}
}

func TestAClientsStatementsOutliveADropWhoseServerIsLostBeforeItsAnswer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	for _, drop := range []string{"deallocate all", "discard all"} {
		cs, db := clientsOnOneServer(t, 10, 2)
		c, other := cs[0], cs[1]
		c.want("c prepares", 1, "1 2 D:mine C Z", parse("s", "select 'mine'"), bind("s"), execMsg(), syncMsg())
		c.send(simpleQuery("select pg_sleep(60)"), simpleQuery(drop))
		waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)'")
		if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'select pg_sleep(60)'", db); err != nil {
			t.Fatal(err)
		}
		if got := c.until(2); strings.Count(got, "E:") != 2 || strings.Contains(got, "C") {
			t.Fatalf("%s: the query and the drop whose server was lost: %q", drop, got)
		}
		other.want("another client", 1, "1 2 D:o C Z", parse("o", "select 'o'"), bind("o"), execMsg(), syncMsg())
		c.want("c binds its statement after "+drop, 1, "2 D:mine C Z", bind("s"), execMsg(), syncMsg())
	}
}
