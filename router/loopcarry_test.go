package router_test

import (
	"context"
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
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	const app = "pgferry-killed-queued"
	q := startLoopQueue(t, app)
	ctx, f, holder := q.ctx, q.f, q.holder
	before := f.Pool(t, "app").Stat
	admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	row := mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app)
	if row == nil {
		t.Fatal("the victim is not in SHOW CLIENTS")
	}

	got := q.queueVictim(t)
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
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	q := startLoopQueue(t, "pgferry-queued-login-fails")
	ctx, f, holder, name := q.ctx, q.f, q.holder, q.db
	before := f.Pool(t, "app").Stat
	got := q.queueVictim(t)
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

// loopQueue is a pgferry with the relay loop on and one server connection
// for "app" in a database of the test's own (db), which holder, a client
// of the loop, keeps in a transaction; victim, another client of the loop
// (application_name app), has yet to ask for it.
type loopQueue struct {
	ctx            context.Context
	f              *ferrytest.Ferry
	db             string
	holder, victim *pgconn.PgConn
}

// startLoopQueue starts a loopQueue whose victim has application_name app.
func startLoopQueue(t *testing.T, app string) *loopQueue {
	t.Helper()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	q := &loopQueue{ctx: ctx, f: f, db: db,
		holder: ferrytest.ConnectPgConn(t, ctx, f.AppDSN()),
		victim: ferrytest.ConnectPgConn(t, ctx, withApp(f, app)),
	}
	allIntoTheLoop(t, ctx, f, q.holder, q.victim)
	for _, sql := range []string{"begin", "select 1"} {
		if _, err := q.holder.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	return q
}

// queueVictim has the victim send a query, which queues for the server the
// holder keeps, and returns once it waits there; the query's error comes
// on the channel returned when it ends.
func (q *loopQueue) queueVictim(t *testing.T) <-chan error {
	t.Helper()
	got := make(chan error, 1)
	go func() {
		_, err := q.victim.Exec(q.ctx, "select 2").ReadAll()
		got <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the victim queued for the server", func() (bool, error) {
		return q.f.Pool(t, "app").Stat.Waiting == 1, nil
	})
	return got
}
