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
	ferrytest.ChoosesItsRelayMode(t)
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
			wantOneInternalError(t, frames, "the client whose login panicked")
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

// A panic as the relay loop takes a parked client's session at either end
// of its parking: as the sweep parks it, idle, or as the loop serves it
// when it speaks (adopt). The other client is parked and served all the
// same.
func TestAPanicAsTheLoopParksOrAdoptsAClientEndsOnlyThatClient(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutParking(t)
	t.Parallel()
	tests := []struct {
		name, where string // where: see router.SetFaultFor
		// adopt: both clients are parked before the fault is set, and
		// the doomed one speaks; otherwise both go idle with the fault
		// set, and the sweep parks them.
		adopt bool
	}{
		{"while the sweep parks an idle client", "settling", false},
		{"as the loop adopts a parked client that speaks", "adopting", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			const app = "pgferry-park-panic"
			f, doomedPC, other := doomedAndOtherInTheLoop(t, ctx, app)
			doomed := hijack(t, doomedPC)
			parked := func(n int) func() (bool, error) {
				return func() (bool, error) { return f.Server.Snapshot().ParkedClients == n, nil }
			}
			if tc.adopt {
				ferrytest.Eventually(t, parkWait, "both idle clients of the loop to be parked", parked(2))
			}

			undo := router.SetFaultFor(f.Server, func(a, where string) {
				if a == app && where == tc.where {
					panic("a fault injected at " + where + " for " + a)
				}
			})
			defer undo()
			if tc.adopt {
				sendRaw(t, doomed, protocol.AppendQuery(nil, "select 2"))
			}
			// (Idle, the clients are parked a sweep interval or two
			// later, and the doomed one's parking panics.)
			frames, closed, err := readFrames(doomed, parkWait, nil)
			if !closed {
				t.Fatalf("pgferry did not close the connection of the client whose session panicked (read: %v; frames so far: %s)", err, describe(frames))
			}
			wantOneInternalError(t, frames, "the client whose session panicked at "+tc.where)
			panicLoggedAndCounted(t, f)

			// The loop goes on: the other client is parked (by that
			// sweep or the next) and served, by the loop once parked
			// before; the doomed one is counted out once.
			if !tc.adopt {
				ferrytest.Eventually(t, parkWait, "the other client to be parked", parked(1))
			}
			entries, _ := loopCounters(t, f)
			otherClientServed(t, ctx, other)
			if after, _ := loopCounters(t, f); tc.adopt && after == entries {
				t.Fatal("the other parked client was not served by the loop")
			}
			clientsDropTo(t, f, 1)
			shutdownFinishes(t, f)
		})
	}
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
	wantOneInternalError(t, frames, "the queued client whose timeout panicked")
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
			const app = "pgferry-wake-panic"
			f, doomedPC, other := doomedAndOtherInTheLoop(t, ctx, app)
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
			wantOneInternalError(t, frames, "the client whose hand-off panicked")
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

// wantOneInternalError fails the test unless frames, what who read before
// pgferry closed its connection, hold exactly one ErrorResponse, with
// SQLSTATE XX000.
func wantOneInternalError(t *testing.T, frames []frame, who string) {
	t.Helper()
	if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != protocol.SQLStateInternalError {
		t.Fatalf("%s got %s; want one ErrorResponse with SQLSTATE %s", who, describe(frames), protocol.SQLStateInternalError)
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
