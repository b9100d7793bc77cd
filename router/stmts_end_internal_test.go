package router

import (
	"testing"

	"go.uber.org/zap"

	"github.com/pgferry/pgferry/router/prepared"
)

// A client that prepared nothing ends without a statement table: the
// session's end gives back the identities of its statements, and marks no
// drop (a table made for the mark alone was one allocation at the end of
// every such session, every client of a connection storm).
func TestASessionThatPreparedNothingEndsWithoutMakingAStatementTable(t *testing.T) {
	ss := &session{srv: &Server{log: zap.NewNop(), stmts: prepared.NewRegistry(nil)}, entry: &poolEntry{}}
	ss.finish(nil)
	if ss.stmts != nil {
		t.Fatalf("the session's end made a statement table: %+v", *ss.stmts)
	}
}
