package router_test

// In session mode a client keeps the server of its first transaction for
// its life: where that transaction is routed decides where all its
// transactions run.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestASessionModeClientWritesOnThePrimaryAfterAReadOnlyFirstTransaction:
// in session mode a client keeps the server of its first transaction for
// its life, so that transaction being a read must not tie the client to a
// replica: its later writes would fail there with 25006.
func TestASessionModeClientWritesOnThePrimaryAfterAReadOnlyFirstTransaction(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	cfg := replicaConfig(t, primary, replica, func(db *configs.Database) {
		db.PoolMode = "session"
		db.RouteReadStatements = true
	})
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table session_mode_writes (x int)"); err != nil {
		t.Fatal(err)
	}
	// The replica in rotation, as an alias session (which reads there for
	// its whole life) sees it.
	ferrytest.Eventually(t, 20*time.Second, "the replica in rotation", func() (bool, error) {
		c := ferrytest.Connect(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
		defer c.Close(ctx)
		var in bool
		err := c.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&in)
		return in, err
	})

	tests := []struct {
		name  string
		first func(*pgx.Conn) error
	}{
		{name: "a plain read first", first: func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, "select 1", pgx.QueryExecModeSimpleProtocol)
			return err
		}},
		{name: "a READ ONLY transaction first", first: func(c *pgx.Conn) error {
			tx, err := c.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "select 1"); err != nil {
				return err
			}
			return tx.Commit(ctx)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ferrytest.Connect(t, ctx, f.AppDSN())
			if err := tc.first(c); err != nil {
				t.Fatal(err)
			}
			var port int
			err := c.QueryRow(ctx, "insert into session_mode_writes values (1) returning inet_server_port()").Scan(&port)
			if err != nil || port != primary.Port {
				t.Fatalf("the write after %s: port %d, %v; want the primary %d and no error", tc.name, port, err, primary.Port)
			}
		})
	}
}
