package router_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// BenchmarkReadOnlyTransactions runs `BEGIN READ ONLY; SELECT; COMMIT`
// through pgferry with a streaming replica configured (reads routed by lag)
// and without one (everything on the primary). It reports the share of
// transactions the replica served (each transaction asks
// pg_is_in_recovery()); ns/op of the two runs gives the cost of
// routing per transaction. Run: go test -run '^$' -bench ReadOnly ./router/
func BenchmarkReadOnlyTransactions(b *testing.B) {
	primary, replica := startReplicated(b)
	for _, tc := range []struct {
		name     string
		replicas bool
	}{{"routed to replicas", true}, {"primary only", false}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := replicaConfig(b, primary, replica, nil)
			if !tc.replicas {
				db := cfg.Databases["app"]
				db.Replicas, db.ReadOnlyAlias = nil, ""
				cfg.Databases["app"] = db
			}
			f := ferrytest.Start(b, cfg)
			ctx := context.Background()
			conn := ferrytest.Connect(b, ctx, f.AppDSN())
			// Let the lag monitor put the replica in rotation first.
			for i := 0; tc.replicas && i < 200; i++ {
				var rec bool
				tx, _ := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
				tx.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&rec)
				tx.Commit(ctx)
				if rec {
					break
				}
			}
			served := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
				if err != nil {
					b.Fatal(err)
				}
				var onReplica bool
				if err := tx.QueryRow(ctx, "select pg_is_in_recovery()", pgx.QueryExecModeSimpleProtocol).Scan(&onReplica); err != nil {
					b.Fatal(err)
				}
				if onReplica {
					served++
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(served)/float64(b.N), "replica_share")
		})
	}
}
