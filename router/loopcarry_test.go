package router_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client of the relay loop queued for a server and killed there counts
// as one request that waited and gave up (SHOW STATS' assignments and
// pgferry_pool_acquires_total, and its wait), as a goroutine's queued
// client killed in its wait does: the loop hands it to its goroutine,
// which ends it without asking the pool again.
func TestAQueuedClientOfTheLoopKilledThereCountsAsOneRequestThatWaited(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-killed-queued"
	holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	victim := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	allIntoTheLoop(t, ctx, f, holder, victim)
	for _, sql := range []string{"begin", "select 1"} {
		if _, err := holder.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	before := f.Pool(t, "app").Stat
	admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	row := mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app)
	if row == nil {
		t.Fatal("the victim is not in SHOW CLIENTS")
	}

	got := make(chan error, 1)
	go func() {
		_, err := victim.Exec(ctx, "select 2").ReadAll()
		got <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the victim queued for the server", func() (bool, error) {
		return f.Pool(t, "app").Stat.Waiting == 1, nil
	})
	mustAdmin(t, admin, "KILL_CLIENT "+row["ptr"])
	if err := <-got; err == nil {
		t.Fatal("the killed client's query ran")
	}
	ferrytest.Eventually(t, 10*time.Second, "the victim gone from SHOW CLIENTS and the queue", func() (bool, error) {
		return mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app) == nil && f.Pool(t, "app").Stat.Waiting == 0, nil
	})
	st := f.Pool(t, "app").Stat
	if n := st.AcquireCount - before.AcquireCount; n != 1 {
		t.Fatalf("%d requests counted for the killed client's one", n)
	}
	if n := st.WaitCount - before.WaitCount; n != 1 {
		t.Fatalf("%d waits counted for the killed client's one", n)
	}
	if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
		t.Fatal(err)
	}
}

// A client of the relay loop queued for a server whose login then fails
// gets the server's own error, as a goroutine's queued client does, and
// its request counts once: the failure ends its wait, not a second
// request (which found the failure cached, and told the client that
// instead).
func TestAQueuedClientOfTheLoopWhoseServerLoginFailsGetsTheServersError(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, name := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-queued-login-fails"
	holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	victim := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	allIntoTheLoop(t, ctx, f, holder, victim)
	for _, sql := range []string{"begin", "select 1"} {
		if _, err := holder.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	before := f.Pool(t, "app").Stat
	got := make(chan error, 1)
	go func() {
		_, err := victim.Exec(ctx, "select 2").ReadAll()
		got <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the victim queued for the server", func() (bool, error) {
		return f.Pool(t, "app").Stat.Waiting == 1, nil
	})
	// The next login to the database fails (55000), and the holder's
	// server goes: the pool dials for the victim.
	if err := cluster.Exec(ctx, "alter database "+name+" allow_connections false; select pg_terminate_backend(pid) from pg_stat_activity where datname = '"+name+"'"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "select 3").ReadAll(); err == nil {
		t.Fatal("the holder's query ran on a server that was terminated")
	}
	err := <-got
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55000" {
		t.Fatalf("the queued client got %v; want the server's 55000", err)
	}
	if n := f.Pool(t, "app").Stat.AcquireCount - before.AcquireCount; n != 1 {
		t.Fatalf("%d requests counted for the queued client's one", n)
	}
}
