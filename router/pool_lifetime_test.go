package router_test

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestServerLifetimeZeroUsesEachServerConnectionForOneTransactionOnly(t *testing.T) {
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.ServerLifetime = 0 // PgBouncer's "use each connection once"
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	pids := make(map[int32]bool)
	for range 3 {
		var pid int32
		if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if pids[pid] {
			t.Fatalf("server backend %d served a second transaction with server_lifetime = 0", pid)
		}
		pids[pid] = true
	}
}
