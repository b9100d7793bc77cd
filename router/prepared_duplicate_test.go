package router_test

// End-to-end tests of a Parse of a statement name the client holds
// already, compared with PostgreSQL itself.

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A Parse of a name the client prepared and did not close is refused
// with 42P05 and the rest of its group skipped, as PostgreSQL does, the
// statement left as it was; the unnamed statement is replaced; a name
// whose Parse failed or was skipped is free; in a failed transaction the
// Parse's 25P02 comes first, but for a ROLLBACK's; and a Parse pipelined
// past the Sync of what decides whether the name is the client's (its
// Parse, a Close of it, a drop of every statement) gets what PostgreSQL
// answers once that is answered. Transaction mode (pool of one, another
// client's statements on the server in between) and session mode, relay
// loop on and off.
func TestAParseOfANameTheClientHoldsIsRefusedAsByPostgreSQL(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	steps := []exchangeStep{
		{"prepare s1", 1, "1 Z", msgs(parse("s1", "select 1"), syncMsg())},
		{"prepare s1 again", 1, `E:42P05:prepared statement "s1" already exists Z`,
			msgs(parse("s1", "select 1"), bind("s1"), execMsg(), syncMsg())},
		{"prepare s1 again as another query", 1, `E:42P05:prepared statement "s1" already exists Z`,
			msgs(parse("s1", "select 2"), syncMsg())},
		{"s1 is as it was", 1, "2 D:1 C:SELECT 1 Z", msgs(bind("s1"), execMsg(), syncMsg())},
		{"prepare s1 again with a syntax error", 1, `E:42601:syntax error at or near "selec" Z`,
			msgs(parse("s1", "selec 2"), syncMsg())},
		{"prepare s1 again naming a missing table", 1, `E:42P01:relation "nosuch" does not exist Z`,
			msgs(parse("s1", "select * from nosuch"), syncMsg())},
		{"the unnamed statement twice", 1, "1 1 2 D:4 C:SELECT 1 Z",
			msgs(parse("", "select 3"), parse("", "select 4"), bind(""), execMsg(), syncMsg())},
		{"s2 twice in one group", 1, `1 E:42P05:prepared statement "s2" already exists Z`,
			msgs(parse("s2", "select 2"), parse("s2", "select 2"), bind("s2"), execMsg(), syncMsg())},
		{"a failed Parse", 1, `E:42601:syntax error at or near "selec" Z`, msgs(parse("s3", "selec 3"), syncMsg())},
		{"its name is free", 1, "1 2 D:3 C:SELECT 1 Z", msgs(parse("s3", "select 3"), bind("s3"), execMsg(), syncMsg())},
		{"a Parse skipped after an error", 1, `E:42601:syntax error at or near "selec" Z`,
			msgs(parse("", "selec"), parse("s4", "select 4"), syncMsg())},
		{"its name is no statement", 1, `E:26000:prepared statement "s4" does not exist Z`,
			msgs(bind("s4"), execMsg(), syncMsg())},
		{"its name is free too", 1, "1 2 D:4 C:SELECT 1 Z", msgs(parse("s4", "select 4"), bind("s4"), execMsg(), syncMsg())},
		{"a Parse that fails, and past its Sync one of its name", 2, `E:42601:syntax error at or near "selec" Z 1 2 D:5 C:SELECT 1 Z`,
			msgs(parse("s5", "selec 5"), syncMsg(), parse("s5", "select 5"), bind("s5"), execMsg(), syncMsg())},
		{"a Parse that runs, and past its Sync one of its name", 2, `1 Z E:42P05:prepared statement "s6" already exists Z`,
			msgs(parse("s6", "select 6"), syncMsg(), parse("s6", "select 6"), syncMsg())},
		{"a Close skipped, and past its Sync a Parse of its name", 2, `E:42601:syntax error at or near "selec" Z E:42P05:prepared statement "s6" already exists Z`,
			msgs(parse("", "selec"), closeStmt("s6"), syncMsg(), parse("s6", "select 7"), syncMsg())},
		{"a Close that runs, and past its Sync a Parse of its name", 2, `3 Z 1 2 D:7 C:SELECT 1 Z`,
			msgs(closeStmt("s6"), syncMsg(), parse("s6", "select 7"), bind("s6"), execMsg(), syncMsg())},
		{"a drop of every statement skipped, and past its Sync a Parse of s6", 2, `E:42601:syntax error at or near "selec" Z E:42P05:prepared statement "s6" already exists Z`,
			msgs(parse("", "selec"), parse("", "deallocate all"), bind(""), execMsg(), syncMsg(), parse("s6", "select 8"), syncMsg())},
		{"s6 is as it was", 1, "2 D:7 C:SELECT 1 Z", msgs(bind("s6"), execMsg(), syncMsg())},
		{"a failed transaction", 2, "C:BEGIN Z T E:22012:division by zero Z",
			msgs(simpleQuery("begin"), simpleQuery("select 1/(0*random())::int"))},
		{"prepare s1 again in it", 1, "E:25P02:current transaction is aborted, commands ignored until end of transaction block Z",
			msgs(parse("s1", "select 1"), syncMsg())},
		{"prepare s1 again as a ROLLBACK in it", 1, `E:42P05:prepared statement "s1" already exists Z`,
			msgs(parse("s1", "rollback"), syncMsg())},
		{"end it", 1, "C:ROLLBACK Z", msgs(simpleQuery("rollback"))},
		{"a drop of every statement, and a Parse of s1 behind it", 2, "C:DEALLOCATE ALL Z 1 2 D:9 C:SELECT 1 Z",
			msgs(simpleQuery("deallocate all"), parse("s1", "select 9"), bind("s1"), execMsg(), syncMsg())},
		{"close s1 and prepare it again", 1, "3 1 2 D:5 C:SELECT 1 Z",
			msgs(closeStmt("s1"), parse("s1", "select 5"), bind("s1"), execMsg(), syncMsg())},
	}
	inTxn := map[string]bool{"a failed transaction": true, "prepare s1 again in it": true, "prepare s1 again as a ROLLBACK in it": true}
	for _, session := range []bool{false, true} {
		name := "transaction mode"
		if session {
			name = "session mode"
		}
		t.Run(name, func(t *testing.T) {
			eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop, cfg.RelayLoopSet = loop, true
				e := cfg.Databases["app"]
				e.PoolSize = 1
				if session {
					cfg.PoolMode, e.PoolMode = "session", "session"
				}
				cfg.Databases["app"] = e
				f := ferrytest.Start(t, cfg)
				direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
				ferry := newRawClient(t, f.AppDSN())
				var other *rawClient
				if !session {
					other = newRawClient(t, f.AppDSN())
				}
				for i, s := range steps {
					answersAlike(t, direct, ferry, steps[i:i+1])
					if other != nil && !inTxn[s.what] {
						// (Another client's statements on the server: the
						// client's run where pgferry lacks them.)
						other.want("another client", 1, "1 2 D:o C 3 Z", parse("o", "select 'o'"), bind("o"), execMsg(), closeStmt("o"), syncMsg())
					}
				}
			})
		})
	}
}
