package router_test

import (
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestClientSurvivesTheLossOfItsServerInTransactionMode(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
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
	ferrytest.Eventually(t, 20*time.Second, "the client's query to run on the server, to kill it", func() (bool, error) {
		n, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where query = 'select pg_sleep(20)' and state = 'active'")
		if err != nil {
			t.Fatal(err)
		}
		return n > 0, nil
	})
	err := <-errc
	if code, severity, _ := pgCode(err); code != "08006" || severity != "ERROR" {
		t.Fatalf("got %v, want ERROR 08006", err)
	}
	// The same client connection runs its next transaction on another
	// server connection.
	var n int
	if err := conn.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("next transaction: %d %v", n, err)
	}
}
