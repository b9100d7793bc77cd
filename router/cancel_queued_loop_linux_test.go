//go:build linux && !pgferry_nopark

package router_test

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// A cancel for a statement the relay loop queued hands the session to its
// goroutine, which gives its place in the queue up: the statement is
// answered 57014 even when a server is free by then, as when the server
// that was busy comes back while the session is handed over. It ran on
// that server: the cancelled INSERT was committed.
func TestACancelledStatementTheLoopQueuedDoesNotRunOnAServerFreedAsItIsHandedOver(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t) // (the hand-over is the loop's)
	t.Parallel()
	ctx := testContext(t)
	const app = "pgferry-cancel-handover"
	f, holder, victim := queuedCancelScene(t, ctx, app)
	handedOver, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	undo := router.SetLoopHandbackFault(f.Server, func(a, where string) {
		if a == app && where == "evict" {
			once.Do(func() { close(handedOver); <-proceed })
		}
	})
	defer undo()
	done := queueInsert(t, ctx, f, victim)
	if err := victim.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handedOver:
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("the relay loop did not hand the cancelled session to its goroutine")
	}
	// The server comes back while the session is handed over: the pool
	// gives it to the place the session still holds.
	if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 10*time.Second, "the server handed to the queued place", func() (bool, error) {
		return f.Pool(t, "app").Stat.Waiting == 0, nil
	})
	close(proceed)
	wantCancelledAndNotRun(t, ctx, victim, done)
}

// A cancel that comes while the relay loop serves a session it queued
// (what its client sent meanwhile, here the start of its next message) is
// not lost when the session waits on: it is handed to its goroutine and
// the statement answered 57014. It waited on, and ran once the server was
// free.
func TestACancelForAStatementTheLoopQueuedThatComesAsTheLoopServesItIsNotLost(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t) // (the loop's turn)
	t.Parallel()
	ctx := testContext(t)
	const app = "pgferry-cancel-in-turn"
	f, holder, victim := queuedCancelScene(t, ctx, app)
	var armed atomic.Bool
	cancelled := make(chan struct{})
	undo := router.SetLoopTurnFault(f.Server, func(a string, _ int64) {
		if a == app && armed.CompareAndSwap(true, false) {
			router.ForwardCancel(f.Server, victim.PID(), binary.BigEndian.Uint32(victim.SecretKey()))
			close(cancelled)
		}
	})
	defer undo()
	done := queueInsert(t, ctx, f, victim)
	armed.Store(true)
	if _, err := victim.Conn().Write([]byte{'H', 0, 0}); err != nil { // the start of a Flush
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("the relay loop served no turn of the queued session")
	}
	if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
		t.Fatal(err)
	}
	wantCancelledAndNotRun(t, ctx, victim, done, []byte{0, 4}) // the rest of the Flush
}

// queuedCancelScene starts pgferry with the relay loop and one server
// connection for "app", a table queued_cancel, and two clients the loop
// serves: holder, which keeps the server in a transaction, and victim
// (application_name app).
func queuedCancelScene(t *testing.T, ctx context.Context, app string) (f *ferrytest.Ferry, holder, victim *pgconn.PgConn) {
	t.Helper()
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	cfg.QueryWaitTimeout = configs.Duration(10 * time.Minute)
	setPoolSize(cfg, "app", 1)
	f = ferrytest.Start(t, cfg)
	holder = ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	victim = ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	allIntoTheLoop(t, ctx, f, holder, victim)
	for _, sql := range []string{"create table queued_cancel (x int)", "begin; select 1"} {
		if _, err := holder.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	return f, holder, victim
}

// queueInsert has victim send an INSERT, which the relay loop queues for
// the server holder keeps; its error comes on the channel.
func queueInsert(t *testing.T, ctx context.Context, f *ferrytest.Ferry, victim *pgconn.PgConn) <-chan error {
	t.Helper()
	queueings := router.LoopQueueings(f.Server)
	done := make(chan error, 1)
	go func() {
		_, err := victim.Exec(ctx, "insert into queued_cancel values (1)").ReadAll()
		done <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the INSERT queued by the relay loop", func() (bool, error) {
		return f.Pool(t, "app").Stat.Waiting == 1 && router.LoopQueueings(f.Server) > queueings, nil
	})
	return done
}

// wantCancelledAndNotRun asserts that victim's INSERT (done) failed with
// 57014, and that the session goes on, once victim has sent rest, with
// the INSERT not run.
func wantCancelledAndNotRun(t *testing.T, ctx context.Context, victim *pgconn.PgConn, done <-chan error, rest ...[]byte) {
	t.Helper()
	select {
	case err := <-done:
		if code, _, _ := pgCode(err); code != "57014" {
			t.Fatalf("the cancelled queued INSERT ended with %v; want 57014", err)
		}
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("the cancelled INSERT still waits 20 s after its server was free")
	}
	for _, b := range rest { // (what the client had begun to send after it)
		if _, err := victim.Conn().Write(b); err != nil {
			t.Fatal(err)
		}
	}
	res, err := victim.Exec(ctx, "select count(*) from queued_cancel").ReadAll()
	if err != nil || string(res[0].Rows[0][0]) != "0" {
		t.Fatalf("after the cancel, the session goes on and the INSERT never ran: %v, %v", res, err)
	}
}
