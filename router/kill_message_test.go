package router_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client that pgferry ends on its own initiative (the admin console's
// KILL_CLIENT or KILL, shutdown's deadline, a reload that removed its
// database) is told why before its connection closes, with PgBouncer's
// SQLSTATE and message where pgferry does what PgBouncer does: whether it
// is queued for a server (behind the only one, which another client keeps
// in a transaction), idle in that transaction, or idle between
// transactions; with the relay loop off and on.
func TestAClientPgferryEndsIsToldWhyWhereverItWaits(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name string
		end  func(t *testing.T, s *killScene)
		// every says that every client of the database ends, not only
		// the queued one.
		every     bool
		code, msg string
	}{
		{"KILL_CLIENT", func(t *testing.T, s *killScene) {
			mustAdmin(t, s.admin, "KILL_CLIENT "+s.queuedPtr)
		}, false, "08P01", "admin forced disconnect"},
		{"KILL", func(t *testing.T, s *killScene) {
			mustAdmin(t, s.admin, "KILL app")
		}, true, "08P01", "database removed"},
		{"shutdown", func(t *testing.T, s *killScene) {
			// A deadline already past: shutdown cuts every session at
			// once, the transaction and the queued request unfinished.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			s.f.Server.Shutdown(ctx)
		}, true, "57P01", "pgferry is shutting down"},
		{"RELOAD without the database", func(t *testing.T, s *killScene) {
			// Its sessions live on (not PgBouncer's way): the queued one is
			// told as its wait ends with the pool.
			next := *s.f.Server.Config()
			next.Databases = maps.Clone(next.Databases)
			delete(next.Databases, "app")
			if err := s.f.Server.Reload(&next); err != nil {
				t.Fatal(err)
			}
		}, false, "57P01", "database configuration changed or pgferry is shutting down; reconnect"},
	}
	for _, loop := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s, relay loop %v", tc.name, loop), func(t *testing.T) {
				if loop {
					skipWithoutLoop(t)
				}
				t.Parallel()
				s := startKillScene(t, loop)
				tc.end(t, s)
				select {
				case err := <-s.queuedErr:
					wantPgError(t, err, tc.code, tc.msg)
				case <-time.After(30 * time.Second): // a hang guard
					t.Fatal("the queued client still waits for a server 30 s after it was ended")
				}
				if tc.every {
					wantTold(t, s.ctx, "the client idle in a transaction", s.holder, tc.code, tc.msg)
					wantTold(t, s.ctx, "the client idle between transactions", s.idle, tc.code, tc.msg)
				}
			})
		}
	}
}

// killScene is a pgferry, the relay loop on or off, with one server
// connection for "app" in a database of the test's own and three clients:
// holder keeps that server in a transaction (idle in it), queued's query
// waits in the pool's queue for it (its error comes on queuedErr), idle is
// between transactions. admin is on the admin console; queuedPtr is
// queued's ptr in SHOW CLIENTS.
type killScene struct {
	ctx                  context.Context
	f                    *ferrytest.Ferry
	admin                *pgconn.PgConn
	holder, queued, idle *pgconn.PgConn
	queuedPtr            string
	queuedErr            <-chan error
}

func startKillScene(t *testing.T, loop bool) *killScene {
	t.Helper()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = loop
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-queued-ended"
	s := &killScene{ctx: ctx, f: f,
		admin:  ferrytest.ConnectPgConn(t, ctx, adminDSN(f)),
		holder: ferrytest.ConnectPgConn(t, ctx, f.AppDSN()),
		queued: ferrytest.ConnectPgConn(t, ctx, withApp(f, app)),
		idle:   ferrytest.ConnectPgConn(t, ctx, f.AppDSN()),
	}
	if loop {
		allIntoTheLoop(t, ctx, f, s.holder, s.queued, s.idle)
	}
	for _, sql := range []string{"begin", "select 1"} {
		if _, err := s.holder.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	row := mustAdmin(t, s.admin, "SHOW CLIENTS").row("application_name", app)
	if row == nil {
		t.Fatal("the queued client is not in SHOW CLIENTS")
	}
	s.queuedPtr = row["ptr"]
	got := make(chan error, 1)
	go func() {
		_, err := s.queued.Exec(ctx, "select 2").ReadAll()
		got <- err
	}()
	s.queuedErr = got
	ferrytest.Eventually(t, 10*time.Second, "the client queued for the server", func() (bool, error) {
		return f.Pool(t, "app").Stat.Waiting == 1, nil
	})
	return s
}

// wantTold asserts that client c, who (who) sent nothing since its last
// answer, receives a FATAL with code and msg.
func wantTold(t *testing.T, ctx context.Context, who string, c *pgconn.PgConn, code, msg string) {
	t.Helper()
	m, err := c.ReceiveMessage(ctx) // (pgconn returns an ErrorResponse as an error)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != code || pe.Message != msg {
		t.Fatalf("%s received %#v, %v; want FATAL %s %q", who, m, err, code, msg)
	}
}

// A client logging in while its pool has no server yet (the server
// refuses connections, and the pool holds its queue while it retries)
// waits for one before it is a session a kill reaches: shutdown's
// deadline ends that wait too, and the client is told why, as a queued
// client is. Shutdown waited for it, and it was told query_wait_timeout
// when that passed.
func TestAClientLoggingInWhenShutdownsDeadlinePassesIsToldWhy(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %v", loop), func(t *testing.T) {
			if loop {
				skipWithoutLoop(t)
			}
			t.Parallel()
			ctx := testContext(t)
			cfg, _ := configWithOwnDatabase(t)
			cfg.RelayLoop = loop
			db := cfg.Databases["app"]
			db.Port = refusingPort(t)
			cfg.Databases["app"] = db
			cfg.OutageHoldTimeout = configs.Duration(10 * time.Minute)
			cfg.QueryWaitTimeout = configs.Duration(45 * time.Second) // (a bound on the old code's wait)
			f := ferrytest.Start(t, cfg)
			got := make(chan error, 1)
			go func() {
				c, err := pgconn.Connect(ctx, f.AppDSN())
				if err == nil {
					c.Close(ctx)
				}
				got <- err
			}()
			ferrytest.Eventually(t, 10*time.Second, "the login queued for the pool's first server", func() (bool, error) {
				for _, p := range f.Server.Snapshot().Pools { // (none until the login asks)
					if p.Database == "app" && p.Stat.Waiting == 1 {
						return true, nil
					}
				}
				return false, nil
			})
			past, cancel := context.WithCancel(context.Background())
			cancel()
			shut := make(chan struct{})
			go func() { f.Server.Shutdown(past); close(shut) }()
			select {
			case err := <-got:
				wantPgError(t, err, "57P01", "pgferry is shutting down")
			case <-time.After(30 * time.Second): // a hang guard
				t.Fatal("the login still waits for a server 30 s after shutdown's deadline (query_wait_timeout is 45 s)")
			}
			<-shut
		})
	}
}

// refusingPort returns a local TCP port nothing listens on.
func refusingPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
