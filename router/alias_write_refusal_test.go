package router_test

// A readonly_alias session reads only, on the primary too: pgferry refuses
// every statement by which it could ask for a transaction that writes.

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestAReadOnlyAliasSessionIsRefusedEveryStatementThatWouldLetItWriteOnThePrimary(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const insert = "insert into alias_refusals values (1)"
	tests := []struct {
		name       string
		before     []string // run first, and run well
		refused    string   // refused with 25006; the insert after it fails too
		simpleOnly bool     // a query of several statements
	}{
		{name: "BEGIN READ WRITE", refused: "begin read write"},
		{name: "START TRANSACTION READ WRITE", refused: "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE"},
		{name: "SET TRANSACTION READ WRITE", before: []string{"begin"}, refused: "set transaction read write"},
		{name: "SET SESSION CHARACTERISTICS", refused: "set session characteristics as transaction read write"},
		{name: "SET default_transaction_read_only", refused: "set default_transaction_read_only = off"},
		{name: "SET default_transaction_read_only in the query of the write", refused: "set default_transaction_read_only = off; commit; " + insert, simpleOnly: true},
		{name: "SET transaction_read_only", before: []string{"begin"}, refused: "set transaction_read_only = off"},
		{name: "RESET default_transaction_read_only", refused: "reset default_transaction_read_only"},
		{name: "RESET ALL in the query of the write", refused: "reset all; commit; " + insert, simpleOnly: true},
		{name: "RESET ALL", refused: "reset all"},
		{name: "DISCARD ALL", refused: "discard all"},
		{name: "set_config", refused: "select set_config('default_transaction_read_only', 'off', false)"},
	}
	for _, poolMode := range []string{"transaction", "session"} {
		cfg := ferrytest.Config(t, cluster)
		cfg.PoolMode = poolMode
		db := cfg.Databases["app"]
		db.ReadOnlyAlias = "app_ro" // no replica: the alias's transactions run on the primary
		cfg.Databases["app"] = db
		f := ferrytest.Start(t, cfg)
		setup := ferrytest.Connect(t, ctx, f.AppDSN())
		if _, err := setup.Exec(ctx, "create table if not exists alias_refusals (x int)"); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			for _, tc := range tests {
				if tc.simpleOnly && mode != pgx.QueryExecModeSimpleProtocol {
					continue
				}
				t.Run(poolMode+"/"+mode.String()+"/"+tc.name, func(t *testing.T) {
					alias := ferrytest.Connect(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
					for _, sql := range tc.before {
						if _, err := alias.Exec(ctx, sql, mode); err != nil {
							t.Fatalf("%s: %v", sql, err)
						}
					}
					_, err := alias.Exec(ctx, tc.refused, mode)
					if code, _, _ := pgCode(err); code != "25006" {
						t.Errorf("%s: %v; want SQLSTATE 25006", tc.refused, err)
					}
					if _, err := alias.Exec(ctx, insert, mode); err == nil {
						t.Errorf("after %s the alias session wrote on the primary", tc.refused)
					}
					alias.Exec(ctx, "rollback", mode)
					if _, err := alias.Exec(ctx, insert, mode); err == nil {
						t.Errorf("after %s and a rollback the alias session wrote on the primary", tc.refused)
					}
					var n int
					if err := setup.QueryRow(ctx, "select count(*) from alias_refusals").Scan(&n); err != nil || n != 0 {
						t.Fatalf("rows the alias session wrote: %d, %v; want none", n, err)
					}
				})
			}
		}
	}
}
