package router_test

// Logins cut short: by shutdown's deadline in auth_query's lookup.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client not in auth_file logs in through auth_query's lookup, which
// waits for an auth_user connection (the server refuses connections, the
// pool holds its queue) or for the query (it runs long). Shutdown's
// deadline ends the lookup as it ends a login's wait for its pool's first
// server, and the client is told why: the lookup was bounded by its own
// 10 s only, and the client was then told the lookup failed (08006).
func TestALoginInAuthQuerysLookupEndsAtShutdownsDeadline(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	cases := []struct {
		name string
		// stall makes the lookup wait, and returns a condition true once
		// it does.
		stall func(t *testing.T, cfg *configs.Config, dbname string) func(f *ferrytest.Ferry) (bool, error)
	}{
		{"waiting for an auth_user connection", func(t *testing.T, cfg *configs.Config, _ string) func(*ferrytest.Ferry) (bool, error) {
			db := cfg.Databases["app"]
			db.Port = refusingPort(t)
			cfg.Databases["app"] = db
			cfg.OutageHoldTimeout = configs.Duration(10 * time.Minute)
			return func(f *ferrytest.Ferry) (bool, error) {
				for _, p := range f.Server.Snapshot().Pools {
					if p.Database == "app" && p.Stat.Waiting == 1 {
						return true, nil
					}
				}
				return false, nil
			}
		}},
		{"running the query", func(t *testing.T, cfg *configs.Config, dbname string) func(*ferrytest.Ferry) (bool, error) {
			cfg.AuthQuery = "SELECT $1::text, pg_sleep(60)::text"
			return func(*ferrytest.Ferry) (bool, error) {
				n, err := cluster.QueryInt(context.Background(),
					"SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE '%pg_sleep(60)%'", dbname)
				return n == 1, err
			}
		}},
	}
	for _, tc := range cases {
		for _, loop := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, relay loop %v", tc.name, loop), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				ctx := testContext(t)
				cfg, dbname := configWithOwnDatabase(t)
				cfg.RelayLoop = loop
				cfg.AuthUser = ferrytest.User
				cfg.AuthQuery = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"
				stalled := tc.stall(t, cfg, dbname)
				f := ferrytest.Start(t, cfg)
				got := make(chan error, 1)
				go func() {
					c, err := pgconn.Connect(ctx, f.DSN("app", "not_in_auth_file", "any"))
					if err == nil {
						c.Close(ctx)
					}
					got <- err
				}()
				ferrytest.Eventually(t, 10*time.Second, "the login in auth_query's lookup", func() (bool, error) { return stalled(f) })
				past, cancel := context.WithCancel(context.Background())
				cancel()
				shut := make(chan struct{})
				go func() { f.Server.Shutdown(past); close(shut) }()
				select {
				case err := <-got:
					wantPgError(t, err, "57P01", "pgferry is shutting down")
				case <-time.After(30 * time.Second): // a hang guard
					t.Fatal("the login is still in auth_query's lookup 30 s after shutdown's deadline")
				}
				<-shut
			})
		}
	}
}
