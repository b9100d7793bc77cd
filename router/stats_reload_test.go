package router_test

import (
	"maps"
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

// A reload that rebuilds a pool (its pool_size changed) keeps the pool's
// cumulative counters: SHOW STATS and the metrics' counters go on from
// where they were instead of starting again from 0.
func TestAPoolRebuiltByAReloadKeepsItsCounters(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	for range 3 {
		if _, err := c.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	before := appPool(t, f.Server.Snapshot())

	next := *f.Server.Config()
	next.Databases = maps.Clone(next.Databases)
	db := next.Databases["app"]
	db.PoolSize = 7
	next.Databases["app"] = db
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	// The session's next transaction, and a new client, use the new pool.
	if _, err := c.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ferrytest.Connect(t, ctx, f.AppDSN()).Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	after := appPool(t, f.Server.Snapshot())
	if after.Size != 7 {
		t.Fatalf("pool_size %d after the reload, want 7: the pool was not rebuilt", after.Size)
	}
	for _, n := range []struct {
		name          string
		before, after uint64
	}{
		{"transactions", before.Counters.Transactions, after.Counters.Transactions},
		{"queries", before.Counters.Queries, after.Counters.Queries},
		{"client logins", before.Counters.ClientLogins, after.Counters.ClientLogins},
		{"bytes received", before.Counters.BytesReceived, after.Counters.BytesReceived},
		{"acquires", before.Stat.AcquireCount, after.Stat.AcquireCount},
		{"dials", before.Stat.DialCount, after.Stat.DialCount},
	} {
		if n.after < n.before {
			t.Errorf("%s went back from %d to %d across the reload", n.name, n.before, n.after)
		}
	}
	if after.Counters.Transactions <= before.Counters.Transactions {
		t.Errorf("transactions %d after one more, %d before", after.Counters.Transactions, before.Counters.Transactions)
	}
}

func appPool(t *testing.T, snap router.Snapshot) router.PoolSnapshot {
	t.Helper()
	for _, p := range snap.Pools {
		if p.Database == "app" && p.User == ferrytest.User {
			return p
		}
	}
	t.Fatal("no pool for app")
	return router.PoolSnapshot{}
}
