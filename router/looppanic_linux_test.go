//go:build linux && !pgferry_nopark

package router_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

func TestASessionWhoseLoopTurnPanicsEndsWithAnInternalErrorItsServerDestroyedAndTheLoopServesTheOthers(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-turn-panic"
	doomed := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	other := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	allIntoTheLoop(t, ctx, f, doomed, other)

	// The doomed client holds a server in an open transaction.
	for _, sql := range []string{"begin", "select 1"} {
		if _, err := doomed.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	destroyedBefore := f.Pool(t, "app").Stat.Destroyed

	undo := router.SetLoopTurnFault(f.Server, func(a string, _ int64) {
		if a == app {
			panic("a fault injected into the turns of " + a)
		}
	})
	defer undo()
	_, err := doomed.Exec(ctx, "select 2").ReadAll()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != protocol.SQLStateInternalError {
		t.Fatalf("the client whose turn panicked got %v; want an ErrorResponse with SQLSTATE %s", err, protocol.SQLStateInternalError)
	}
	panicLoggedAndCounted(t, f)

	// The loop goes on serving the other client, and the doomed client's
	// server, in an unknown state, was destroyed, not lent again.
	otherClientServed(t, ctx, other)
	ferrytest.Eventually(t, 10*time.Second, "the doomed client's server destroyed and none lent", func() (bool, error) {
		st := f.Pool(t, "app").Stat
		return st.Destroyed == destroyedBefore+1 && st.Active == 0, nil
	})
}

func TestAPanickingTurnLeavesTheRestOfItsEpollWaitServed(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 3)
	f := ferrytest.Start(t, cfg)
	const gateApp, doomedApp, otherApp = "pgferry-gate", "pgferry-doomed", "pgferry-other"
	gate := ferrytest.ConnectPgConn(t, ctx, withApp(f, gateApp))
	doomedPC := ferrytest.ConnectPgConn(t, ctx, withApp(f, doomedApp))
	otherPC := ferrytest.ConnectPgConn(t, ctx, withApp(f, otherApp))
	allIntoTheLoop(t, ctx, f, gate, doomedPC, otherPC)
	doomed, other := hijack(t, doomedPC), hijack(t, otherPC)

	// The gate's first turn holds the loop while the other two clients
	// send: their events then come in one wait, the doomed one's first
	// (epoll reports them in the order they became ready).
	held, hold := make(chan struct{}), make(chan struct{})
	var once, release sync.Once
	letGo := func() { release.Do(func() { close(hold) }) }
	defer letGo() // (if the test fails first: the loop must not stay held)
	var mu sync.Mutex
	var turned []string
	waits := map[string]int64{}
	undo := router.SetLoopTurnFault(f.Server, func(app string, wait int64) {
		switch app {
		case gateApp:
			once.Do(func() {
				close(held)
				<-hold
			})
		case doomedApp, otherApp:
			mu.Lock()
			turned = append(turned, app)
			if _, ok := waits[app]; !ok {
				waits[app] = wait
			}
			mu.Unlock()
			if app == doomedApp {
				panic("a fault injected into the turns of " + app)
			}
		}
	})
	defer undo()
	gateDone := make(chan error, 1)
	go func() {
		_, err := gate.Exec(context.Background(), "select 1").ReadAll()
		gateDone <- err
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the gate client's turn did not come")
	}
	sendRaw(t, doomed, protocol.AppendQuery(nil, "select 2"))
	sendRaw(t, other, protocol.AppendQuery(nil, "select 3"))
	// Loopback delivers within the write, but under load the kernel may
	// finish it a moment later: a pause, so that both are ready, in
	// order, before the loop's next wait (not a timing assertion).
	time.Sleep(100 * time.Millisecond)
	letGo()

	// The doomed client is told, and the other one, whose event came in
	// the same wait after it, is served.
	if frames := readUntilClosed(t, doomed); !strings.Contains(describe(frames), "E") {
		t.Fatalf("the client whose turn panicked got %s; want an ErrorResponse", describe(frames))
	}
	frames, closed, err := readFrames(other, 10*time.Second, func(fr frame) bool { return fr.typ == 'Z' })
	if got := describe(frames); closed || err != nil || got != "T D C Z" {
		t.Fatalf("the client whose event followed the panicking one in its wait got %s (%v); want its answer", got, err)
	}
	if err := <-gateDone; err != nil {
		t.Fatalf("the gate client: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if i := slices.Index(turned, otherApp); i < 1 || turned[0] != doomedApp {
		t.Fatalf("the loop turned %v; the test arranges the doomed client's turn first, the other's after it", turned)
	}
	// Served in the same wait: an event dropped after the panic would
	// come back only with the next sweep's re-arm, a wait later.
	if waits[doomedApp] != waits[otherApp] {
		t.Fatal("the other client was served in a later epoll wait than the panicking one: the rest of that wait's events were dropped")
	}
}

func TestAPanicWhileTheLoopHandsASessionBackEndsOnlyThatSession(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	setSearchPath := protocol.AppendQuery(nil, "set search_path = public")
	tests := []struct {
		name string
		// inTransaction: the doomed client holds a server in an open
		// transaction when it sends send, which the loop hands to a
		// goroutine; holdsServer: it holds one then (the panic destroys
		// it); pumped: the goroutine starts a pump before the panic.
		inTransaction, holdsServer, pumped bool
		send                               []byte
		where                              string // see router.SetLoopHandbackFault
	}{
		{"a statement the goroutine serves, between transactions, with the client's socket back",
			false, false, false, setSearchPath, "evict"},
		{"a statement the goroutine serves, inside a transaction, as the loop lets go of the session",
			true, true, false, setSearchPath, "evicting"},
		{"a statement the goroutine serves, inside a transaction, as the loop's writes go to its server",
			true, true, false, setSearchPath, "evict flush"},
		{"a COPY FROM STDIN, with its pump started, as the loop's writes go to its server",
			false, true, true, protocol.AppendQuery(nil, "copy handback from stdin"), "evict flush"},
		{"a Terminate inside a transaction, before the session ends",
			true, true, false, protocol.AppendTerminate(nil), "leave"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			const app = "pgferry-handback-panic"
			f, doomedPC, other := doomedAndOtherInTheLoop(t, ctx, app)
			if _, err := other.Exec(ctx, "create table handback (n int)").ReadAll(); err != nil {
				t.Fatal(err)
			}
			if tc.inTransaction {
				for _, sql := range []string{"begin", "select 1"} {
					if _, err := doomedPC.Exec(ctx, sql).ReadAll(); err != nil {
						t.Fatal(err)
					}
				}
			}
			doomed := hijack(t, doomedPC)
			before := f.Pool(t, "app")

			undo := router.SetLoopHandbackFault(f.Server, func(a, where string) {
				if a == app && where == tc.where {
					panic("a fault injected at " + where + " for " + a)
				}
			})
			defer undo()
			sendRaw(t, doomed, tc.send)
			frames := readUntilClosed(t, doomed)
			if errs := errorsIn(frames); len(errs) != 1 || errs[0]['C'] != protocol.SQLStateInternalError {
				t.Fatalf("the client whose session panicked got %s; want one ErrorResponse with SQLSTATE %s", describe(frames), protocol.SQLStateInternalError)
			}
			panicLoggedAndCounted(t, f)

			// The other client is served; the doomed client's server, if
			// it held one, was destroyed (its state is unknown), none is
			// left lent, and the doomed client is counted out once.
			otherClientServed(t, ctx, other)
			// (Only that a pump ran where one must: any loan slower than
			// the inline budget, 50 ms, gets one too, which a loaded
			// machine gives the others now and then.)
			if pumped := f.Pool(t, "app").Counters.PumpedLoans - before.Counters.PumpedLoans; tc.pumped && pumped == 0 {
				t.Fatalf("no loan pumped; want the COPY's pump")
			}
			destroyed := before.Stat.Destroyed
			if tc.holdsServer {
				destroyed++
			}
			ferrytest.Eventually(t, 10*time.Second, "the doomed client's server destroyed, none lent and one client left", func() (bool, error) {
				st := f.Pool(t, "app").Stat
				return st.Destroyed == destroyed && st.Active == 0 && router.Clients(f.Server) == 1, nil
			})
		})
	}
}

func TestAPanicWhileTheLoopHandsALoginToAGoroutineEndsOnlyThatLogin(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, loopLoginConfig(t))
	// A pool's first login goes to a goroutine (the loop has no greeting
	// to send yet).
	undo := router.SetLoopHandbackFault(f.Server, func(_, where string) {
		if where == "login" {
			panic("a fault injected at " + where)
		}
	})
	defer undo()
	if conn, err := pgx.Connect(ctx, f.AppDSN()); err == nil {
		conn.Close(ctx)
		t.Fatal("the client whose login panicked logged in")
	}
	undo()
	if _, handoffs := loginCounters(f); handoffs != 1 {
		t.Fatalf("%d logins handed to a goroutine; want the panicking one", handoffs)
	}
	if n := f.Server.Snapshot().Panics; n != 1 {
		t.Fatalf("%d panics counted; want the one", n)
	}
	clientsDropTo(t, f, 0)
	assertServes(t, ctx, f)
	clientsDropTo(t, f, 0)
}
