//go:build linux && !pgferry_nopark

package router_test

// Panics where the relay loop lets go of a login or a session outside a
// turn's recover, or after unloop, where a recover would take the session
// for handed on: each ends only that client, once, and Shutdown finishes.

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

func TestAPanicAsTheLoopLetsGoOfALoginEndsItOnceAndShutdownFinishes(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	untilSASLRequest := func(t *testing.T, c net.Conn) {
		t.Helper()
		sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
		if _, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'R' }); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		where string // see router.SetFaultFor
		// warm: the pool has greeted a client, so the loop sees a login
		// through; loginTimeout: client_login_timeout is a second.
		warm, loginTimeout bool
		// client does the client's part, up to where pgferry ends the
		// login.
		client func(t *testing.T, c net.Conn)
	}{
		{"a message out of place after SCRAM's request, as the loop ends the login",
			"ending login", true, false, func(t *testing.T, c net.Conn) {
				untilSASLRequest(t, c)
				sendRaw(t, c, encode(t, &pgproto3.Query{String: "select 1"}))
			}},
		{"a login stalled past client_login_timeout, as the sweep ends it",
			"ending login", true, true, untilSASLRequest},
		{"a login stalled past client_login_timeout, as the sweep takes it to end it",
			"expiring", true, true, untilSASLRequest},
		{"a pool's first login, as the loop hands it to a goroutine",
			"handing off login", false, false, func(t *testing.T, c net.Conn) {
				sendRaw(t, c, startupMessage(t, ferrytest.User, "app"))
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg := loopLoginConfig(t)
			if tc.loginTimeout {
				cfg.ClientLoginTimeout = configs.Duration(time.Second)
			}
			f := ferrytest.Start(t, cfg)
			if tc.warm {
				warmPool(t, f, f.AppDSN())
			}
			loops, handoffs := loginCounters(f)

			undo := router.SetFaultFor(f.Server, func(_, where string) {
				if where == tc.where {
					panic("a fault injected at " + where)
				}
			})
			defer undo()
			c := dialFerry(t, f)
			tc.client(t, c)
			frames := readUntilClosed(t, c)
			if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != protocol.SQLStateInternalError {
				t.Fatalf("the client whose login panicked got %s; want one ErrorResponse with SQLSTATE %s", describe(frames), protocol.SQLStateInternalError)
			}
			undo()
			panicLoggedAndCounted(t, f)
			if l, h := loginCounters(f); l != loops || h != handoffs {
				t.Fatalf("%d logins seen through and %d handed off by the loop since; want none", l-loops, h-handoffs)
			}

			// Counted out once (a second count would go below zero),
			// and pgferry serves and shuts down.
			clientsDropTo(t, f, 0)
			assertServes(t, ctx, f)
			clientsDropTo(t, f, 0)
			shutdownFinishes(t, f)
		})
	}
}

func TestAPanicWhileTheSweepParksAnIdleClientOfTheLoopEndsOnlyThatClient(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-settle-panic"
	doomedPC := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	allIntoTheLoop(t, ctx, f, doomedPC, other)
	doomed := hijack(t, doomedPC)

	// Both clients go idle; the sweep parks them a sweep interval or two
	// later, and the doomed one's panics.
	undo := router.SetFaultFor(f.Server, func(a, where string) {
		if a == app && where == "settling" {
			panic("a fault injected at " + where + " for " + a)
		}
	})
	defer undo()
	frames, closed, err := readFrames(doomed, parkWait, nil)
	if !closed {
		t.Fatalf("pgferry did not close the connection of the client whose parking panicked (read: %v; frames so far: %s)", err, describe(frames))
	}
	if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != protocol.SQLStateInternalError {
		t.Fatalf("the client whose parking panicked got %s; want one ErrorResponse with SQLSTATE %s", describe(frames), protocol.SQLStateInternalError)
	}
	panicLoggedAndCounted(t, f)

	// The other client is parked by that sweep or the next, and served
	// when it talks; the doomed one is counted out once.
	ferrytest.Eventually(t, parkWait, "the other client to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	otherClientServed(t, ctx, other)
	clientsDropTo(t, f, 1)
	shutdownFinishes(t, f)
}

func TestAPanicAsTheLoopAdoptsAParkedClientEndsOnlyThatClient(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-adopt-panic"
	doomedPC := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	allIntoTheLoop(t, ctx, f, doomedPC, other)
	doomed := hijack(t, doomedPC)
	ferrytest.Eventually(t, parkWait, "both idle clients of the loop to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 2, nil
	})

	// The doomed client speaks: the loop, which would serve its request
	// itself (adopt), panics.
	undo := router.SetFaultFor(f.Server, func(a, where string) {
		if a == app && where == "adopting" {
			panic("a fault injected at " + where + " for " + a)
		}
	})
	defer undo()
	sendRaw(t, doomed, protocol.AppendQuery(nil, "select 2"))
	frames := readUntilClosed(t, doomed)
	if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != protocol.SQLStateInternalError {
		t.Fatalf("the client whose adoption panicked got %s; want one ErrorResponse with SQLSTATE %s", describe(frames), protocol.SQLStateInternalError)
	}
	panicLoggedAndCounted(t, f)

	// The loop goes on: the other parked client is adopted and served,
	// and the doomed one is counted out once.
	entries, _ := loopCounters(t, f)
	otherClientServed(t, ctx, other)
	if after, _ := loopCounters(t, f); after == entries {
		t.Fatal("the other parked client was not served by the loop")
	}
	clientsDropTo(t, f, 1)
	shutdownFinishes(t, f)
}

func TestAPanicAsTheSweepEndsAClientQueuedPastQueryWaitTimeoutEndsOnlyThatClient(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queuedPC := loopQueueSetup(t, ctx, "disable", false, func(cfg *configs.Config) {
		cfg.QueryWaitTimeout = configs.Duration(time.Second)
	})
	queued := hijack(t, queuedPC)
	before := f.Pool(t, "app")
	queueings := router.LoopQueueings(f.Server)

	undo := router.SetFaultFor(f.Server, func(_, where string) {
		if where == "expiring" {
			panic("a fault injected at " + where)
		}
	})
	defer undo()
	sendRaw(t, queued, protocol.AppendQuery(nil, "select 'too late'"))
	frames := readUntilClosed(t, queued)
	if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != protocol.SQLStateInternalError {
		t.Fatalf("the queued client whose timeout panicked got %s; want one ErrorResponse with SQLSTATE %s", describe(frames), protocol.SQLStateInternalError)
	}
	undo()
	panicLoggedAndCounted(t, f)
	if router.LoopQueueings(f.Server) != queueings+1 {
		t.Fatal("the client did not queue in the loop")
	}

	// The holder's transaction goes on; its server comes back clean, the
	// doomed client's place in the queue was given up, and it is counted
	// out once.
	var n int
	if err := holder.QueryRow(ctx, "select 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("the holder after: %d, %v", n, err)
	}
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the pool to settle", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Waiting == 0 && p.Stat.Active == 0 && p.Stat.Destroyed == before.Stat.Destroyed && router.Clients(f.Server) == 1, nil
	})
	shutdownFinishes(t, f)
}

func TestAPanicAsAWakeOrAKillTakesAClientFromTheLoopEndsOnlyThatClient(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	tests := []struct {
		name string
		// shutdown: Shutdown wakes the client (on its own goroutine);
		// otherwise the admin console's KILL_CLIENT kills it (on the
		// console session's goroutine).
		shutdown bool
	}{
		{"Shutdown wakes it", true},
		{"the admin console kills it", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, _ := loopTestConfig(t, "disable", 2)
			f := ferrytest.Start(t, cfg)
			const app = "pgferry-wake-panic"
			doomedPC := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
			other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			allIntoTheLoop(t, ctx, f, doomedPC, other)
			// The doomed client holds a server in an open transaction,
			// waiting in the loop for its next request.
			for _, sql := range []string{"begin", "select 1"} {
				if _, err := doomedPC.Exec(ctx, sql).ReadAll(); err != nil {
					t.Fatal(err)
				}
			}
			doomed := hijack(t, doomedPC)
			var admin *pgconn.PgConn
			var ptr string
			if !tc.shutdown {
				admin = ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
				row := mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app)
				if row == nil {
					t.Fatal("the doomed client is not in SHOW CLIENTS")
				}
				ptr = row["ptr"]
			}
			before := f.Pool(t, "app")
			clients := router.Clients(f.Server)

			undo := router.SetFaultFor(f.Server, func(a, where string) {
				if a == app && where == "evicting" {
					panic("a fault injected at " + where + " for " + a)
				}
			})
			defer undo()
			if tc.shutdown {
				shutdownFinishes(t, f)
			} else {
				mustAdmin(t, admin, "KILL_CLIENT "+ptr)
			}
			frames := readUntilClosed(t, doomed)
			if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != protocol.SQLStateInternalError {
				t.Fatalf("the client whose hand-off panicked got %s; want one ErrorResponse with SQLSTATE %s", describe(frames), protocol.SQLStateInternalError)
			}
			panicLoggedAndCounted(t, f)
			if tc.shutdown {
				return // (and every client was let go of: shutdownFinishes)
			}

			// The doomed client's server, in an unknown state, was
			// destroyed; the other client is served, and the console
			// too; the doomed client is counted out once.
			ferrytest.Eventually(t, 10*time.Second, "the doomed client's server destroyed, none lent and one client less", func() (bool, error) {
				st := f.Pool(t, "app").Stat
				return st.Destroyed == before.Stat.Destroyed+1 && st.Active == 0 && router.Clients(f.Server) == clients-1, nil
			})
			otherClientServed(t, ctx, other)
			mustAdmin(t, admin, "SHOW CLIENTS")
			shutdownFinishes(t, f)
		})
	}
}

// shutdownFinishes shuts f down and fails the test if Shutdown does not
// return well before its deadline: a client nobody ends keeps it waiting
// for good (it waits for every client, and kills only registered sessions).
func shutdownFinishes(t *testing.T, f *ferrytest.Ferry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- f.Server.Shutdown(ctx) }()
	select {
	case cut := <-done:
		if ctx.Err() != nil || cut != 0 {
			t.Fatalf("Shutdown returned only at its deadline, cutting %d sessions", cut)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return: a client was never let go of")
	}
	if n := router.Clients(f.Server); n != 0 {
		t.Fatalf("%d clients counted after Shutdown; want 0", n)
	}
}
