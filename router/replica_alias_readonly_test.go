package router_test

// A readonly_alias session reads only, wherever its transactions run:
// with no replica in rotation and replica_fallback = "primary" they run on
// the primary, which must refuse its writes as a replica would.

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestAReadOnlyAliasSessionCannotWriteOnThePrimaryAndLeavesNoOtherClientReadOnly(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, func(db *configs.Database) {
		db.PoolSize = 1 // one server connection: the alias's and the next client's
	}))
	ctx := testContext(t)
	setup := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := setup.Exec(ctx, "create table alias_writes (x int)"); err != nil {
		t.Fatal(err)
	}
	// The replica leaves rotation: it stops replaying while the primary
	// writes more than max_replica_lag_bytes.
	if err := replica.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	defer replica.Exec(context.Background(), "select pg_wal_replay_resume()")
	if _, err := setup.Exec(ctx, "create table alias_lag as select g from generate_series(1, 200000) g"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx) // (its server is the pool's one)
	alias := ferrytest.Connect(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
	ferrytest.Eventually(t, 20*time.Second, "the alias session's reads to run on the primary", func() (bool, error) {
		var inRecovery bool
		err := alias.QueryRow(ctx, "select pg_is_in_recovery()", pgx.QueryExecModeSimpleProtocol).Scan(&inRecovery)
		return !inRecovery, err
	})
	show := func(t *testing.T, c *pgx.Conn) string {
		t.Helper()
		var v string
		if err := c.QueryRow(ctx, "show default_transaction_read_only", pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	aliasWriteRefused := func(t *testing.T, after string) {
		t.Helper()
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			_, err := alias.Exec(ctx, "insert into alias_writes values (1)", mode)
			if code, _, _ := pgCode(err); code != "25006" {
				t.Fatalf("%s: the alias session's write on the primary (%v): %v; want SQLSTATE 25006", after, mode, err)
			}
		}
		if v := show(t, alias); v != "on" {
			t.Fatalf("%s: the alias session's SHOW default_transaction_read_only: %s, want on", after, v)
		}
	}
	if v := alias.PgConn().ParameterStatus("default_transaction_read_only"); v != "on" {
		t.Errorf("the alias session was greeted with default_transaction_read_only = %q, want on", v)
	}
	aliasWriteRefused(t, "at first")
	for _, reset := range []string{"reset default_transaction_read_only", "set default_transaction_read_only = off", "reset all"} {
		_, err := alias.Exec(ctx, reset, pgx.QueryExecModeSimpleProtocol)
		if code, _, _ := pgCode(err); code != "25006" {
			t.Fatalf("%s in the alias session: %v; want SQLSTATE 25006", reset, err) // (alias_write_refusal_test.go)
		}
		aliasWriteRefused(t, "after "+reset)
	}

	// The next client on the pool's one server connection writes.
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	if v := show(t, c); v != "off" {
		t.Errorf("another client after the alias session: default_transaction_read_only = %s, want off", v)
	}
	var port int
	if err := c.QueryRow(ctx, "insert into alias_writes values (2) returning inet_server_port()").Scan(&port); err != nil || port != primary.Port {
		t.Fatalf("another client's write after the alias session: port %d, %v; want the primary %d and no error", port, err, primary.Port)
	}
}
