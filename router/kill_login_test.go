package router_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// A client still logging in is listed by SHOW CLIENTS (state login, its
// ptr one KILL_CLIENT takes), and KILL_CLIENT, KILL of its database and
// shutdown's deadline end its login at once with the kill's FATAL, as they
// end a session: here a client that stopped in SCRAM's exchange, which
// the relay loop runs when it is on. No kill reached a login: it was in
// no list, and it went on until client_login_timeout.
func TestAKillEndsALoginWaitingInSCRAMsExchange(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	kills := []struct {
		name      string
		kill      func(t *testing.T, f *ferrytest.Ferry, admin *pgconn.PgConn)
		code, msg string
	}{
		{"KILL_CLIENT", func(t *testing.T, _ *ferrytest.Ferry, admin *pgconn.PgConn) {
			mustAdmin(t, admin, "KILL_CLIENT "+loginPtr(t, admin, ferrytest.User))
		}, "08P01", "admin forced disconnect"},
		{"KILL", func(t *testing.T, _ *ferrytest.Ferry, admin *pgconn.PgConn) {
			mustAdmin(t, admin, "KILL app")
		}, "08P01", "database removed"},
		{"shutdown's deadline", func(t *testing.T, f *ferrytest.Ferry, _ *pgconn.PgConn) {
			past, cancel := context.WithCancel(context.Background())
			cancel()
			shut := make(chan struct{})
			go func() { f.Server.Shutdown(past); close(shut) }()
			t.Cleanup(func() { <-shut })
		}, "57P01", "pgferry is shutting down"},
	}
	for _, loop := range []bool{false, true} {
		for _, k := range kills {
			t.Run(fmt.Sprintf("%s, relay loop %v", k.name, loop), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				ctx := testContext(t)
				cfg, _ := configWithOwnDatabase(t)
				cfg.RelayLoop = loop
				f := ferrytest.Start(t, cfg)
				// The pool greets first: a login the loop sees through needs
				// it (loginPlan).
				ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
				admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
				handoffs := router.LoginHandoffs(f.Server)

				conn := dialFerry(t, f)
				conn.SetDeadline(time.Now().Add(30 * time.Second)) // (a hang guard)
				fe := pgproto3.NewFrontend(conn, conn)
				fe.Send(&pgproto3.StartupMessage{
					ProtocolVersion: pgproto3.ProtocolVersionNumber,
					Parameters:      map[string]string{"user": ferrytest.User, "database": "app"},
				})
				if err := fe.Flush(); err != nil {
					t.Fatal(err)
				}
				if m, err := fe.Receive(); err != nil {
					t.Fatal(err)
				} else if _, ok := m.(*pgproto3.AuthenticationSASL); !ok {
					t.Fatalf("the login's first answer is %T, want AuthenticationSASL", m)
				}
				// The client says no more: its login waits for its
				// SASLInitialResponse.
				k.kill(t, f, admin)
				m, err := fe.Receive()
				if err != nil {
					t.Fatalf("the killed login got %v, want FATAL %s %q", err, k.code, k.msg)
				}
				if e, ok := m.(*pgproto3.ErrorResponse); !ok || e.Severity != "FATAL" || e.Code != k.code || e.Message != k.msg {
					t.Fatalf("the killed login got %#v, want FATAL %s %q", m, k.code, k.msg)
				}
				if loop && router.LoginHandoffs(f.Server) != handoffs {
					t.Error("the login was handed to a goroutine: the relay loop did not run it")
				}
			})
		}
	}
}

// A client logging in that waits (for its pool's first server, the server
// refusing connections while the pool holds its queue; in auth_query's
// lookup, whose query runs long; for a server to try its startup values
// on, the pool's one server busy; while a server tries them, its check of
// default_text_search_config waiting for a lock on the catalog it reads;
// in the auth failure throttle's delay after a failed login from its
// address) is ended by KILL_CLIENT and KILL of its database at once, with
// the kill's FATAL: it was in no list a kill reads, and waited on
// (query_wait_timeout, auth_query's 10 s). The try's round trip and the
// throttle's sleep were not cut: the first ran to its 10 s and told the
// client 08006, the second slept its delay out.
func TestAKillEndsALoginThatWaits(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	waits := []struct {
		name string
		// stall makes the login wait, and returns a condition true once
		// it does.
		stall func(t *testing.T, cfg *configs.Config, dbname string) func(f *ferrytest.Ferry) (bool, error)
		user  string
		// hold, if set, runs once pgferry is up, before the login;
		// params are the login's startup values.
		hold   func(t *testing.T, ctx context.Context, f *ferrytest.Ferry, dbname string)
		params string
	}{
		{"for its pool's first server", func(t *testing.T, cfg *configs.Config, _ string) func(*ferrytest.Ferry) (bool, error) {
			db := cfg.Databases["app"]
			db.Port = refusingPort(t)
			cfg.Databases["app"] = db
			cfg.OutageHoldTimeout = configs.Duration(10 * time.Minute)
			return func(f *ferrytest.Ferry) (bool, error) {
				for _, p := range f.Server.Snapshot().Pools { // (none until the login asks)
					if p.Database == "app" && p.Stat.Waiting == 1 {
						return true, nil
					}
				}
				return false, nil
			}
		}, ferrytest.User, nil, ""},
		{"in auth_query's lookup", func(t *testing.T, cfg *configs.Config, dbname string) func(*ferrytest.Ferry) (bool, error) {
			cfg.AuthUser = ferrytest.User
			cfg.AuthQuery = "SELECT $1::text, pg_sleep(60)::text"
			return func(*ferrytest.Ferry) (bool, error) {
				n, err := cluster.QueryInt(context.Background(),
					"SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE '%pg_sleep(60)%'", dbname)
				return n == 1, err
			}
		}, "not_in_auth_file", nil, ""},
		{"for a server to check its startup values", func(t *testing.T, cfg *configs.Config, _ string) func(*ferrytest.Ferry) (bool, error) {
			setPoolSize(cfg, "app", 1)
			return func(f *ferrytest.Ferry) (bool, error) { return f.Pool(t, "app").Stat.Waiting == 1, nil }
		}, ferrytest.User, func(t *testing.T, ctx context.Context, f *ferrytest.Ferry, _ string) {
			// The pool's one server, held in a transaction.
			holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			if _, err := holder.Exec(ctx, "begin; select 1").ReadAll(); err != nil {
				t.Fatal(err)
			}
		}, " work_mem=1234kB"}, // (a value no server took yet: confirmStartup)
		{"while a server tries its startup values", func(t *testing.T, cfg *configs.Config, dbname string) func(*ferrytest.Ferry) (bool, error) {
			return func(*ferrytest.Ferry) (bool, error) {
				n, err := cluster.QueryInt(context.Background(),
					"SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE '%default_text_search_config%'", dbname)
				return n == 1, err
			}
		}, ferrytest.User, func(t *testing.T, ctx context.Context, f *ferrytest.Ferry, dbname string) {
			// The pool greets first (welcome), then a transaction holds
			// the catalog the server's check of the value reads.
			ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			locker := ferrytest.ConnectPgConn(t, ctx, cluster.SuperDSN(dbname))
			if _, err := locker.Exec(ctx, "begin; lock table pg_catalog.pg_ts_config in access exclusive mode").ReadAll(); err != nil {
				t.Fatal(err)
			}
		}, " default_text_search_config=pg_catalog.simple"}, // (confirmStartup's round trip waits for the lock)
		{"in the auth failure throttle's delay", func(t *testing.T, cfg *configs.Config, _ string) func(*ferrytest.Ferry) (bool, error) {
			cfg.AuthFailureDelay = configs.Duration(10 * time.Minute)
			return func(f *ferrytest.Ferry) (bool, error) { return router.Logins(f.Server) == 1, nil }
		}, ferrytest.User, func(t *testing.T, ctx context.Context, f *ferrytest.Ferry, _ string) {
			router.SetAuthDelayCap(f.Server, 10*time.Minute)
			// A failed login from the same address: the next waits.
			if c, err := pgconn.Connect(ctx, f.DSN("app", ferrytest.User, "wrong")); err == nil {
				c.Close(ctx)
				t.Fatal("a login with a wrong password succeeded")
			}
			ferrytest.Eventually(t, 10*time.Second, "the failed login to end", func() (bool, error) { return router.Logins(f.Server) == 0, nil })
		}, ""},
	}
	kills := []struct {
		name      string
		kill      func(t *testing.T, admin *pgconn.PgConn, user string)
		code, msg string
	}{
		{"KILL_CLIENT", func(t *testing.T, admin *pgconn.PgConn, user string) {
			mustAdmin(t, admin, "KILL_CLIENT "+loginPtr(t, admin, user))
		}, "08P01", "admin forced disconnect"},
		{"KILL", func(t *testing.T, admin *pgconn.PgConn, _ string) {
			mustAdmin(t, admin, "KILL app")
		}, "08P01", "database removed"},
	}
	for _, w := range waits {
		for _, k := range kills {
			for _, loop := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s, %s, relay loop %v", w.name, k.name, loop), func(t *testing.T) {
					if loop {
						skipWithoutLoop(t)
					}
					t.Parallel()
					ctx := testContext(t)
					cfg, dbname := configWithOwnDatabase(t)
					cfg.RelayLoop = loop
					stalled := w.stall(t, cfg, dbname)
					cfg.QueryWaitTimeout = configs.Duration(45 * time.Second) // (a bound on the old code's wait)
					f := ferrytest.Start(t, cfg)
					admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
					if w.hold != nil {
						w.hold(t, ctx, f, dbname)
					}
					got := make(chan error, 1)
					go func() {
						c, err := pgconn.Connect(ctx, f.DSN("app", w.user, ferrytest.Password)+w.params)
						if err == nil {
							c.Close(ctx)
						}
						got <- err
					}()
					ferrytest.Eventually(t, 10*time.Second, "the login to wait", func() (bool, error) { return stalled(f) })
					k.kill(t, admin, w.user)
					select {
					case err := <-got:
						wantPgError(t, err, k.code, k.msg)
					case <-time.After(30 * time.Second): // a hang guard
						t.Fatal("the killed login still waits 30 s after the kill")
					}
				})
			}
		}
	}
}

// loginPtr returns the ptr SHOW CLIENTS lists for the one client logging
// in, which must be user's, to database app.
func loginPtr(t *testing.T, admin *pgconn.PgConn, user string) string {
	t.Helper()
	row := mustAdmin(t, admin, "SHOW CLIENTS").row("state", "login")
	if row == nil || row["user"] != user || row["database"] != "app" {
		t.Fatalf("SHOW CLIENTS lists the login as %v, want state login, user %s, database app", row, user)
	}
	return row["ptr"]
}
