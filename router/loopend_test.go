package router_test

// How a session in the relay loop is interrupted or ended: its client
// leaves or cancels while the loop waits for an answer, its server is
// terminated, pgferry shuts down, a reload turns the loop off, the admin
// console KILLs it, its client drops the connection. The shared helpers
// are in loop_test.go; the same for TLS clients is in looptls_end_test.go.

import (
	"context"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
)

func TestAClientThatLeavesWhileTheLoopWaitsForItsAnswerHasItsQueryCancelled(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 1)
	withServerSSLMode(cfg, "disable")
	f := ferrytest.Start(t, cfg)

	pc := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	for i := 0; i < 3; i++ {
		if _, err := pc.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := loopCounters(t, f); entries != 1 {
		t.Fatalf("the client entered the relay loop %d times; want once", entries)
	}
	c := hijack(t, pc)
	sendRaw(t, c, protocol.AppendQuery(nil, "select pg_sleep(60)"))
	waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)'")
	c.Close()

	// The loop watches the client while the server works: the query is
	// cancelled long before it would end, and the server goes back.
	ferrytest.Eventually(t, 20*time.Second, "the abandoned query to be cancelled and the server to go back", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Counters.AbandonedCancels == 1 && f.Server.Snapshot().Clients == 0 && p.Stat.Active == 0, nil
	})
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := conn.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("the pool's one server after: %d, %v", n, err)
	}
}

func TestACancelRequestStopsAQueryTheLoopWaitsForAndTheSessionGoesOn(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	for i := 0; i < 3; i++ {
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := loopCounters(t, f); entries != 1 {
		t.Fatalf("the client entered the relay loop %d times; want once", entries)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "select pg_sleep(60)")
		errc <- err
	}()
	waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)'")
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := pgCode(<-errc); code != "57014" {
		t.Fatalf("the cancelled query's error has SQLSTATE %q, want 57014", code)
	}
	for i := 0; i < 5; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d after the cancel: %d, %v", i, n, err)
		}
	}
	// The server is not held by the idle client once the cancel is done.
	ferrytest.Eventually(t, 10*time.Second, "the server to go back to the pool", func() (bool, error) {
		return f.Pool(t, "app").Stat.Active == 0, nil
	})
}

func TestShutdownEndsSessionsInTheLoopAndLetsATransactionFinish(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	idle := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, idle, 1)
	busy := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, busy, 2)
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}

	cut := make(chan int, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cut <- f.Server.Shutdown(sctx)
	}()
	// The open transaction still runs and commits; then both sessions end
	// without being cut.
	var n int
	if err := tx.QueryRow(ctx, "select 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("inside the open transaction during shutdown: %d, %v", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during shutdown: %v", err)
	}
	if c := <-cut; c != 0 {
		t.Fatalf("Shutdown cut %d sessions, want 0", c)
	}
	if _, err := idle.Exec(ctx, "select 1"); err == nil {
		t.Fatal("the idle client's query after shutdown succeeded")
	}
}

func TestAServerTerminatedWhileTheLoopWaitsForItGivesAnErrorAndTheSessionGoesOn(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	withServerSSLMode(cfg, "disable")
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, conn, 1)

	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "select pg_sleep(60)")
		errc <- err
	}()
	waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)'")
	if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'select pg_sleep(60)'", db); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Fatal("the query whose server was terminated succeeded")
	}
	var n int
	if err := conn.QueryRow(ctx, "select 9").Scan(&n); err != nil || n != 9 {
		t.Fatalf("the next query: %d, %v", n, err)
	}
	ferrytest.Eventually(t, 10*time.Second, "the lost server to be counted and nothing lent", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Active == 0 && p.Stat.Destroyed >= 1, nil
	})
}

func TestAReloadThatTurnsTheLoopOffSendsItsSessionsBackToGoroutines(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, conn, 1)
	entriesBefore, before := loopCounters(t, f)

	next := *cfg
	next.RelayLoop = false
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	// The session's first request may still find its old pool entry as
	// the loop hands it back (counted there: the CI saw 19 of 20 on the
	// new pool once); from the next one, the new pool serves it.
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d after the reload: %d, %v", i, n, err)
		}
	}
	// The reload rebuilt the pools (their servers change kind); the new
	// pool's counters go on from the old one's. The session, served by the
	// new pool now, never entered the loop again. (The hand-back at the
	// reload counts if the old pool counted it before the reload took its
	// counters over.)
	entries, handbacks := loopCounters(t, f)
	if entries != entriesBefore || handbacks > before+1 || before != 0 {
		t.Fatalf("after the reload: %d entries (%d before), %d handbacks (%d before); want the session kept out of the loop", entries, entriesBefore, handbacks, before)
	}
	if p := f.Pool(t, "app"); p.Counters.Queries < 20 {
		t.Fatalf("the new pool served %d queries; want the session's 20 moved to it", p.Counters.Queries)
	}
}

func TestTheAdminConsolesKillEndsASessionInTheLoop(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	app := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, app, 1)
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	mustAdmin(t, pc, "KILL app")
	ferrytest.Eventually(t, 10*time.Second, "the killed client to go", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW CLIENTS").row("user", "app") == nil, nil
	})
	if _, err := app.Exec(ctx, "select 1"); err == nil {
		t.Fatal("the killed client still runs queries")
	}
}

func TestAClientOfTheLoopThatDropsItsConnectionIsEndedByTheLoop(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, conn, 1)
	// No Terminate: the socket just closes, as when a function's sandbox
	// is torn down.
	theLoopEnds(t, f, "a client of the loop that dropped its connection", conn.PgConn().Conn().Close)
	// Its server is back in the pool, clean: another client uses it.
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := other.QueryRow(ctx, "select 4").Scan(&n); err != nil || n != 4 {
		t.Fatalf("the next client: %d, %v", n, err)
	}
}
