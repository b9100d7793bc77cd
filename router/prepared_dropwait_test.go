package router_test

// End-to-end tests of a Bind or Describe that the client pipelines past
// the end of a drop's run (a Sync after a drop by Execute, or the drop's
// own simple Query) before the drop is answered: it must see the
// statement as the drop's outcome leaves it, as on PostgreSQL, which runs
// it when the drop failed. Each script runs on PostgreSQL directly and
// through pgferry: with the relay loop off and on, and in session mode,
// where a pump relays the answers.

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// behindFailedDrops are pipelines that drop c's statement s and fail, and
// bind or describe s past the end of the drop's run; each with its
// answers and how many ReadyForQuery end them.
var behindFailedDrops = []struct {
	name  string
	syncs int
	want  string
	msgs  []pgproto3.FrontendMessage
}{
	{"DEALLOCATE ALL failing in its own query", 2, "E:22012 Z 2 D:s C Z",
		[]pgproto3.FrontendMessage{simpleQuery("select 1/0; deallocate all"), bind("s"), execMsg(), syncMsg()}},
	{"DEALLOCATE ALL failing in its own query, then Describe", 2, "E:22012 Z t T Z",
		[]pgproto3.FrontendMessage{simpleQuery("select 1/0; deallocate all"), describeStmt("s"), syncMsg()}},
	{"DEALLOCATE ALL refused in a failed transaction, then ROLLBACK", 5, "C Z E:22012 Z E:25P02 Z C Z 2 D:s C Z",
		[]pgproto3.FrontendMessage{simpleQuery("begin"), simpleQuery("select 1/0"), simpleQuery("deallocate all"), simpleQuery("rollback"),
			bind("s"), execMsg(), syncMsg()}},
	{"DISCARD ALL refused in a failed transaction, Bind still in it", 5, "C Z E:22012 Z E:25P02 Z E:25P02 Z C Z",
		[]pgproto3.FrontendMessage{simpleQuery("begin"), simpleQuery("select 1/0"), simpleQuery("discard all"),
			bind("s"), execMsg(), syncMsg(), simpleQuery("rollback")}},
	{"DEALLOCATE ALL by Execute skipped after an error, then Sync", 2, "E:26000 Z 2 D:s C Z",
		[]pgproto3.FrontendMessage{bind("nope"), execMsg(), parse("", "deallocate all"), bind(""), execMsg(), syncMsg(),
			bind("s"), execMsg(), syncMsg()}},
	{"DEALLOCATE s refused in a failed transaction, then ROLLBACK", 5, "C Z E:22012 Z E:25P02 Z C Z 2 D:s C Z",
		[]pgproto3.FrontendMessage{simpleQuery("begin"), simpleQuery("select 1/0"), simpleQuery("deallocate s"), simpleQuery("rollback"),
			bind("s"), execMsg(), syncMsg()}},
	{"DEALLOCATE s by Execute skipped after an error, then Sync", 2, "E:26000 Z 2 D:s C Z",
		[]pgproto3.FrontendMessage{bind("nope"), execMsg(), parse("", "deallocate s"), bind(""), execMsg(), syncMsg(),
			bind("s"), execMsg(), syncMsg()}},
	// Drops that run: the statement is gone past them as before.
	{"DEALLOCATE ALL that runs", 2, "C Z E:26000 Z",
		[]pgproto3.FrontendMessage{simpleQuery("deallocate all"), bind("s"), execMsg(), syncMsg()}},
	{"DEALLOCATE s by Execute that runs, then Sync", 2, "1 2 C Z E:26000 Z",
		[]pgproto3.FrontendMessage{parse("", "deallocate s"), bind(""), execMsg(), syncMsg(), bind("s"), execMsg(), syncMsg()}},
}

// behindFailedDrop runs each of behindFailedDrops with c, which another
// client's use of the server interrupts where between says.
func behindFailedDrop(c *rawClient, between func()) {
	for _, d := range behindFailedDrops {
		c.want("c prepares s", 1, "1 Z", parse("s", "select 's'"), syncMsg())
		c.want(d.name, d.syncs, d.want, d.msgs...)
		between()
		c.want("s goes", 1, "3 Z", closeStmt("s"), syncMsg())
	}
}

func TestABindPipelinedPastAFailedDropsRunFindsTheStatement(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	onBothEachLoop(t, behindFailedDrop)
}

func TestABindPipelinedPastAFailedDropsRunFindsTheStatementInSessionMode(t *testing.T) {
	t.Parallel()
	cfg, db := configWithOwnDatabase(t)
	cfg.PoolMode = "session"
	e := cfg.Databases["app"]
	e.PoolMode = "session"
	cfg.Databases["app"] = e
	cfg.MaxPreparedStatements = 10
	f := ferrytest.Start(t, cfg)
	t.Run("postgresql", func(t *testing.T) {
		behindFailedDrop(newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password)), func() {})
	})
	t.Run("pgferry", func(t *testing.T) {
		behindFailedDrop(newRawClient(t, f.AppDSN()), func() {})
	})
}
