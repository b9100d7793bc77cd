package router_test

import (
	"strconv"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// SHOW STATS counts the clients' queries, not what pgferry sends a server
// on their behalf: two clients with different application_name sharing
// one server connection have their parameters replayed at every loan
// (a query of pgferry's, a guard and a Sync behind a simple Query), and
// total_query_count still grows by one per query a client sent.
func TestShowStatsCountsTheClientsQueriesNotTheReplaysOfTheirParameters(t *testing.T) {
	t.Parallel()
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	a := ferrytest.ConnectPgConn(t, ctx, withApp(f, "stats_a"))
	b := ferrytest.ConnectPgConn(t, ctx, withApp(f, "stats_b"))
	const rounds = 10
	for range rounds {
		if _, err := a.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Exec(ctx, "select 2").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	stats := mustAdmin(t, pc, "SHOW STATS").row("database", "app")
	if stats == nil {
		t.Fatal("SHOW STATS has no row for app")
	}
	if n, err := strconv.Atoi(stats["total_query_count"]); err != nil || n != 2*rounds {
		t.Fatalf("total_query_count = %s after %d queries of the clients, each behind a replay of its parameters", stats["total_query_count"], 2*rounds)
	}
}
