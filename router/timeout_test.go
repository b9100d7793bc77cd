package router_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestQueryTimeoutCancelsTheQueryOnTheServer(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	cfg.QueryTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "select pg_sleep(20)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("got %v, want SQLSTATE 57014 query_canceled", err)
	}
	// The session and its pool keep working.
	var n int
	if err := conn.QueryRow(ctx, "select 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("after timeout: %d %v", n, err)
	}
}

func TestIdleInTransactionTimeoutDisconnectsAndRollsBack(t *testing.T) {
	cfg := ferrytest.Config(t, cluster)
	cfg.IdleTransactionTimeout = configs.Duration(300 * time.Millisecond)
	f := ferrytest.Start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	setup, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer setup.Close(context.Background())
	if _, err := setup.Exec(ctx, "create table if not exists idle_tx (x int); truncate idle_tx"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "begin; insert into idle_tx values (1)"); err != nil {
		t.Fatal(err)
	}
	// Without touching the idle client, wait until its server transaction
	// is gone: pgferry closed the server connection, which rolls back.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var open int
		if err := setup.QueryRow(ctx, "select count(*) from pg_stat_activity where state = 'idle in transaction' and datname = 'app'").Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session idle in transaction was not disconnected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := conn.Exec(ctx, "select 1"); err == nil {
		t.Fatal("the client idle in a transaction can still run queries")
	}
	var n int
	if err := setup.QueryRow(ctx, "select count(*) from idle_tx").Scan(&n); err != nil || n != 0 {
		t.Fatalf("uncommitted row visible or error: %d %v", n, err)
	}
}
