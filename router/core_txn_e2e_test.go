package router_test

// End-to-end tests of transaction semantics through pgferry: departing
// clients, waiting for a server, cancellation and graceful shutdown.
// Session mode and pinning are in core_pinning_e2e_test.go, session
// parameters in core_params_e2e_test.go.

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestClientKilledMidTransactionLeavesNoOpenTransaction(t *testing.T) {
	t.Parallel()
	idle := func(t *testing.T, ctx context.Context, tx pgx.Tx, db string) {}
	tests := []struct {
		name        string
		sessionMode bool
		// kill runs the client's last statement; it must return once the
		// server is busy with it or idle in the transaction.
		kill func(t *testing.T, ctx context.Context, tx pgx.Tx, db string)
	}{
		{"idle in the transaction", false, idle},
		{"idle in the transaction, session mode", true, idle},
		{"while a query runs", false, func(t *testing.T, ctx context.Context, tx pgx.Tx, db string) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				// Fails once the connection is closed under it.
				_, _ = tx.Exec(ctx, "select pg_sleep(1)")
			}()
			t.Cleanup(func() { <-done })
			ferrytest.Eventually(t, 10*time.Second, "the query to run on the server", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'active' and query = 'select pg_sleep(1)'", db)
				return n == 1, err
			})
		}},
		{"during COPY FROM", false, func(t *testing.T, ctx context.Context, tx pgx.Tx, db string) {
			release := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				rows := 0
				src := pgx.CopyFromFunc(func() ([]any, error) {
					if rows++; rows > 100 {
						<-release // the client stalls mid-COPY
						return nil, errors.New("stalled client gave up")
					}
					return []any{rows}, nil
				})
				_, _ = tx.CopyFrom(ctx, pgx.Identifier{"killed"}, []string{"x"}, src)
			}()
			t.Cleanup(func() { close(release); <-done })
			ferrytest.Eventually(t, 10*time.Second, "the server to be in COPY", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'active' and query like 'copy %'", db)
				return n == 1, err
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, db := configWithOwnDatabase(t)
			// One server: if pgferry returned the dead client's server to
			// the pool mid-transaction, the next client would get it and
			// see the uncommitted row.
			setPoolSize(cfg, "app", 1)
			if tc.sessionMode {
				e := cfg.Databases["app"]
				e.PoolMode = "session"
				cfg.Databases["app"] = e
			}
			f := ferrytest.Start(t, cfg)
			// Clients come and go: in session mode each holds the only
			// server for as long as it is connected.
			countRows := func() int {
				t.Helper()
				c, err := pgx.Connect(ctx, f.AppDSN())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(ctx)
				var n int
				if err := c.QueryRow(ctx, "select count(*) from killed").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			setup, err := pgx.Connect(ctx, f.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := setup.Exec(ctx, "create table killed (x int)"); err != nil {
				t.Fatal(err)
			}
			if err := setup.Close(ctx); err != nil {
				t.Fatal(err)
			}

			conn, err := pgx.Connect(ctx, f.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "insert into killed values ($1)", 1); err != nil {
				t.Fatal(err)
			}
			n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'idle in transaction'", db)
			if err != nil || n != 1 {
				t.Fatalf("sessions idle in transaction before the kill: %d %v", n, err)
			}
			tc.kill(t, ctx, tx, db)
			// Abruptly: no Terminate, just the socket closing.
			if err := conn.PgConn().Conn().Close(); err != nil {
				t.Fatal(err)
			}

			ferrytest.Eventually(t, 15*time.Second, "no transaction left open on the server", func() (bool, error) {
				n, err := busyBackends(ctx, db)
				return n == 0, err
			})
			for range 3 {
				if rows := countRows(); rows != 0 {
					t.Fatalf("the killed client's uncommitted insert is visible (%d rows)", rows)
				}
			}
		})
	}
}

func TestQueryWaitTimeoutDisconnectsAClientThatWaitedTooLongForAServer(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	setPoolSize(cfg, "app", 1)
	// The holder's login dials the pool's first server connection within
	// this bound too: 300 ms ran out once under -race on a loaded machine.
	cfg.QueryWaitTimeout = configs.Duration(2 * time.Second)
	f := ferrytest.Start(t, cfg)

	holder := ferrytest.Connect(t, ctx, f.AppDSN())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatal(err)
	}

	waiter := ferrytest.Connect(t, ctx, f.AppDSN())
	_, err = waiter.Exec(ctx, "select 2")
	pe := expectPgError(t, err, "08P01")
	if pe.Severity != "FATAL" || pe.Message != "query_wait_timeout" {
		t.Fatalf("got %s %q, want FATAL query_wait_timeout", pe.Severity, pe.Message)
	}
	ferrytest.Eventually(t, 5*time.Second, "the waiting client to be disconnected", func() (bool, error) {
		return waiter.IsClosed(), nil
	})

	// The holder is unaffected and, once it commits, others get the server.
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	next := ferrytest.Connect(t, ctx, f.AppDSN())
	if err := next.QueryRow(ctx, "select 3").Scan(&one); err != nil || one != 3 {
		t.Fatalf("after the holder committed: %d %v", one, err)
	}
}

func TestCancelRequestStopsTheRunningQueryAndTheSessionGoesOn(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)

	tests := []struct {
		name string
		run  func(ctx context.Context, conn *pgx.Conn) error
		text string // the query as pg_stat_activity shows it
	}{
		{"simple protocol", func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "select pg_sleep(30)")
			return err
		}, "select pg_sleep(30)"},
		{"extended protocol", func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "select pg_sleep($1::int)", 31)
			return err
		}, "select pg_sleep($1::int)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := pgx.ParseConfig(f.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			// Make pgx send a CancelRequest when the context ends (its
			// default only closes the connection). The deadline bounds the
			// test if the cancel is lost.
			cc.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
				return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 20 * time.Second}
			}
			conn := ferrytest.ConnectConfig(t, ctx, cc)

			qctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- tc.run(qctx, conn) }()
			ferrytest.Eventually(t, 10*time.Second, "the query to run on the server", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and state = 'active' and query = $2", db, tc.text)
				return n == 1, err
			})
			cancel()
			err = <-errc
			expectPgError(t, err, "57014")

			ferrytest.Eventually(t, 10*time.Second, "the server to finish the canceled query", func() (bool, error) {
				n, err := busyBackends(ctx, db)
				return n == 0, err
			})
			for i := range 5 {
				var n int
				if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
					t.Fatalf("query %d after the cancel: %d %v", i, n, err)
				}
			}
		})
	}
}

func TestGracefulShutdownLetsTheOpenTransactionCommitThenClosesTheClient(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table drained (x int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into drained values ($1)", 1); err != nil {
		t.Fatal(err)
	}
	// A second client sits idle between transactions.
	idle := ferrytest.Connect(t, ctx, f.AppDSN())
	if err := idle.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	cut := make(chan int, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cut <- f.Server.Shutdown(sctx)
	}()
	ferrytest.Eventually(t, 10*time.Second, "pgferry to stop accepting clients", func() (bool, error) {
		c, err := net.DialTimeout("tcp", f.Addr.String(), time.Second)
		if err != nil {
			return true, nil
		}
		return false, c.Close()
	})
	// The transaction in progress may still finish.
	if _, err := tx.Exec(ctx, "insert into drained values ($1)", 2); err != nil {
		t.Fatalf("statement inside the open transaction during shutdown: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during shutdown: %v", err)
	}
	// Then the session ends by itself (Shutdown returns without cutting
	// it) and the client's next query fails.
	select {
	case n := <-cut:
		if n != 0 {
			t.Fatalf("Shutdown cut %d sessions, want 0: the client was not let go after its transaction", n)
		}
	case <-ctx.Done():
		t.Fatal("Shutdown did not return")
	}
	for _, c := range []*pgx.Conn{conn, idle} {
		_, err := c.Exec(ctx, "select 1")
		if err == nil {
			t.Fatal("a client can still run queries after Shutdown returned")
		}
		// The goodbye, if the client read it, says why.
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code != "57P01" {
			t.Fatalf("got %v, want admin_shutdown (57P01) or a closed connection", err)
		}
	}
	ferrytest.Eventually(t, 10*time.Second, "the server connections to close", func() (bool, error) {
		n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1", db)
		return n == 0, err
	})
	rows := ferrytest.Connect(t, ctx, cluster.SuperDSN(db))
	var committed int
	if err := rows.QueryRow(ctx, "select count(*) from drained").Scan(&committed); err != nil || committed != 2 {
		t.Fatalf("committed rows: %d %v, want 2", committed, err)
	}
}
