package router_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
)

// loopQueueSetup starts pgferry with the relay loop on and one server
// connection, and returns a client holding it in an open transaction, and
// a second client in the loop, both past their entry.
func loopQueueSetup(t *testing.T, ctx context.Context, sslMode string, edit func(*configs.Config)) (f *ferrytest.Ferry, holder *pgx.Conn, queued *pgconn.PgConn) {
	t.Helper()
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 1)
	withServerSSLMode(cfg, sslMode)
	if edit != nil {
		edit(cfg)
	}
	f = ferrytest.Start(t, cfg)
	holder = ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, holder, 1)
	queued = ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	for i := 0; ; i++ {
		if n, _ := loopCounters(t, f); n >= 2 {
			break
		}
		if i == 1000 {
			t.Fatal("the second client never entered the relay loop")
		}
		if _, err := queued.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := holder.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "select 1"); err != nil { // the server is linked from here
		t.Fatal(err)
	}
	return f, holder, queued
}

// waitQueued waits until one client waits for a server and the pool's
// queue holds it.
func waitQueued(t *testing.T, f *ferrytest.Ferry) {
	t.Helper()
	ferrytest.Eventually(t, 20*time.Second, "the client to queue for the server", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.ClientsWaiting == 1 && p.Stat.Waiting == 1, nil
	})
}

func TestClientsTheLoopQueuesForABusyServerAreServedInTurnWithoutAHandBack(t *testing.T) {
	skipWithoutLoop(t)
	for _, mode := range serverSSLModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			f, holder, queued := loopQueueSetup(t, ctx, mode, nil)
			_, handbacks := loopCounters(t, f)

			res := make(chan error, 1)
			go func() {
				_, err := queued.Exec(ctx, "select 42").ReadAll()
				res <- err
			}()
			waitQueued(t, f)
			if _, err := holder.Exec(ctx, "commit"); err != nil {
				t.Fatal(err)
			}
			if err := <-res; err != nil {
				t.Fatalf("the queued client's query: %v", err)
			}

			// Now both take turns on the one server, many times.
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			wg.Add(2)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					if _, err := holder.Exec(ctx, "select 1"); err != nil {
						errs <- err
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					if _, err := queued.Exec(ctx, "select 2").ReadAll(); err != nil {
						errs <- err
						return
					}
				}
			}()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if _, after := loopCounters(t, f); after != handbacks {
				t.Fatalf("%d hand-backs while the clients queued in the loop; want none", after-handbacks)
			}
			if p := f.Pool(t, "app"); p.Stat.WaitCount < 2 {
				t.Fatalf("the pool queued %d waits; want the clients to have queued", p.Stat.WaitCount)
			}
			// (The answer reaches a client as its loan ends: a moment later.)
			ferrytest.Eventually(t, 20*time.Second, "the one server to be idle and nobody queued", func() (bool, error) {
				p := f.Pool(t, "app")
				return p.Stat.Total == 1 && p.Stat.Active == 0 && p.Stat.Waiting == 0, nil
			})
		})
	}
}

func TestAClientThatLeavesWhileTheLoopQueuesItGivesUpItsPlace(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queued := loopQueueSetup(t, ctx, "disable", nil)
	c := hijack(t, queued)
	sendRaw(t, c, protocol.AppendQuery(nil, "select 'never run'"))
	waitQueued(t, f)
	c.Close()

	ferrytest.Eventually(t, 20*time.Second, "the leaving client to give up its place", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Waiting == 0 && p.ClientsWaiting == 0 && f.Server.Snapshot().Clients == 1, nil
	})
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	// The server goes back to the pool, not to the client that left.
	ferrytest.Eventually(t, 20*time.Second, "the server to be idle", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Active == 0 && p.Stat.Idle == 1, nil
	})
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := other.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("a new client after: %d, %v", n, err)
	}
}

func TestQueryWaitTimeoutEndsAClientTheLoopQueuedTooLong(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queued := loopQueueSetup(t, ctx, "disable", func(cfg *configs.Config) {
		cfg.QueryWaitTimeout = configs.Duration(time.Second)
	})
	_, handbacks := loopCounters(t, f)
	_, err := queued.Exec(ctx, "select 'too late'").ReadAll()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != protocol.SQLStateProtocolViolation || pe.Message != "query_wait_timeout" {
		t.Fatalf("the queued client got %v; want FATAL query_wait_timeout", err)
	}
	if _, after := loopCounters(t, f); after != handbacks {
		t.Fatalf("the timeout came from a goroutine (%d hand-backs); want the loop's", after-handbacks)
	}
	// The holder's transaction goes on, and its server comes back clean.
	var n int
	if err := holder.QueryRow(ctx, "select 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("the holder after: %d, %v", n, err)
	}
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the pool to settle", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Waiting == 0 && p.Stat.Active == 0 && f.Server.Snapshot().Clients == 1, nil
	})
}
