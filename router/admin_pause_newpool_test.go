package router_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestAPoolMadeDuringAPauseHoldsItsClientsUntilResume: PgBouncer's PAUSE
// holds the pooler's clients, and PAUSE db (or KILL db) a database's,
// whether or not their pool existed before it (admin.c keeps the pause on
// the pooler and the database, cf_pause_mode and db_paused): a client of
// a database nobody used before the PAUSE, or a user's first login to a
// paused database, waits for RESUME (compared with the 1.25.2 binary by
// hand). pgferry paused the pools there were and made new ones running,
// also the pools a RELOAD rebuilt.
func TestAPoolMadeDuringAPauseHoldsItsClientsUntilResume(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	ctx := testContext(t)
	const second = "pause_second"
	scramRole(t, ctx, second, ferrytest.Password)
	cases := []struct {
		name          string
		pause, resume string
		db, user      string // the new pool's client
		reload        bool   // a RELOAD during the pause rebuilds app's pool
	}{
		{"PAUSE, a database not used before", "PAUSE", "RESUME", "other", ferrytest.User, false},
		{"PAUSE db, a user's first login", "PAUSE app", "RESUME app", "app", second, false},
		{"KILL db, a user's first login", "KILL app", "RESUME app", "app", second, false},
		{"PAUSE, a pool a RELOAD rebuilt", "PAUSE", "RESUME", "app", ferrytest.User, true},
	}
	for _, loop := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s, relay loop %v", tc.name, loop), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				cfg := ferrytest.Config(t, cluster)
				cfg.RelayLoop, cfg.RelayLoopSet = loop, true
				cfg.Databases["other"] = cfg.Databases["app"]
				cfg.Users[second] = configs.User{Password: configs.Secret(ferrytest.Password)}
				f := ferrytest.Start(t, cfg)
				app := ferrytest.Connect(t, ctx, f.AppDSN())
				if _, err := app.Exec(ctx, "select 1"); err != nil {
					t.Fatal(err)
				}
				admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
				mustAdmin(t, admin, tc.pause)
				if tc.reload {
					next := *cfg
					next.Databases = maps.Clone(cfg.Databases)
					setPoolSize(&next, "app", cfg.Databases["app"].PoolSize+1)
					if err := f.Server.Reload(&next); err != nil {
						t.Fatal(err)
					}
				}

				done := make(chan error, 1)
				go func() {
					c, err := pgx.Connect(ctx, f.DSN(tc.db, tc.user, ferrytest.Password))
					if err == nil {
						defer c.Close(context.Background())
						_, err = c.Exec(ctx, "select 1")
					}
					done <- err
				}()
				// Held: its login waits for its pool's first server, and
				// the pool is paused.
				ferrytest.Eventually(t, 10*time.Second, "the new client to wait in a paused pool", func() (bool, error) {
					select {
					case err := <-done:
						return false, fmt.Errorf("select 1 through a pool made after %s ended (%v), want it held until %s", tc.pause, err, tc.resume)
					default:
					}
					pool := poolRow(mustAdmin(t, admin, "SHOW POOLS"), tc.db, tc.user)
					client := poolRow(mustAdmin(t, admin, "SHOW CLIENTS"), tc.db, tc.user)
					return pool != nil && pool["paused"] == "1" && client != nil && client["state"] == "login", nil
				})
				mustAdmin(t, admin, tc.resume)
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("still held after %s", tc.resume)
				}
			})
		}
	}
}

// poolRow returns the first row of a SHOW POOLS or SHOW CLIENTS answer
// for database db and user, as a map.
func poolRow(r adminResult, db, user string) map[string]string {
	for _, row := range r.rows {
		m := make(map[string]string, len(r.cols))
		for j, c := range r.cols {
			m[c] = row[j]
		}
		if m["database"] == db && m["user"] == user {
			return m
		}
	}
	return nil
}
