package router

import (
	"io"
	"testing"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/pool"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router/prepared"
)

// A Describe that pgferry records behind a Parse it injects (of the
// unnamed statement, or of a named one the server lacks) counts as one
// request: nothing is answered until the server answers something.
func TestADescribeBehindAnInjectedParseLeavesNothingAnswered(t *testing.T) {
	srv := &Server{stmts: prepared.NewRegistry(nil)}
	srv.cfg.Store(configs.Default())
	ss := &session{srv: srv, entry: &poolEntry{}}
	sc := &pool.ServerConn{Wr: protocol.NewWriter(io.Discard)}
	ss.keepUnnamed([]byte("select 1\x00\x00\x00"))
	ss.unnamedUnknown() // (a Sync since: the server's unnamed statement is not assumed)
	ss.holdStmt("s1", []byte("select 2\x00\x00\x00"))
	for _, name := range []string{"", "s1"} {
		ss.process(sc, protocol.MsgDescribe, protocol.AppendDescribe(nil, 'S', name))
		if got := ss.q.answered(); got != 0 {
			t.Fatalf("after a Describe of %q: answered() = %d with %d requests owed and none answered", name, got, ss.q.n)
		}
	}
}
