package router_test

// A transaction-mode client whose statement would pin it to its server
// connection while that server is a read replica: pinned there, every
// later transaction of the client would run on the replica, and its
// writes fail with 25006.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestAStatementThatWouldPinAClientToAReplicaIsRefusedAndItsWritesStillRunOnThePrimary(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, nil))
	ctx := testContext(t)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table pin_writes (x int)"); err != nil {
		t.Fatal(err)
	}
	reader := ferrytest.Connect(t, ctx, f.AppDSN())
	ferrytest.Eventually(t, 20*time.Second, "a read-only transaction to run on the replica", func() (bool, error) {
		return whereReadOnlyRuns(ctx, t, reader) == replica.Port, nil
	})
	writesOnThePrimary := func(t *testing.T, c *pgx.Conn) {
		t.Helper()
		var port int
		err := c.QueryRow(ctx, "insert into pin_writes values (1) returning inet_server_port()", pgx.QueryExecModeSimpleProtocol).Scan(&port)
		if err != nil || port != primary.Port {
			t.Fatalf("the next write: port %d, %v; want the primary %d and no error", port, err, primary.Port)
		}
	}
	// lockHeld reports whether a session of the server at port holds
	// advisory lock 7 (pgferry's sessions log in as ferrytest.User).
	lockHeld := func(t *testing.T, port int) bool {
		t.Helper()
		c := primary
		if port == replica.Port {
			c = replica
		}
		n, err := c.QueryInt(ctx, "select count(*) from pg_locks where locktype = 'advisory' and objid = 7 and granted")
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run("an advisory lock inside a READ ONLY transaction on the replica, "+mode.String(), func(t *testing.T) {
			c := ferrytest.Connect(t, ctx, f.AppDSN())
			var tx pgx.Tx
			ferrytest.Eventually(t, 20*time.Second, "a READ ONLY transaction on the replica", func() (bool, error) {
				var err error
				if tx, err = c.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}); err != nil {
					return false, err
				}
				var port int
				if err := tx.QueryRow(ctx, "select inet_server_port()", pgx.QueryExecModeSimpleProtocol).Scan(&port); err != nil || port != replica.Port {
					tx.Rollback(ctx)
					return false, err
				}
				return true, nil
			})
			_, err := tx.Exec(ctx, "select pg_advisory_lock(7)", mode)
			pe := expectPgError(t, err, "0A000")
			if pe.Severity != "ERROR" {
				t.Errorf("severity %s, want ERROR", pe.Severity)
			}
			t.Logf("the client is told: %s", pe.Message)
			tx.Rollback(ctx)
			if lockHeld(t, replica.Port) {
				t.Error("the refused lock is held on the replica")
			}
			writesOnThePrimary(t, c)
		})
	}

	t.Run("an advisory lock in a READ ONLY transaction sent as one query", func(t *testing.T) {
		// Nothing is linked when pgferry reads it: the client is pinned
		// before its server is chosen, and gets the primary, where the
		// transaction is read-only all the same.
		c := ferrytest.Connect(t, ctx, f.AppDSN())
		if _, err := c.Exec(ctx, "begin read only; select pg_advisory_lock(7); commit", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		if !lockHeld(t, primary.Port) {
			t.Error("the lock is not held on the primary")
		}
		writesOnThePrimary(t, c)
		var unlocked bool
		if err := c.QueryRow(ctx, "select pg_advisory_unlock(7)", pgx.QueryExecModeSimpleProtocol).Scan(&unlocked); err != nil || !unlocked {
			t.Fatalf("the pinned client's unlock: %v, %v; want true: its lock is on its own server", unlocked, err)
		}
	})

	t.Run("a readonly_alias session may pin on the replica", func(t *testing.T) {
		c := ferrytest.Connect(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
		ferrytest.Eventually(t, 20*time.Second, "the alias session to lock on the replica", func() (bool, error) {
			var port int
			err := c.QueryRow(ctx, "select inet_server_port() from (select pg_advisory_lock(7)) l", pgx.QueryExecModeSimpleProtocol).Scan(&port)
			return port == replica.Port, err
		})
		var unlocked bool
		if err := c.QueryRow(ctx, "select pg_advisory_unlock(7)", pgx.QueryExecModeSimpleProtocol).Scan(&unlocked); err != nil || !unlocked {
			t.Fatalf("the alias session's unlock: %v, %v; want true: pinned to the replica that holds its lock", unlocked, err)
		}
	})
}
