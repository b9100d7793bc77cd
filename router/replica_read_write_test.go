package router_test

// A transaction that asks to write, in a session that reads by default.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestAReadWriteTransactionOfAReadOnlySessionRunsOnThePrimary: with
// default_transaction_read_only = on a client may still open a transaction
// with BEGIN READ WRITE (or START TRANSACTION READ WRITE) and write: that
// transaction is not a read, and a replica would refuse it.
func TestAReadWriteTransactionOfAReadOnlySessionRunsOnThePrimary(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, nil))
	ctx := testContext(t)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table ro_session_writes (x int)"); err != nil {
		t.Fatal(err)
	}
	c := ferrytest.Connect(t, ctx, f.AppDSN()+" default_transaction_read_only=on")
	ferrytest.Eventually(t, 20*time.Second, "the read-only session's reads to use the replica", func() (bool, error) {
		var port int
		err := c.QueryRow(ctx, "select inet_server_port()", pgx.QueryExecModeSimpleProtocol).Scan(&port)
		return port == replica.Port, err
	})
	for _, begin := range []string{"begin read write", "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE", "begin transaction read write;"} {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tx.Rollback(ctx) // (pgx's own BEGIN; the test's is sent below)
		if _, err := c.Exec(ctx, begin, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", begin, err)
		}
		var port int
		err = c.QueryRow(ctx, "insert into ro_session_writes values (1) returning inet_server_port()", pgx.QueryExecModeSimpleProtocol).Scan(&port)
		if err != nil || port != primary.Port {
			c.Exec(ctx, "rollback")
			t.Fatalf("a write after %q: port %d, %v; want the primary %d and no error", begin, port, err, primary.Port)
		}
		if _, err := c.Exec(ctx, "commit"); err != nil {
			t.Fatal(err)
		}
	}
}
