package router_test

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A pipeline sent right at the start of a loan whose replay the server
// accepts gets the answers PostgreSQL gives it: a ROLLBACK (or COMMIT) of
// a transaction a statement of the same pipeline failed runs and ends it,
// as it does on PostgreSQL, and what follows runs with the client's
// parameters. Every request sent before the replay's answer goes behind a
// guard (paramsrefused.go), which the client's own failed transaction
// refuses as it refuses a failed replay's: the ROLLBACK, skipped with
// it, failed with 25P02, and everything behind it, the transaction left
// open.
func TestAPipelineThatRollsBackAFailedTransactionBehindAReplayRunsAsOnPostgreSQL(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	const view = "select current_setting('search_path')"
	via := []struct {
		name string
		msgs func(sql string) []pgproto3.FrontendMessage
	}{
		{"simple queries", func(sql string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}
		}},
		{"extended protocol, a Sync each", func(sql string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{parse("", sql), bind(""), execMsg(), syncMsg()}
		}},
	}
	for _, end := range []string{"ROLLBACK", "COMMIT"} {
		for _, v := range via {
			for _, loop := range []bool{false, true} {
				name := fmt.Sprintf("%s, %s, relay loop %s", end, v.name, map[bool]string{false: "off", true: "on"}[loop])
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					cfg, db := configWithOwnDatabase(t)
					setPoolSize(cfg, "app", 1)
					cfg.RelayLoop = loop
					f := ferrytest.Start(t, cfg)
					var pipeline []pgproto3.FrontendMessage
					for _, sql := range []string{"BEGIN", "select (1/0)::text", end, view} {
						pipeline = append(pipeline, v.msgs(sql)...)
					}
					direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
					direct.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET search_path TO replay_a"}})
					direct.send(pipeline...)
					want := direct.until(4)

					a := newRawClient(t, f.AppDSN())
					a.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET search_path TO replay_a"}})
					b := newRawClient(t, f.AppDSN())
					for round := range 3 {
						// b leaves its search_path on the only server
						// connection: a's pipeline is sent behind a replay.
						b.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "SET search_path TO replay_b"}})
						a.send(pipeline...)
						if got := a.until(4); got != want {
							t.Fatalf("round %d: through pgferry %q, on PostgreSQL %q", round, got, want)
						}
						a.send(&pgproto3.Query{String: view})
						if got := a.answerOf(); len(got.rows) != 1 || got.rows[0] != "replay_a" || got.status != 'I' {
							t.Fatalf("round %d: then a sees %q, %d errors, ReadyForQuery %q; want replay_a outside any transaction", round, got.rows, len(got.errors), got.status)
						}
					}
					assertNoPanic(t, f)
				})
			}
		}
	}
}

// The same in session mode, where a pump relays the answers: a client
// whose startup search_path is replayed on the server connection another
// client left gets PostgreSQL's answers to the same pipeline.
func TestAPipelineThatRollsBackAFailedTransactionBehindASessionModeReplayRunsAsOnPostgreSQL(t *testing.T) {
	t.Parallel()
	cfg, db := configWithOwnDatabase(t)
	e := cfg.Databases["app"]
	e.PoolMode = "session"
	e.PoolSize = 1
	cfg.Databases["app"] = e
	f := ferrytest.Start(t, cfg)
	var pipeline []pgproto3.FrontendMessage
	for _, sql := range []string{"BEGIN", "select (1/0)::text", "ROLLBACK", "select current_setting('search_path')"} {
		pipeline = append(pipeline, parse("", sql), bind(""), execMsg(), syncMsg())
	}
	direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password)+" options='-c search_path=replay_a'")
	direct.send(pipeline...)
	want := direct.until(4)
	for round := range 3 {
		b := newRawClient(t, f.AppDSN()+" options='-c search_path=replay_b'")
		b.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: "select 1"}})
		b.pc.Close(testContext(t))
		a := newRawClient(t, f.AppDSN()+" options='-c search_path=replay_a'")
		a.send(pipeline...)
		if got := a.until(4); got != want {
			t.Fatalf("round %d: through pgferry %q, on PostgreSQL %q", round, got, want)
		}
		a.pc.Close(testContext(t))
	}
	assertNoPanic(t, f)
}
