package router_test

import (
	"fmt"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client that disconnects while its Bind waits for a drop's answer
// (pipelined past the drop's own query, behind a long query) has the
// long query cancelled on the server, as a client that disconnects while
// any query of its runs has: the session goroutine waiting for the drop
// still notices that its client left. Otherwise PostgreSQL runs the query
// on to its end (it notices a closed socket only when it next writes),
// holding its backend and locks after the client has gone.
func TestAClientThatLeavesWhileItsBindWaitsForADropHasItsQueryCancelled(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %v", loop), func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, db := configWithOwnDatabase(t)
			cfg.MaxPreparedStatements = 10
			cfg.RelayLoop, cfg.RelayLoopSet = loop, true
			f := ferrytest.Start(t, cfg)
			c := newRawClient(t, f.AppDSN())
			c.want("c prepares s", 1, "1 Z", parse("s", "select 's'"), syncMsg())
			c.send(simpleQuery("select pg_sleep(300)"), simpleQuery("deallocate all"), bind("s"), execMsg(), syncMsg())
			waitForBackend(t, ctx, db, "state = 'active' and query = 'select pg_sleep(300)'")
			if err := c.pc.Conn().Close(); err != nil { // (gone: no Terminate)
				t.Fatal(err)
			}
			waitNoBusyBackends(t, ctx, db)
		})
	}
}
