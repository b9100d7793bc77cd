package router_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A simple Query pipelined inside a group of extended-protocol messages
// that fails before it, sent behind a replay of the client's parameters
// (the only server connection holds another client's search_path), is
// skipped with the rest of the group up to the client's Sync, as
// PostgreSQL skips it: one error and one ReadyForQuery for the group.
// Before, the Sync pgferry sends behind a Query sent before the replay's
// answer (paramsrefused.go, syncBehind) ended the server's skip there:
// the client got a ReadyForQuery for the skipped Query, and the rest of
// the group (a Close: CloseComplete) ran.
func TestAQueryInAGroupThatFailedBehindAReplayIsSkippedAsOnPostgreSQL(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	queries := []string{"select 1", "set search_path = public", "listen pipe_ch"}
	t.Parallel()
	for _, q := range queries {
		t.Run(q, func(t *testing.T) {
			eachRelayLoopSetting(t, func(t *testing.T, loop bool) {
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop, cfg.RelayLoopSet = loop, true
				setPoolSize(cfg, "app", 1)
				f := ferrytest.Start(t, cfg)
				leave := msgs(&pgproto3.Query{String: "set search_path = public"})
				pipeline := msgs(bind("nope"), &pgproto3.Query{String: q}, closeStmt("s1"), syncMsg(), bind("nope"), syncMsg())
				direct := cluster.DSN(db, ferrytest.User, ferrytest.Password)
				pipelineAnswers(t, direct, leave)
				pg := pipelineAnswers(t, direct, pipeline)
				for round := range 3 {
					// A client before leaves its search_path on the server:
					// the next client's requests go behind a replay.
					pipelineAnswers(t, f.AppDSN(), leave)
					if got := pipelineAnswers(t, f.AppDSN(), pipeline); got != pg {
						t.Fatalf("round %d: pgferry answered %q, PostgreSQL %q", round, got, pg)
					}
				}
			})
		})
	}
}
