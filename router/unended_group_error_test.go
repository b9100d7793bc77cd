package router_test

// End-to-end tests of an error in a group of extended-protocol messages
// the client has not ended (no Sync, no Flush) and then waits: PostgreSQL
// sends the error at once (elog.c flushes every ErrorResponse), with the
// answers it held before it, and so does pgferry. Each runs with the relay
// loop off and on, and is compared with PostgreSQL's answers.

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client that sends a group with no Sync or Flush behind it, which
// fails, and waits, gets the error at once, as from PostgreSQL: a Parse
// that fails, an Execute that fails behind its Parse and Bind (whose
// answers come with the error), the second group of a pipeline whose
// first one had its Sync (on a server connection under TLS, as the test
// cluster's are, the error may come in the same read as the first
// group's answers, held by the TLS layer). Its Sync is answered after,
// and its next group runs. Before, pgferry read the server's answers only once the client
// sent a Sync or Flush: the client waited for ever (20 s here).
func TestAnErrorInAGroupWithoutItsSyncComesAtOnceAsFromPostgreSQL(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name string
		send []pgproto3.FrontendMessage
		n    int // the answers the client waits for
	}{
		{"a Parse that fails", msgs(parse("", "not sql")), 1},
		{"a Parse that fails, with its Bind and Execute", msgs(parse("", "not sql"), bind(""), execMsg()), 1},
		{"an Execute that fails", failingStatement(), 3},
		{"behind a group with its Sync", append(msgs(parse("", "select 1"), bind(""), execMsg(), syncMsg()), failingStatement()...), 8},
	}
	next := msgs(syncMsg(), parse("", "select 3"), bind(""), execMsg(), syncMsg())
	t.Parallel()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop, cfg.RelayLoopSet = loop, true
				f := ferrytest.Start(t, cfg)
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				direct.send(tc.send...)
				pg := direct.next(tc.n)
				direct.send(next...)
				pg += " / " + direct.until(2)

				c := newRawClient(t, f.AppDSN())
				c.want("a first group", 1, "1 2 D:1 C Z", parse("", "select 1"), bind(""), execMsg(), syncMsg())
				c.send(tc.send...)
				got := c.next(tc.n)
				c.send(next...)
				got += " / " + c.until(2)
				if got != pg {
					t.Fatalf("pgferry answered %q, PostgreSQL %q", got, pg)
				}
			})
		})
	}
}
