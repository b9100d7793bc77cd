package router_test

// End-to-end tests of SQL DEALLOCATE of one name that the client prepared
// through the protocol (psycopg 3 on libpq before 17 evicts its statement
// cache so). Each script runs on PostgreSQL directly first and then
// through pgferry, with the relay loop off and on, and must get the same
// answers, CommandComplete tags included: the statement is gone for the
// client after a DEALLOCATE PostgreSQL runs, and stays after one it
// refuses or skips.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// onBothEachLoop is onBoth (a pool of one server connection, which another
// client uses where the script calls between) with the relay loop off and
// on.
func onBothEachLoop(t *testing.T, script func(c *rawClient, between func())) {
	t.Helper()
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %v", loop), func(t *testing.T) {
			cfg, db := configWithOwnDatabase(t)
			setPoolSize(cfg, "app", 1)
			cfg.MaxPreparedStatements = 10
			cfg.RelayLoop, cfg.RelayLoopSet = loop, true
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
		})
	}
}

// wantTagged is want with each CommandComplete shown with its tag
// ("C:DEALLOCATE") and each ReadyForQuery with its status ("Z:T").
func (c *rawClient) wantTagged(what string, syncs int, want string, msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	c.send(msgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	for syncs > 0 {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("%s: receive after %v: %v", what, out, err)
		}
		w := word(msg)
		switch m := msg.(type) {
		case *pgproto3.CommandComplete:
			w = "C:" + string(m.CommandTag)
		case *pgproto3.ReadyForQuery:
			w = "Z:" + string(m.TxStatus)
			syncs--
		}
		if w != "" {
			out = append(out, w)
		}
	}
	if got := strings.Join(out, " "); got != want {
		c.t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// deallocPrepares has c prepare statement s.
func deallocPrepares(c *rawClient) {
	c.t.Helper()
	c.want("c prepares s", 1, "1 2 D:mine C Z", parse("s", "select 'mine'"), bind("s"), execMsg(), syncMsg())
}

// deallocGone checks that c's statement s is gone, and that c can
// prepare it again.
func deallocGone(c *rawClient) {
	c.t.Helper()
	c.want("s is gone", 1, "E:26000 Z", bind("s"), execMsg(), syncMsg())
	c.want("c prepares s again", 1, "1 2 D:again C Z", parse("s", "select 'again'"), bind("s"), execMsg(), syncMsg())
}

// deallocKept checks that c still has its statement s.
func deallocKept(c *rawClient) {
	c.t.Helper()
	c.want("c binds s", 1, "2 D:mine C Z", bind("s"), execMsg(), syncMsg())
}

// deallocs are the ways a client runs DEALLOCATE s, each with its
// answer up to its ReadyForQuery, or, for those ending without a Sync
// (the script adds it), before.
var deallocs = []struct {
	name string
	msgs []pgproto3.FrontendMessage
	want string
}{
	{"simple query", []pgproto3.FrontendMessage{simpleQuery("deallocate s")}, "C:DEALLOCATE"},
	{"simple query, PREPARE and case", []pgproto3.FrontendMessage{simpleQuery("DEALLOCATE PREPARE S;")}, "C:DEALLOCATE"},
	{"simple query, quoted", []pgproto3.FrontendMessage{simpleQuery(`deallocate /* it */ "s"`)}, "C:DEALLOCATE"},
	{"unnamed statement", []pgproto3.FrontendMessage{parse("", "deallocate s"), bind(""), execMsg()}, "1 2 C:DEALLOCATE"},
	{"named statement", []pgproto3.FrontendMessage{parse("d", "deallocate s"), bind("d"), execMsg()}, "1 2 C:DEALLOCATE"},
	{"as psycopg pipelines it", []pgproto3.FrontendMessage{parse("", "DEALLOCATE s"), bind(""),
		&pgproto3.Describe{ObjectType: 'P'}, execMsg()}, "1 2 n C:DEALLOCATE"},
}

// withSync returns d's messages ending in a Sync, and its answer with the
// ReadyForQuery of status status.
func withSync(msgs []pgproto3.FrontendMessage, want string, status string) ([]pgproto3.FrontendMessage, string) {
	if _, ok := msgs[len(msgs)-1].(*pgproto3.Query); ok {
		return msgs, want + " Z:" + status
	}
	return append(append([]pgproto3.FrontendMessage{}, msgs...), syncMsg()), want + " Z:" + status
}

func TestADeallocateOfAClientsProtocolStatementDropsIt(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		for _, d := range deallocs {
			deallocPrepares(c)
			msgs, want := withSync(d.msgs, d.want, "I")
			c.wantTagged(d.name, 1, want, msgs...)
			between()
			deallocGone(c)
			c.want("s goes", 1, "3 Z", closeStmt("s"), syncMsg())
		}
	})
}

func TestADeallocateInATransactionIsNotUndoneByItsRollback(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		for _, d := range deallocs {
			deallocPrepares(c)
			c.wantTagged("begin", 1, "C:BEGIN Z:T", simpleQuery("begin"))
			msgs, want := withSync(d.msgs, d.want, "T")
			c.wantTagged(d.name, 1, want, msgs...)
			c.want("s is gone inside the transaction", 1, "E:26000 Z", bind("s"), execMsg(), syncMsg())
			c.wantTagged("rollback", 1, "C:ROLLBACK Z:I", simpleQuery("rollback"))
			between()
			deallocGone(c)
			c.want("s goes", 1, "3 Z", closeStmt("s"), syncMsg())
		}
	})
}

func TestADeallocateRefusedInAnAbortedTransactionLeavesTheStatement(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		deallocPrepares(c)
		for _, d := range deallocs {
			c.want("begin and an error", 2, "C Z E:22012 Z", simpleQuery("begin"), simpleQuery("select 1/0"))
			msgs, _ := withSync(d.msgs, "", "")
			c.wantTagged(d.name+" is refused", 1, "E:25P02 Z:E", msgs...)
			c.want("rollback", 1, "C Z", simpleQuery("rollback"))
			between()
			deallocKept(c)
			// Sent before the error that aborts the transaction is
			// answered: pgferry learns it failed from the answers.
			c.wantTagged(d.name+" pipelined behind the error", 3, "C:BEGIN Z:T E:22012 Z:E E:25P02 Z:E",
				append([]pgproto3.FrontendMessage{simpleQuery("begin"), simpleQuery("select 1/0")}, msgs...)...)
			c.want("rollback", 1, "C Z", simpleQuery("rollback"))
			between()
			deallocKept(c)
		}
	})
}

func TestADeallocateOfAPortalBoundBeforeTheTransactionFailedIsRefused(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		deallocPrepares(c)
		c.wantTagged("begin, and a portal of DEALLOCATE s", 2, "C:BEGIN Z:T 1 2 Z:T", simpleQuery("begin"),
			parse("d", "deallocate s"), &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "d"}, syncMsg())
		c.want("an error", 1, "E:22012 Z", simpleQuery("select 1/0"))
		c.wantTagged("its Execute is refused", 1, "E:25P02 Z:E", &pgproto3.Execute{Portal: "p"}, syncMsg())
		c.want("rollback", 1, "C Z", simpleQuery("rollback"))
		between()
		deallocKept(c)
		c.wantTagged("begin, and a portal of DEALLOCATE s", 2, "C:BEGIN Z:T 2 Z:T", simpleQuery("begin"),
			&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "d"}, syncMsg())
		c.wantTagged("its Execute runs", 1, "C:DEALLOCATE Z:T", &pgproto3.Execute{Portal: "p"}, syncMsg())
		c.wantTagged("and not again (its portal ran)", 1, "E:55000 Z:E", &pgproto3.Execute{Portal: "p"}, syncMsg())
		c.want("rollback", 1, "C Z", simpleQuery("rollback"))
		between()
		deallocGone(c)
	})
}

func TestADeallocateSkippedAfterAnErrorInItsPipelineLeavesTheStatement(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		deallocPrepares(c)
		for _, d := range deallocs {
			msgs := append([]pgproto3.FrontendMessage{bind("nope"), execMsg()}, d.msgs...)
			c.want(d.name+" after an error, skipped", 1, "E:26000 Z", append(msgs, syncMsg())...)
			between()
			deallocKept(c)
		}
	})
}

func TestADeallocateInAPipelineDropsTheStatementForWhatFollows(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		deallocPrepares(c)
		c.wantTagged("s runs, is dropped, and is gone behind it", 1, "2 D:mine C:SELECT 1 1 1 2 C:DEALLOCATE E:26000 Z:I",
			bind("s"), execMsg(), parse("t", "select 't'"), parse("", "deallocate s"), bind(""), execMsg(), bind("s"), execMsg(), syncMsg())
		c.want("t, prepared before it, runs", 1, "2 D:t C Z", bind("t"), execMsg(), syncMsg())
		between()
		deallocGone(c)
		c.wantTagged("s dropped by a query between Syncs, and prepared again", 3,
			"1 2 D:again C:SELECT 1 Z:I C:DEALLOCATE Z:I E:26000 Z:I",
			parse("u", "select 'u'"), bind("s"), execMsg(), syncMsg(), simpleQuery("deallocate s"), bind("s"), execMsg(), syncMsg())
		c.wantTagged("dropped and prepared again in one pipeline", 1, "1 1 2 C:DEALLOCATE 1 2 D:new C:SELECT 1 Z:I",
			parse("s", "select 'old'"), parse("d", "deallocate s"), bind("d"), execMsg(), parse("s", "select 'new'"), bind("s"), execMsg(), syncMsg())
		between()
		c.want("s is the new one", 1, "2 D:new C Z", bind("s"), execMsg(), syncMsg())
		c.want("u is still there", 1, "2 D:u C Z", bind("u"), execMsg(), syncMsg())
		c.wantTagged("closed before the DEALLOCATE runs: the DEALLOCATE fails", 1, "3 1 2 E:26000 Z:I",
			closeStmt("s"), parse("", "deallocate s"), bind(""), execMsg(), syncMsg())
		between()
		c.want("s stays closed", 1, "E:26000 Z", bind("s"), execMsg(), syncMsg())
	})
}

func TestADeallocateOfANameTheClientDoesNotHoldGetsPostgreSQLsAnswer(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, func(c *rawClient, between func()) {
		c.want("c prepares S, quoted", 1, "1 Z", parse("S", "select 'upper'"), syncMsg())
		for _, sql := range []string{"deallocate s", "deallocate nope", `deallocate "s"`} {
			c.want(sql+" by simple query", 1, "E:26000 Z", simpleQuery(sql))
			c.want(sql+" by Execute", 1, "1 2 E:26000 Z", parse("", sql), bind(""), execMsg(), syncMsg())
			between()
		}
		c.want("S is still there", 1, "2 D:upper C Z", bind("S"), execMsg(), syncMsg())
		c.wantTagged("but not after DEALLOCATE \"S\"", 2, "C:DEALLOCATE Z:I E:26000 Z:I", simpleQuery(`deallocate "S"`), bind("S"), execMsg(), syncMsg())
	})
}

func TestADeallocateInSessionModeDropsTheStatementToo(t *testing.T) {
	t.Parallel()
	cfg, db := configWithOwnDatabase(t)
	cfg.PoolMode = "session"
	e := cfg.Databases["app"]
	e.PoolMode = "session"
	cfg.Databases["app"] = e
	cfg.MaxPreparedStatements = 10
	f := ferrytest.Start(t, cfg)
	for _, dsn := range []string{cluster.DSN(db, ferrytest.User, ferrytest.Password), f.AppDSN()} {
		c := newRawClient(t, dsn)
		for _, d := range deallocs {
			deallocPrepares(c)
			msgs, want := withSync(d.msgs, d.want, "I")
			c.wantTagged(d.name, 1, want, msgs...)
			deallocGone(c)
			c.want("s goes", 1, "3 Z", closeStmt("s"), syncMsg())
		}
	}
}
