package router_test

// replica_fallback = "error": a read with no replica in rotation is
// refused with an ERROR (08006), and the session goes on, in either
// protocol.

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestAReadRefusedForWantOfAReplicaIsAnErrorTheSessionOutlivesInTheExtendedProtocol(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, func(db *configs.Database) {
		db.ReplicaFallback = "error"
		db.RouteReadStatements = true
	}))
	ctx := testContext(t)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table refused_reads (x int)"); err != nil {
		t.Fatal(err)
	}
	// The replica leaves rotation: it stops replaying while the primary
	// writes more than max_replica_lag_bytes.
	if err := replica.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	defer replica.Exec(context.Background(), "select pg_wal_replay_resume()")
	if _, err := setup.Exec(ctx, "create table refused_lag as select g from generate_series(1, 200000) g"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "reads to be refused", func() (bool, error) {
		c := ferrytest.Connect(t, ctx, f.AppDSN())
		defer c.Close(ctx)
		_, err := c.Exec(ctx, "select 1", pgx.QueryExecModeSimpleProtocol)
		code, _, _ := pgCode(err)
		return code == "08006", nil
	})

	t.Run("pgx", func(t *testing.T) {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec} {
			c := ferrytest.Connect(t, ctx, f.AppDSN())
			for range 2 {
				var n int
				err := c.QueryRow(ctx, "select $1::int", mode, 1).Scan(&n)
				if pe := expectPgError(t, err, "08006"); pe.Severity != "ERROR" {
					t.Errorf("%v: severity %s, want ERROR", mode, pe.Severity)
				}
			}
			var port int
			err := c.QueryRow(ctx, "insert into refused_reads values ($1) returning inet_server_port()", mode, 1).Scan(&port)
			if err != nil || port != primary.Port {
				t.Fatalf("%v: a write after the refused reads: port %d, %v; want the primary %d and no error", mode, port, err, primary.Port)
			}
		}
	})

	t.Run("a raw pipeline", func(t *testing.T) {
		// A read-only session: every request is a read, pipelined or not.
		c := newRawClient(t, f.AppDSN()+" default_transaction_read_only=on")
		// The error comes at once, before the client's Sync; what the
		// client sends up to its Sync is skipped, and the Sync answered.
		c.send(parse("", "select 1"), bind(""), &pgproto3.Describe{ObjectType: 'P'}, execMsg(), &pgproto3.Flush{})
		if got := c.transcript(func(w string) bool { return w[0] != 'E' }); got != "E:08006" {
			t.Fatalf("a refused read before its Sync: %s, want E:08006", got)
		}
		c.send(parse("s2", "select 2"), bind("s2"), execMsg(), &pgproto3.Query{String: "select 3"}, syncMsg())
		if got := c.until(1); got != "Z" {
			t.Fatalf("the rest of the refused pipeline: %s, want Z alone", got)
		}
		// The next pipeline is refused on its own, and a simple Query too.
		c.send(parse("", "select 1"), bind(""), execMsg(), syncMsg(), &pgproto3.Query{String: "select 1"})
		if got := c.until(2); got != "E:08006 Z E:08006 Z" {
			t.Fatalf("a refused pipeline and a refused query: %s, want E:08006 Z E:08006 Z", got)
		}
		// The replica back in rotation, the same session reads there.
		if err := replica.Exec(ctx, "select pg_wal_replay_resume()"); err != nil {
			t.Fatal(err)
		}
		ferrytest.Eventually(t, 20*time.Second, "the session to read on the replica", func() (bool, error) {
			c.send(parse("", "select inet_server_port()"), bind(""), execMsg(), syncMsg())
			got := c.until(1)
			return got == "1 2 D:"+strconv.Itoa(replica.Port)+" C Z", nil
		})
	})
}
