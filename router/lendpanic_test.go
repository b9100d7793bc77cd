package router_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

// A session that panics after the pool lent it a server and before it
// linked it ends with an internal error, and the server, which nobody
// holds then and whose state is unknown, is destroyed: the pool's count
// comes down and the next client gets a server. The wait is a goroutine's
// (waitForServer) or the relay loop's (takeGrant).
func TestAServerLentToASessionThatPanicsBeforeLinkingItIsDestroyed(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	for _, tc := range []struct {
		name string
		loop bool
	}{
		{"waiting on its goroutine", false},
		{"queued by the relay loop", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.loop {
				skipWithoutLoop(t)
			}
			ctx := testContext(t)
			cfg, _ := configWithOwnDatabase(t)
			cfg.RelayLoop = tc.loop
			setPoolSize(cfg, "app", 1)
			f := ferrytest.Start(t, cfg)
			const app = "pgferry-lend-panic"
			holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			doomed := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
			if tc.loop {
				allIntoTheLoop(t, ctx, f, holder, doomed)
			}
			// The holder keeps the one server in a transaction.
			for _, sql := range []string{"begin", "select 1"} {
				if _, err := holder.Exec(ctx, sql).ReadAll(); err != nil {
					t.Fatal(err)
				}
			}
			destroyedBefore := f.Pool(t, "app").Stat.Destroyed
			undo := router.SetFaultFor(f.Server, func(a, where string) {
				if a == app && where == "lent" {
					panic("a fault injected between the lend and the link of " + a)
				}
			})
			defer undo()

			got := make(chan error, 1)
			go func() {
				_, err := doomed.Exec(ctx, "select 2").ReadAll()
				got <- err
			}()
			ferrytest.Eventually(t, 10*time.Second, "the doomed client queued for the server", func() (bool, error) {
				return f.Pool(t, "app").Stat.Waiting == 1, nil
			})
			if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
				t.Fatal(err)
			}
			err := <-got
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != protocol.SQLStateInternalError {
				t.Fatalf("the client whose session panicked got %v; want SQLSTATE %s", err, protocol.SQLStateInternalError)
			}
			panicLoggedAndCounted(t, f)
			ferrytest.Eventually(t, 10*time.Second, "the server lent to the doomed client destroyed", func() (bool, error) {
				st := f.Pool(t, "app").Stat
				return st.Destroyed == destroyedBefore+1 && st.Active == 0, nil
			})
			if _, err := holder.Exec(ctx, "select 3").ReadAll(); err != nil {
				t.Fatalf("the next query after the panic: %v", err)
			}
		})
	}
}
