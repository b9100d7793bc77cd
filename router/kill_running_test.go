package router_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client that pgferry ends while its query runs (the admin console's
// KILL_CLIENT or KILL, shutdown's deadline: the old process of a
// zero-downtime restart cutting what is left of its drain) has that query
// cancelled on the server, as a client that disconnects mid-query has.
// The server connection closed without a cancel, PostgreSQL ran the query
// on to its end (it notices a closed socket only when it next writes),
// holding its backend and its locks after pgferry had let it go.
func TestAClientPgferryEndsMidQueryHasTheQueryCancelledOnTheServer(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name string
		end  func(t *testing.T, f *ferrytest.Ferry, ptr string)
	}{
		{"KILL_CLIENT", func(t *testing.T, f *ferrytest.Ferry, ptr string) {
			mustAdmin(t, ferrytest.ConnectPgConn(t, testContext(t), adminDSN(f)), "KILL_CLIENT "+ptr)
		}},
		{"KILL", func(t *testing.T, f *ferrytest.Ferry, _ string) {
			mustAdmin(t, ferrytest.ConnectPgConn(t, testContext(t), adminDSN(f)), "KILL app")
		}},
		{"shutdown's deadline", func(t *testing.T, f *ferrytest.Ferry, _ string) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // (a deadline already past: the running query is cut at once)
			f.Server.Shutdown(ctx)
		}},
	}
	for _, loop := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s, relay loop %v", tc.name, loop), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				ctx := testContext(t)
				cfg, db := configWithOwnDatabase(t)
				cfg.RelayLoop = loop
				f := ferrytest.Start(t, cfg)
				const app = "pgferry-killed-mid-query"
				client := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
				if loop {
					allIntoTheLoop(t, ctx, f, client)
				}
				admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
				row := mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app)
				if row == nil {
					t.Fatal("the client is not in SHOW CLIENTS")
				}
				done := make(chan error, 1)
				go func() {
					_, err := client.Exec(ctx, "select pg_sleep(300)").ReadAll()
					done <- err
				}()
				waitForBackend(t, ctx, db, "state = 'active' and query = 'select pg_sleep(300)'")
				tc.end(t, f, row["ptr"])
				if err := <-done; err == nil {
					t.Fatal("the ended client's query succeeded")
				}
				waitNoBusyBackends(t, ctx, db)
			})
		}
	}
}
