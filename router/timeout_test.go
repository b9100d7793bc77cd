package router_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestQueryTimeoutCancelsTheQueryOnTheServer(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	cfg.QueryTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	_, err := conn.Exec(ctx, "select pg_sleep(20)")
	if code, _, _ := pgCode(err); code != "57014" {
		t.Fatalf("by the simple protocol: got %v, want SQLSTATE 57014 query_canceled", err)
	}
	// With an argument, pgx sends Parse, Bind, Describe, Execute, Sync.
	_, err = conn.Exec(ctx, "select pg_sleep($1)", 20)
	if code, _, _ := pgCode(err); code != "57014" {
		t.Fatalf("by the extended protocol: got %v, want SQLSTATE 57014 query_canceled", err)
	}
	// The session and its pool keep working. The check runs under a
	// query_timeout a reload raised, which the session's next query
	// takes: "select 5" prepared and run in 300 ms is what a loaded
	// machine does not promise, and a cancel that reaches it all the
	// same (one of the timeouts' arriving late) still fails it.
	next := *cfg
	next.QueryTimeout = configs.Duration(time.Minute)
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "select 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("after timeout: %d %v", n, err)
	}
}

func TestIdleInTransactionTimeoutDisconnectsAndRollsBack(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	cfg.IdleTransactionTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table if not exists idle_tx (x int); truncate idle_tx"); err != nil {
		t.Fatal(err)
	}
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "begin; insert into idle_tx values (1)"); err != nil {
		t.Fatal(err)
	}
	// Without touching the idle client, wait until its server transaction
	// is gone: pgferry closed the server connection, which rolls back.
	ferrytest.Eventually(t, 10*time.Second, "the session idle in transaction to be disconnected", func() (bool, error) {
		var open int
		if err := setup.QueryRow(ctx, "select count(*) from pg_stat_activity where state = 'idle in transaction' and datname = 'app'").Scan(&open); err != nil {
			t.Fatal(err)
		}
		return open == 0, nil
	})
	if _, err := conn.Exec(ctx, "select 1"); err == nil {
		t.Fatal("the client idle in a transaction can still run queries")
	}
	var n int
	if err := setup.QueryRow(ctx, "select count(*) from idle_tx").Scan(&n); err != nil || n != 0 {
		t.Fatalf("uncommitted row visible or error: %d %v", n, err)
	}
}

func TestTransactionTimeoutDisconnectsAClientWhoseTransactionStaysOpenTooLong(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	cfg.TransactionTimeout = configs.Duration(time.Second)
	f := ferrytest.Start(t, cfg)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table tt (x int)"); err != nil {
		t.Fatal(err)
	}

	// Short transactions, back to back for longer than the timeout, are
	// not touched: the clock is per transaction.
	quick := ferrytest.Connect(t, ctx, f.AppDSN())
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
		if _, err := quick.Exec(ctx, "begin; insert into tt values (1); commit"); err != nil {
			t.Fatalf("a short transaction was cut: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	cases := []struct {
		name string
		run  func(t *testing.T, conn *pgx.Conn) error
	}{
		{"while its query runs", func(_ *testing.T, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "begin; insert into tt values (2); select pg_sleep(30)")
			return err
		}},
		{"while it sits idle inside the transaction", func(t *testing.T, conn *pgx.Conn) error {
			if _, err := conn.Exec(ctx, "begin; insert into tt values (3)"); err != nil {
				return err
			}
			// Until pgferry ends the transaction by dropping its server
			// (a transaction left open makes this wait fail).
			waitNoBusyBackends(t, ctx, db)
			_, err := conn.Exec(ctx, "commit")
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := ferrytest.Connect(t, ctx, f.AppDSN())
			err := tc.run(t, conn)
			if code, severity, _ := pgCode(err); code != "25P04" || severity != "FATAL" {
				t.Fatalf("got %v, want FATAL 25P04 transaction_timeout", err)
			}
			if !conn.IsClosed() {
				if err := conn.Ping(ctx); err == nil {
					t.Fatal("the client is still connected after transaction_timeout")
				}
			}
			// The server connection was dropped, so its transaction rolled back.
			waitNoBusyBackends(t, ctx, db)
		})
	}
	var n int
	if err := setup.QueryRow(ctx, "select count(*) from tt where x > 1").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows of timed-out transactions: %d, %v (want 0: rolled back)", n, err)
	}
	assertServes(t, ctx, f)
}
