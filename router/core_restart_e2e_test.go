package router_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestServerRestartUnderLoadIsSurvivedByPgferry stops the package's shared
// cluster, so it must not run in parallel with tests that use it: it does
// not call t.Parallel (parallel tests start only after every sequential
// test has finished) and it leaves the cluster accepting connections again,
// even when it fails half-way.
func TestServerRestartUnderLoadIsSurvivedByPgferry(t *testing.T) {
	ctx := testContext(t)
	restoreClusterAtEnd(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))

	// Workers run short queries in a loop, reconnecting after errors.
	const workers = 4
	var (
		ok, failed atomic.Int64
		restarted  atomic.Bool
		okAfter    [workers]atomic.Int64 // successes after the restart, per worker
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := func() error {
					if conn == nil {
						c, err := pgx.Connect(qctx, f.AppDSN())
						if err != nil {
							return err
						}
						conn = c
					}
					return pgx.BeginFunc(qctx, conn, func(tx pgx.Tx) error {
						var n int
						return tx.QueryRow(qctx, "select $1::int", w).Scan(&n)
					})
				}()
				cancel()
				if err != nil {
					failed.Add(1)
					if conn != nil {
						conn.Close(context.Background())
						conn = nil
					}
					// Pace reconnects while the server is down.
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					continue
				}
				ok.Add(1)
				if restarted.Load() {
					okAfter[w].Add(1)
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	ferrytest.Eventually(t, 20*time.Second, "the workers to get going", func() (bool, error) {
		return ok.Load() >= 50, nil
	})
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d queries failed before the outage", n)
	}
	if err := cluster.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "clients to notice the outage", func() (bool, error) {
		return failed.Load() > 0, nil
	})
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted.Store(true)

	ferrytest.Eventually(t, 30*time.Second, "a new client to get through pgferry", func() (bool, error) {
		conn, err := pgx.Connect(ctx, f.AppDSN())
		if err != nil {
			return false, err
		}
		defer conn.Close(ctx)
		var n int
		err = conn.QueryRow(ctx, "select 42").Scan(&n)
		return err == nil && n == 42, err
	})
	ferrytest.Eventually(t, 30*time.Second, "every worker to succeed again", func() (bool, error) {
		for w := range workers {
			if okAfter[w].Load() < 5 {
				return false, nil
			}
		}
		return true, nil
	})
}

// TestClientsBetweenTransactionsRideOutACrashAndRestart crashes the shared
// cluster (so it does not run in parallel, as above) while clients sit
// between transactions, starts their next transactions while PostgreSQL is
// down, and restarts it: each transaction must wait for a server and then
// succeed, with no error and no lost session, and a fresh client must be
// served as soon as PostgreSQL accepts connections again.
func TestClientsBetweenTransactionsRideOutACrashAndRestart(t *testing.T) {
	ctx := testContext(t)
	restoreClusterAtEnd(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	const clients = 8
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i] = ferrytest.Connect(t, ctx, f.AppDSN())
		var n int
		if err := conns[i].QueryRow(ctx, "select 1").Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	// Every client starts its next transaction while the server is down.
	errs := make(chan error, clients)
	for i, c := range conns {
		go func() {
			qctx, cancel := context.WithTimeout(ctx, 25*time.Second)
			defer cancel()
			errs <- pgx.BeginFunc(qctx, c, func(tx pgx.Tx) error {
				var n int
				if err := tx.QueryRow(qctx, "select $1::int", i).Scan(&n); err != nil {
					return err
				}
				if n != i {
					return fmt.Errorf("got %d, want %d", n, i)
				}
				return nil
			})
		}()
	}
	ferrytest.Eventually(t, 10*time.Second, "the clients to queue for a server", func() (bool, error) {
		return f.Pool(t, "app").ClientsWaiting == clients, nil
	})
	ferrytest.Eventually(t, 10*time.Second, "dials to be refused and retried", func() (bool, error) {
		return f.Pool(t, "app").Stat.Retries >= 2, nil
	})
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	fresh := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := fresh.QueryRow(ctx, "select 42").Scan(&n); err != nil {
		t.Fatalf("a fresh client after the restart: %v", err)
	}
	t.Logf("a fresh client was served %v after PostgreSQL accepted connections again", time.Since(back).Round(time.Millisecond))
	for range clients {
		if err := <-errs; err != nil {
			t.Errorf("a client between transactions got an error across the restart: %v", err)
		}
	}
	if !strings.Contains(f.Logs(), "server reachable again") {
		t.Errorf("the end of the outage was not logged")
	}
}

// restoreClusterAtEnd leaves the shared cluster accepting connections at
// the end of a test that stops it, even one that fails half-way.
func restoreClusterAtEnd(t *testing.T) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cluster.QueryInt(ctx, "select 1"); err == nil {
			return
		}
		if err := cluster.Restart(); err != nil {
			t.Errorf("restore the cluster for the other tests: %v", err)
		}
	})
}
