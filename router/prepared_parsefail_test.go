package router_test

// End-to-end tests of a Parse of a named statement that the server refuses
// or skips: PostgreSQL keeps what the name stood for before (nothing, or
// another statement), and so must pgferry's record of the client's names.

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A named Parse that fails (bad SQL) or that the server skips after an
// error before it up to the Sync leaves the name as it was, as in
// PostgreSQL: a later Bind of a new name gets 26000, and one of a name
// that stood for another statement binds that one, whether the Bind comes
// after the Parse's answer or is pipelined behind its Sync. Before,
// pgferry took the name for the Parse's statement as the Parse went: the
// Bind after the answer parsed the failed statement again (42601) or ran
// the skipped one (D:1) where PostgreSQL answers 26000, and the Bind
// pipelined behind the Sync named pgferry's statement the server never
// prepared (26000) where PostgreSQL binds the statement before (its
// 08P01 for the parameters' count here).
func TestANamedParseTheServerRefusesOrSkipsLeavesTheNameAsItWas(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name   string
		rounds [][]pgproto3.FrontendMessage // each sent whole, then its answers read
	}{
		{"a Parse that fails, then a Bind", [][]pgproto3.FrontendMessage{
			msgs(parse("s1", "not sql"), syncMsg()),
			msgs(bind("s1"), execMsg(), syncMsg()),
		}},
		{"a Parse skipped after an error, then a Bind", [][]pgproto3.FrontendMessage{
			msgs(bind("nope"), parse("s1", "select 1"), syncMsg()),
			msgs(bind("s1"), execMsg(), syncMsg()),
		}},
		{"a Parse of a closed name skipped after an error, a Bind pipelined behind its Sync", [][]pgproto3.FrontendMessage{
			msgs(parse("s1", "select $1::int"), syncMsg()),
			msgs(bind("s1"), closeStmt("s1"), parse("s1", "select 2"), syncMsg(), bind("s1", "7"), execMsg(), syncMsg()),
			msgs(bind("s1", "8"), execMsg(), syncMsg()),
		}},
		{"a Parse that fails, a Bind pipelined behind its Sync", [][]pgproto3.FrontendMessage{
			msgs(parse("s1", "not sql"), syncMsg(), bind("s1"), execMsg(), syncMsg()),
			msgs(parse("s1", "select 3"), bind("s1"), execMsg(), syncMsg()),
		}},
	}
	t.Parallel()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop, cfg.RelayLoopSet = loop, true
				f := ferrytest.Start(t, cfg)
				answers := func(dsn string) string {
					c := newRawClient(t, dsn)
					var out string
					for i, r := range tc.rounds {
						syncs := 0
						for _, m := range r {
							if _, ok := m.(*pgproto3.Sync); ok {
								syncs++
							}
						}
						c.send(r...)
						if i > 0 {
							out += " / "
						}
						out += c.until(syncs)
					}
					return out
				}
				pg := answers(cluster.DSN(db, ferrytest.User, ferrytest.Password))
				if got := answers(f.AppDSN()); got != pg {
					t.Fatalf("pgferry answered %q, PostgreSQL %q", got, pg)
				}
			})
		})
	}
}
