package router_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// PREPARE TRANSACTION ends its transaction and leaves the session nothing
// (the prepared transaction is the cluster's, for any session to commit),
// so in transaction mode it pins nobody: with pinning off it runs, and the
// server goes back to the pool for the next client, which commits it.
// classify read it as a SQL PREPARE, a pin (refused with pinning off, and
// with it on the client kept its server for good).
func TestAPrepareTransactionPinsNobodyAndAnotherClientCommitsIt(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	pg, err := pgtest.Start(pgtest.Options{Conf: map[string]string{"max_prepared_transactions": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	direct := ferrytest.Connect(t, ctx, pg.DSN(pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword))
	if _, err := direct.Exec(ctx, "create table prepared_rows (x int)"); err != nil {
		t.Fatal(err)
	}
	for _, pin := range []bool{false, true} {
		cfg := ferrytest.Config(t, pg)
		cfg.PinOnSessionState = pin
		e := cfg.Databases["app"]
		e.PoolSize = 1
		cfg.Databases["app"] = e
		f := ferrytest.Start(t, cfg)
		first := ferrytest.Connect(t, ctx, f.AppDSN())
		for _, sql := range []string{"begin", "insert into prepared_rows values (1)", "prepare transaction 'pin_test'"} {
			if _, err := first.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatalf("pinning %v: %s: %v", pin, sql, err)
			}
		}
		// The pool's one server is free unless the first client pinned it.
		second := ferrytest.Connect(t, ctx, f.AppDSN())
		if _, err := second.Exec(ctx, "commit prepared 'pin_test'", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("pinning %v: commit prepared by another client: %v", pin, err)
		}
		var n int
		if err := first.QueryRow(ctx, "select count(*) from prepared_rows").Scan(&n); err != nil || n != 1 {
			t.Fatalf("pinning %v: %d rows, %v; want the committed one", pin, n, err)
		}
		if _, err := first.Exec(ctx, "delete from prepared_rows"); err != nil {
			t.Fatal(err)
		}
	}
}
