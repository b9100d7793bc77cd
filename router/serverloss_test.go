package router_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestClientSurvivesTheLossOfItsServerInTransactionMode(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.AppDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pid int
	if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "select pg_sleep(20)")
		errc <- err
	}()
	// Kill the server backend running the client's query.
	for {
		var n int64
		n, err = cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where query = 'select pg_sleep(20)' and state = 'active'")
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	err = <-errc
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "08006" || pe.Severity != "ERROR" {
		t.Fatalf("got %v, want ERROR 08006", err)
	}
	// The same client connection runs its next transaction on another
	// server connection.
	var n int
	if err := conn.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("next transaction: %d %v", n, err)
	}
}
