package router_test

// End-to-end tests of DEALLOCATE ALL and DISCARD ALL prepared and run
// through the extended protocol, in session and transaction mode,
// compared with PostgreSQL itself.

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A DEALLOCATE ALL or DISCARD ALL run by Parse, Bind and Execute drops
// the client's statements, the one it ran by too, in session mode as in
// transaction mode: a Bind of one then gets 26000 and a Parse of its
// name runs, as from PostgreSQL.
func TestADropOfEveryStatementByTheExtendedProtocolDropsTheClientsNames(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"session", "transaction"} {
		for _, drop := range []string{"deallocate all", "discard all"} {
			t.Run(mode+"/"+drop, func(t *testing.T) {
				t.Parallel()
				cfg, db := configWithOwnDatabase(t)
				cfg.PoolMode = mode
				e := cfg.Databases["app"]
				e.PoolMode = mode
				cfg.Databases["app"] = e
				f := ferrytest.Start(t, cfg)
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				ferry := newRawClient(t, f.AppDSN())
				tag := "C:DEALLOCATE ALL"
				if drop == "discard all" {
					tag = "C:DISCARD ALL"
				}
				answersAlike(t, direct, ferry, []exchangeStep{
					{"prepare k1", 1, "1 2 D:1 C:SELECT 1 Z", []pgproto3.FrontendMessage{parse("k1", "select 1"), bind("k1"), execMsg(), syncMsg()}},
					{"drop by Parse, Bind, Execute", 1, "1 2 " + tag + " Z", []pgproto3.FrontendMessage{parse("dd", drop), bind("dd"), execMsg(), syncMsg()}},
					{"bind k1", 1, `E:26000:prepared statement "k1" does not exist Z`, []pgproto3.FrontendMessage{bind("k1"), execMsg(), syncMsg()}},
					{"bind dd", 1, `E:26000:prepared statement "dd" does not exist Z`, []pgproto3.FrontendMessage{bind("dd"), execMsg(), syncMsg()}},
					{"prepare k1 again", 1, "1 2 D:2 C:SELECT 1 Z", []pgproto3.FrontendMessage{parse("k1", "select 2"), bind("k1"), execMsg(), syncMsg()}},
				})
			})
		}
	}
}
