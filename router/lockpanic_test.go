package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

// A panic in code that runs under the session's lock must not leave the
// lock taken: the recover takes it to mark the server's state unknown,
// and on the relay loop, a lock left taken would hang the loop and every
// session it serves.
func TestAPanicUnderTheSessionsLockEndsOnlyThatSessionAndDestroysItsServer(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	tests := []struct {
		name string
		// loop: the relay loop serves the session; otherwise its
		// goroutine does, and with session a pump relays the server's
		// answers (session mode), whose panic the client hears of as a
		// lost server.
		loop, session bool
		where         string // see router.SetFaultFor
		code          string // the SQLSTATE the client gets
	}{
		{"on the relay loop, as a request goes to the server", true, false, "process", protocol.SQLStateInternalError},
		{"on the relay loop, as a server frame is noted", true, false, "server frame", protocol.SQLStateInternalError},
		{"on the session's goroutine, as a request goes to the server", false, false, "process", protocol.SQLStateInternalError},
		{"on the session's goroutine, as a server frame is noted", false, false, "server frame", protocol.SQLStateInternalError},
		{"on a pump, as a server frame is noted", false, true, "server frame", protocol.SQLStateConnectionFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.loop {
				skipWithoutLoop(t)
			}
			ctx := testContext(t)
			cfg, db := configWithOwnDatabase(t)
			cfg.RelayLoop = tc.loop
			setPoolSize(cfg, "app", 3)
			held := 0 // servers the other client holds between its queries
			if tc.session {
				e := cfg.Databases["app"]
				e.PoolMode = "session"
				cfg.Databases["app"] = e
				held = 1
			}
			f := ferrytest.Start(t, cfg)
			const app = "pgferry-lock-panic"
			doomedPC := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
			other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			if tc.loop {
				allIntoTheLoop(t, ctx, f, doomedPC, other)
			}
			doomed := hijack(t, doomedPC)
			before := f.Pool(t, "app")
			_, handbacks := loopCounters(t, f)

			undo := router.SetFaultFor(f.Server, func(a, where string) {
				if a == app && where == tc.where {
					panic("a fault injected at " + where + " for " + a)
				}
			})
			defer undo()
			sendRaw(t, doomed, protocol.AppendQuery(nil, "select 2"))
			// (readUntilClosed fails if the session hangs instead.)
			frames := readUntilClosed(t, doomed)
			if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != tc.code {
				t.Fatalf("the client whose session panicked got %s; want one ErrorResponse with SQLSTATE %s", describe(frames), tc.code)
			}
			panicLoggedAndCounted(t, f)
			if _, after := loopCounters(t, f); tc.loop && after != handbacks {
				t.Fatal("the loop handed the session to a goroutine before the panic: the test means the loop's own turn to panic")
			}
			if pumped := f.Pool(t, "app").Counters.PumpedLoans - before.Counters.PumpedLoans; tc.session && pumped == 0 {
				t.Fatal("no pump relayed the loan: the test means a pump's relay to panic")
			}

			// The other client is served (on the loop: the loop goes on),
			// and so is a new one; bounded, so that a hang fails the test.
			onCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			otherClientServed(t, onCtx, other)
			assertServes(t, onCtx, f)

			// The doomed client's server, in an unknown state, was
			// destroyed, not lent again; none is left lent but the other
			// client's, the doomed client is counted out, and every
			// backend of the database is one the pool knows.
			ferrytest.Eventually(t, 10*time.Second, "the doomed client's server destroyed, only the other's lent and one client left", func() (bool, error) {
				st := f.Pool(t, "app").Stat
				return st.Destroyed == before.Stat.Destroyed+1 && st.Active == held && router.Clients(f.Server) == 1, nil
			})
			ferrytest.Eventually(t, 10*time.Second, "as many backends in "+db+" as the pool holds", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and usename = 'app'", db)
				return n == int64(f.Pool(t, "app").Stat.Total), err
			})
		})
	}
}
