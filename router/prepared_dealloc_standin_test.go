package router_test

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A DEALLOCATE of one of the client's protocol-level statements by the
// extended protocol runs on a stand-in statement of the client's name that
// pgferry prepares on the server just before the Execute
// (stmtsdealloc.go). An Execute that then fails (its portal is gone with
// the transaction that bound it, or ran already) leaves the client its
// statement, as PostgreSQL does, and must leave no statement of the
// client's name on the shared server either: a client that binds or
// deallocates a name it does not hold gets PostgreSQL's 26000 there, not
// the stand-in. Each script runs on PostgreSQL directly, then through
// pgferry with a pool of one server connection, relay loop off and on.
func TestADeallocateWhoseExecuteFailsLeavesNoStatementOfItsNameOnTheServer(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	scripts := []struct {
		name   string
		script func(c *rawClient)
	}{
		{"its portal ended with the transaction that bound it", func(c *rawClient) {
			c.wantTagged("begin, and a portal of DEALLOCATE s", 2, "C:BEGIN Z:T 1 2 Z:T", simpleQuery("begin"),
				parse("d", "deallocate s"), &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "d"}, syncMsg())
			c.wantTagged("commit", 1, "C:COMMIT Z:I", simpleQuery("commit"))
			c.wantTagged("its Execute finds no portal", 1, "E:34000 Z:I", &pgproto3.Execute{Portal: "p"}, syncMsg())
		}},
		{"its portal ran already", func(c *rawClient) {
			c.wantTagged("begin, and a DEALLOCATE s by a portal", 2, "C:BEGIN Z:T 1 2 C:DEALLOCATE Z:T", simpleQuery("begin"),
				parse("d", "deallocate s"), &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "d"}, &pgproto3.Execute{Portal: "p"}, syncMsg())
			c.want("s prepared again", 1, "1 Z", parse("s", "select 'mine'"), syncMsg())
			c.wantTagged("the portal's Execute again", 1, "E:55000 Z:E", &pgproto3.Execute{Portal: "p"}, syncMsg())
			c.wantTagged("rollback", 1, "C:ROLLBACK Z:I", simpleQuery("rollback"))
		}},
	}
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %v", loop), func(t *testing.T) {
			t.Parallel()
			cfg, db := configWithOwnDatabase(t)
			setPoolSize(cfg, "app", 1)
			cfg.MaxPreparedStatements = 10
			cfg.RelayLoop, cfg.RelayLoopSet = loop, true
			f := ferrytest.Start(t, cfg)
			for _, sc := range scripts {
				t.Run(sc.name, func(t *testing.T) {
					for _, dsn := range []string{cluster.DSN(db, ferrytest.User, ferrytest.Password), f.AppDSN()} {
						c := newRawClient(t, dsn)
						deallocPrepares(c)
						sc.script(c)
						deallocKept(c)
						other := newRawClient(t, dsn)
						other.want("another client binds s, which it does not hold", 1, "E:26000 Z", bind("s"), syncMsg())
						other.want("another client deallocates s, which it does not hold", 1, "E:26000 Z", simpleQuery("deallocate s"))
						c.pc.Close(testContext(t))
						other.pc.Close(testContext(t))
					}
				})
			}
		})
	}
}
