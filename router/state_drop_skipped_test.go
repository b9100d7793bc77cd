package router_test

import (
	"fmt"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A statement that sets a parameter stays what it is while it exists on
// the server: a Close or a DEALLOCATE of it that PostgreSQL skips or
// refuses, or a DISCARD ALL refused inside a transaction block, leaves it,
// and pgferry keeps knowing what executing it does. Before, pgferry
// forgot that as it read the Close or drop, so the client's SET by the
// statement it executed next went untracked, and stayed on the server for
// the next client of the pool.
func TestAStatementWhoseDropDidNotRunKeepsItsSetTracked(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	scripts := []struct {
		name string
		drop func(c *rawClient)
	}{
		{"a Close skipped after an error", func(c *rawClient) {
			c.want("a Close skipped after a Parse's error", 1, "E:42601 Z", parse("", "not sql"), closeStmt("k"), syncMsg())
		}},
		{"a DEALLOCATE refused in a failed transaction", func(c *rawClient) {
			c.want("begin, an error, the DEALLOCATE, rollback", 4, "C Z E:22012 Z E:25P02 Z C Z",
				simpleQuery("begin"), simpleQuery("select 1/0"), simpleQuery("deallocate k"), simpleQuery("rollback"))
		}},
		{"a DISCARD ALL refused in a transaction block", func(c *rawClient) {
			c.want("begin, the DISCARD ALL, rollback", 3, "C Z E:25001 Z C Z",
				simpleQuery("begin"), simpleQuery("discard all"), simpleQuery("rollback"))
		}},
	}
	for _, prepared := range []int{10, 0} {
		for _, loop := range []bool{false, true} {
			for _, sc := range scripts {
				t.Run(fmt.Sprintf("max_prepared_statements %d, relay loop %v, %s", prepared, loop, sc.name), func(t *testing.T) {
					t.Parallel()
					cfg := ferrytest.Config(t, cluster)
					setPoolSize(cfg, "app", 1)
					cfg.MaxPreparedStatements = prepared
					cfg.RelayLoop, cfg.RelayLoopSet = loop, true
					cfg.TrackExtraParameters = append(cfg.TrackExtraParameters, "statement_timeout")
					f := ferrytest.Start(t, cfg)
					c := newRawClient(t, f.AppDSN())
					other := newRawClient(t, f.AppDSN())
					c.want("c prepares k, a SET", 1, "1 Z", parse("k", "set statement_timeout = 1234"), syncMsg())
					sc.drop(c)
					c.want("k is still there and sets it", 1, "2 C Z", bind("k"), execMsg(), syncMsg())
					c.want("c sees its value", 1, "T D:1234ms C Z", simpleQuery("show statement_timeout"))
					other.want("the next client of the server sees its own", 1, "T D:0 C Z", simpleQuery("show statement_timeout"))
				})
			}
		}
	}
}
