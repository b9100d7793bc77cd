package router_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

// loopCounters reads how many sessions of database "app" went over to the
// relay loop and how many it handed back to a goroutine.
func loopCounters(t *testing.T, f *ferrytest.Ferry) (entries, handbacks uint64) {
	t.Helper()
	c := f.Pool(t, "app").Counters
	return c.LoopEntries, c.LoopHandbacks
}

// allIntoTheLoop runs queries on each client until all of them are in the
// relay loop (entries less handbacks).
func allIntoTheLoop(t *testing.T, ctx context.Context, f *ferrytest.Ferry, clients ...*pgconn.PgConn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		for _, c := range clients {
			if _, err := c.Exec(ctx, "select 1").ReadAll(); err != nil {
				t.Fatal(err)
			}
		}
		if entries, handbacks := loopCounters(t, f); entries-handbacks >= uint64(len(clients)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %d clients did not all enter the relay loop", len(clients))
		}
	}
}

// withApp is f's DSN for database app with application_name app.
func withApp(f *ferrytest.Ferry, app string) string { return f.AppDSN() + " application_name=" + app }

// skipWithoutLoop skips where the relay loop is not built (it needs Linux's
// epoll and raw socket calls).
func skipWithoutLoop(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" || !router.RelayLoopBuilt {
		t.Skip("the relay loop is not built here")
	}
}

// serverSSLModes are the two ways the relay loop reads a server: a plain
// socket with raw system calls, a TLS one through crypto/tls.
var serverSSLModes = []string{"disable", "require"}

// loopTestConfig returns a configuration with its own database (named db)
// and the relay loop on, poolSize server connections for "app" and the
// given sslmode to reach it.
func loopTestConfig(t *testing.T, sslMode string, poolSize int) (cfg *configs.Config, db string) {
	t.Helper()
	cfg, db = configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", poolSize)
	withServerSSLMode(cfg, sslMode)
	return cfg, db
}

// withServerSSLMode sets the sslmode pgferry uses to reach the "app"
// database.
func withServerSSLMode(cfg *configs.Config, mode string) {
	db := cfg.Databases["app"]
	db.SSLMode = mode
	cfg.Databases["app"] = db
}

func TestABusyClientIsServedByTheRelayLoopInBothProtocols(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	for _, mode := range serverSSLModes {
		t.Run("server sslmode "+mode, func(t *testing.T) {
			t.Parallel()
			aBusyClientIsServedByTheRelayLoop(t, mode, false)
		})
	}
}

// aBusyClientIsServedByTheRelayLoop runs a client's queries in both
// protocols, a pipeline and a transaction, and checks that the loop served
// them all; with clientTLS the client uses TLS (1.3).
func aBusyClientIsServedByTheRelayLoop(t *testing.T, sslMode string, clientTLS bool) {
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, sslMode, 2)
	if clientTLS {
		offerClientTLS(cfg, "require")
	}
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, clientDSN(f, clientTLS))

	for i := 0; i < 100; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int + 1", pgx.QueryExecModeSimpleProtocol, i).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("simple query %d: %d, %v", i, n, err)
		}
		if err := conn.QueryRow(ctx, "select $1::int * 2", i).Scan(&n); err != nil || n != 2*i {
			t.Fatalf("extended query %d: %d, %v", i, n, err)
		}
	}
	b := &pgx.Batch{}
	for i := 0; i < 20; i++ {
		b.Queue("select $1::int", i)
	}
	br := conn.SendBatch(ctx, b)
	for i := 0; i < 20; i++ {
		var n int
		if err := br.QueryRow().Scan(&n); err != nil || n != i {
			t.Fatalf("pipelined query %d: %d, %v", i, n, err)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "select 1")
		return err
	}); err != nil {
		t.Fatal(err)
	}

	entries, handbacks := loopCounters(t, f)
	if entries != 1 || handbacks != 0 {
		t.Fatalf("the client entered the relay loop %d times and was handed back %d times; want once and never", entries, handbacks)
	}
	if p := f.Pool(t, "app"); p.Counters.PumpedLoans != 0 {
		t.Fatalf("%d loans needed a pump", p.Counters.PumpedLoans)
	}
}

func TestTheRelayLoopHandsSessionStateToTheGoroutineAndTakesTheClientBack(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	for i := 0; i < 5; i++ {
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := loopCounters(t, f); entries != 1 {
		t.Fatalf("the client entered the relay loop %d times before the SET; want once", entries)
	}

	// A simple-protocol SET, then one prepared under a name (as
	// postgres.js sends every statement): each is the goroutine's.
	if _, err := conn.Exec(ctx, "set search_path = loop_a, public"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		var path string
		if err := conn.QueryRow(ctx, "select current_setting('search_path')").Scan(&path); err != nil || path != "loop_a, public" {
			t.Fatalf("search_path after the simple SET: %q, %v", path, err)
		}
	}
	if _, err := conn.Prepare(ctx, "set_b", "set search_path = loop_b, public"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "set_b"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		var path string
		if err := conn.QueryRow(ctx, "select current_setting('search_path')", pgx.QueryExecModeSimpleProtocol).Scan(&path); err != nil || path != "loop_b, public" {
			t.Fatalf("search_path after the prepared SET: %q, %v", path, err)
		}
	}

	// The client holds a statement that changes session state: it stays
	// on its goroutine until it closes it.
	entries, handbacks := loopCounters(t, f)
	if entries != 2 || handbacks != 2 {
		t.Fatalf("entries %d, handbacks %d: want the client back in the loop after the simple SET only", entries, handbacks)
	}
	if err := conn.Deallocate(ctx, "set_b"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		var path string
		if err := conn.QueryRow(ctx, "select current_setting('search_path') || $1::text", "").Scan(&path); err != nil || path != "loop_b, public" {
			t.Fatalf("search_path after the statement was closed: %q, %v", path, err)
		}
	}
	if entries, _ := loopCounters(t, f); entries != 3 {
		t.Fatalf("entries %d: want the client back in the loop once its SET statement is closed", entries)
	}
}

func TestTheRelayLoopWaitsForASlowClientWithoutHoldingUpOthers(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	for _, mode := range serverSSLModes {
		t.Run("server sslmode "+mode, func(t *testing.T) {
			t.Parallel()
			theRelayLoopWaitsForASlowClient(t, mode, false)
		})
	}
}

// theRelayLoopWaitsForASlowClient has a client stall in the middle of a
// large result while another is served; with clientTLS both use TLS
// (1.3), whose records the socket then takes in part.
func theRelayLoopWaitsForASlowClient(t *testing.T, sslMode string, clientTLS bool) {
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	setPoolSize(cfg, "app", 3)
	withServerSSLMode(cfg, sslMode)
	if clientTLS {
		offerClientTLS(cfg, "require")
	}
	f := ferrytest.Start(t, cfg)
	slow := ferrytest.Connect(t, ctx, clientDSN(f, clientTLS))
	other := ferrytest.Connect(t, ctx, clientDSN(f, clientTLS))
	// Until both are in the loop (each reads its first requests on its
	// goroutine).
	for i := 0; ; i++ {
		entries, handbacks := loopCounters(t, f)
		if entries-handbacks == 2 {
			break
		}
		if i == 1000 {
			t.Fatalf("after %d queries each, %d entries and %d handbacks: the clients are not both in the loop", i, entries, handbacks)
		}
		for _, c := range []*pgx.Conn{slow, other} {
			if _, err := c.Exec(ctx, "select 1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	pumpedBefore := f.Pool(t, "app").Counters.PumpedLoans

	// 40 MB of rows of 1 KB (each smaller than a read buffer, so the loop
	// relays them): the slow client reads one row and stops until the
	// other client is done, so the client's socket fills up.
	rows, err := slow.Query(ctx, "select repeat('x', 1000) from generate_series(1, 40000)", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatalf("no first row: %v", rows.Err())
	}
	for i := 0; i < 50; i++ {
		var n int
		if err := other.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("the other client's query %d while the slow one stalled: %d, %v", i, n, err)
		}
	}
	n := 1
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil || len(s) != 1000 {
			t.Fatalf("row %d: %d bytes, %v", n, len(s), err)
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 40000 {
		t.Fatalf("the slow client got %d rows, %v; want 40000", n, err)
	}
	var one int
	if err := slow.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("the slow client after its result: %d, %v", one, err)
	}
	// The loop waited for room itself: had it handed the slow client back
	// mid-result, a pump would have relayed the rest. (The other client
	// may have been handed back to queue while the pool grew.)
	if p := f.Pool(t, "app"); p.Counters.PumpedLoans != pumpedBefore {
		t.Fatalf("%d loans needed a pump", p.Counters.PumpedLoans-pumpedBefore)
	}
}

func TestAFrameLargerThanTheReadBufferLeavesTheLoopAndArrivesWhole(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	for i := 0; i < 3; i++ {
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	var s string
	if err := conn.QueryRow(ctx, "select repeat('y', 100000)").Scan(&s); err != nil || s != strings.Repeat("y", 100000) {
		t.Fatalf("the large row: %d bytes, %v", len(s), err)
	}
	// And a large request: a Parse bigger than the buffer.
	big := "select '" + strings.Repeat("z", 20000) + "'::text"
	if err := conn.QueryRow(ctx, big).Scan(&s); err != nil || len(s) != 20000 {
		t.Fatalf("the large query: %d bytes, %v", len(s), err)
	}
	if _, handbacks := loopCounters(t, f); handbacks < 2 {
		t.Fatalf("handbacks %d: want the large row and the large query each on a goroutine", handbacks)
	}
	for i := 0; i < 5; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d after: %d, %v", i, n, err)
		}
	}
}

func TestAClientThatLeavesWhileTheLoopWaitsForItsAnswerHasItsQueryCancelled(t *testing.T) {
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

func TestALongPipelineWithoutSyncIsHandedToAPumpAndAnsweredInOrder(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	withServerSSLMode(cfg, "disable")
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	for i := 0; i < 3; i++ {
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	// One Sync after 200 queries: far more answers owed than the loop
	// lets pile up.
	b := &pgx.Batch{}
	for i := 0; i < 200; i++ {
		b.Queue("select $1::int, repeat('p', 200)", i)
	}
	br := conn.SendBatch(ctx, b)
	for i := 0; i < 200; i++ {
		var n int
		var s string
		if err := br.QueryRow().Scan(&n, &s); err != nil || n != i || len(s) != 200 {
			t.Fatalf("pipelined query %d: %d, %d bytes, %v", i, n, len(s), err)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if _, handbacks := loopCounters(t, f); handbacks < 1 {
		t.Fatal("the long pipeline stayed in the loop")
	}
}

func TestWithRelayLoopOffNoSessionEntersIt(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = false
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	for i := 0; i < 20; i++ {
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
	if entries, handbacks := loopCounters(t, f); entries != 0 || handbacks != 0 {
		t.Fatalf("with relay_loop off: %d entries, %d handbacks; want none", entries, handbacks)
	}
}

func TestServersAreDialedOutOfGosNetpollerOnlyWhileTheLoopCanServeTheirPool(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	f := ferrytest.Start(t, cfg)
	// Each phase has a client of its own: a client connected before a
	// reload may go on with the pool it had, and the new pool is made for
	// the first client that needs it.
	client := func(when string) (conn *pgx.Conn, detached bool) {
		t.Helper()
		conn = ferrytest.Connect(t, ctx, f.AppDSN())
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", 7).Scan(&n); err != nil || n != 7 {
			t.Fatalf("%s: a query gave %d, %v", when, n, err)
		}
		// (The loop may give the query's server back just after the answer.)
		ferrytest.Eventually(t, 10*time.Second, when+": an idle server in app's pool", func() (bool, error) {
			d, ok := router.DialsDetached(f.Server, "app", pgtest.AppUser)
			detached = d
			return ok, nil
		})
		return conn, detached
	}
	conn, detached := client("with the loop on")
	if !detached {
		t.Fatal("with the loop on and no timeout set, the pool dials its servers into Go's netpoller; want them detached for the loop")
	}
	inLoop(t, ctx, f, conn, 1)

	// query_timeout keeps every session on its goroutine, for which a
	// detached server costs system calls a socket in the netpoller does not:
	// the pool is rebuilt with servers in the netpoller.
	next := *cfg
	next.QueryTimeout = configs.Duration(time.Minute)
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	conn, detached = client("with query_timeout set")
	if detached {
		t.Fatal("with query_timeout set the loop serves no session, yet the pool dials its servers detached")
	}
	for i := range 10 { // more than a session needs to enter the loop
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatalf("query %d with query_timeout set: %v", i, err)
		}
	}
	if entries, _ := loopCounters(t, f); entries != 0 {
		t.Fatalf("with query_timeout set, %d sessions entered the loop; want none", entries)
	}

	if err := f.Server.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	conn, detached = client("with query_timeout unset again")
	if !detached {
		t.Fatal("after a reload that unsets query_timeout, the pool still dials its servers into the netpoller")
	}
	inLoop(t, ctx, f, conn, 1)
}

// inLoop runs queries on conn until the relay loop's entry count reaches
// entries (conn's session entered it), failing the test if it never does.
func inLoop(t *testing.T, ctx context.Context, f *ferrytest.Ferry, conn *pgx.Conn, entries uint64) {
	t.Helper()
	for i := 0; ; i++ {
		if n, _ := loopCounters(t, f); n >= entries {
			return
		}
		if i == 1000 {
			t.Fatal("the client never entered the relay loop")
		}
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestShutdownEndsSessionsInTheLoopAndLetsATransactionFinish(t *testing.T) {
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
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, conn, 1)
	_, before := loopCounters(t, f)

	next := *cfg
	next.RelayLoop = false
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d after the reload: %d, %v", i, n, err)
		}
	}
	// The reload rebuilt the pools (their servers change kind), so the
	// counters are the new pool's: the session, served by it now, never
	// entered the loop again.
	entries, handbacks := loopCounters(t, f)
	if entries != 0 || handbacks != 0 || before != 0 {
		t.Fatalf("after the reload: %d entries, %d handbacks (%d handbacks before); want the session kept out of the loop", entries, handbacks, before)
	}
	if p := f.Pool(t, "app"); p.Counters.Queries < 20 {
		t.Fatalf("the new pool served %d queries; want the session's 20 moved to it", p.Counters.Queries)
	}
}

func TestTheAdminConsolesKillEndsASessionInTheLoop(t *testing.T) {
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

func TestAnIdleClientOfTheLoopIsParkedAndComesBackWhenItTalks(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	inLoop(t, ctx, f, conn, 1)
	// A sweep interval or two without a request: it lets go of its
	// buffers and waits as any parked client does.
	ferrytest.Eventually(t, parkWait, "the idle client of the loop to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	// Its next query is served by the loop at once, on the descriptor it
	// parked with: no goroutine, nothing handed back.
	var n int
	if err := conn.QueryRow(ctx, "select 3", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 3 {
		t.Fatalf("the parked client's query: %d, %v", n, err)
	}
	if entries, handbacks := loopCounters(t, f); entries != 2 || handbacks != 0 {
		t.Fatalf("entries %d, handbacks %d right after the parked client's first query: want 2 and 0 (the loop served it)", entries, handbacks)
	}
	// Its Terminate ends it from the loop: nothing is handed back.
	theLoopEnds(t, f, "a client of the loop that sent Terminate", func() error { return conn.Close(ctx) })
}

// theLoopEnds runs leave, which makes the only client of f leave, waits for
// its session to end, and fails the test if the loop handed it back to a
// goroutine on the way.
func theLoopEnds(t *testing.T, f *ferrytest.Ferry, what string, leave func() error) {
	t.Helper()
	if err := leave(); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 10*time.Second, "the client's session to end", func() (bool, error) {
		return f.Server.Snapshot().Clients == 0, nil
	})
	if _, handbacks := loopCounters(t, f); handbacks != 0 {
		t.Fatalf("%d hand-backs for %s; want 0 (the loop ends it)", handbacks, what)
	}
}

func TestAClientOfTheLoopThatDropsItsConnectionIsEndedByTheLoop(t *testing.T) {
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

func TestClientsThatParkedAfterLoginAreServedByTheLoopFromTheirFirstQueryEvenWhenTheyQueue(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutParking(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	f := ferrytest.Start(t, cfg)
	const clients = 12
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		conns[i] = ferrytest.Connect(t, ctx, f.AppDSN())
	}
	// Logged in, silent: parked within a fraction of a second.
	ferrytest.Eventually(t, parkWait, "every silent client to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == clients, nil
	})
	entered, _ := loopCounters(t, f) // (each waited for its first request in the loop)
	// All at once, through both protocols, onto two server connections:
	// most wait in the pool's queue, on the loop.
	errs := make(chan error, clients)
	for i, c := range conns {
		go func() {
			mode := pgx.QueryExecModeSimpleProtocol
			if i%2 == 1 {
				mode = pgx.QueryExecModeExec // Parse, Bind, Describe, Execute, Sync
			}
			var got int
			err := c.QueryRow(ctx, "select $1::int from pg_sleep(0.05)", mode, i).Scan(&got)
			if err == nil && got != i {
				err = fmt.Errorf("client %d read %d", i, got)
			}
			errs <- err
		}()
	}
	var failed []error
	for range conns {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d parked clients' queries failed, the first: %v", len(failed), clients, failed[0])
	}
	if entries, handbacks := loopCounters(t, f); entries-entered != clients || handbacks != 0 {
		t.Fatalf("%d entries, %d handbacks for the parked clients' first queries: want %d and 0 (no goroutine served one)", entries-entered, handbacks, clients)
	}
}

func TestAClientThatConnectsForOneQueryIsServedByTheLoop(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	f := ferrytest.Start(t, cfg)
	// A serverless function's connection: log in, one query, Terminate.
	// The loop serves the query: a goroutine would wait for the answer,
	// parking and being woken again.
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := conn.QueryRow(ctx, "select 7", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 7 {
		t.Fatalf("the client's only query: %d, %v", n, err)
	}
	if entries, handbacks := loopCounters(t, f); entries != 1 || handbacks != 0 {
		t.Fatalf("entries %d, handbacks %d after the client's only query: want 1 and 0 (the loop served it)", entries, handbacks)
	}
	theLoopEnds(t, f, "a client of one query", func() error { return conn.Close(ctx) })
	if c := f.Pool(t, "app").Counters; c.PumpedLoans != 0 {
		t.Fatalf("%d pumped loans for a client of one query; want none", c.PumpedLoans)
	}
}

func TestTheLoopKeepsAServersRegistrationFromOneLoanToTheNextAndMakesANewOneForANewServer(t *testing.T) {
	skipWithoutLoop(t)
	for _, mode := range serverSSLModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			cfg, db := loopTestConfig(t, mode, 1)
			f := ferrytest.Start(t, cfg)
			conn := ferrytest.Connect(t, ctx, f.AppDSN())
			inLoop(t, ctx, f, conn, 1)
			selects := func(from int) {
				t.Helper()
				for i := from; i < from+20; i++ {
					var n int
					// (pg_sleep: the answer comes after the loop's first
					// read of the server, which then waits for its socket.)
					if err := conn.QueryRow(ctx, "select $1::int from pg_sleep(0.002)", i).Scan(&n); err != nil || n != i {
						t.Fatalf("select %d: %d, %v", i, n, err)
					}
				}
			}
			selects(0) // the one server's socket is in the loop's set from here
			adds := router.LoopServerAdds(f.Server)
			_, handbacks := loopCounters(t, f)

			selects(100)
			if n := router.LoopServerAdds(f.Server) - adds; n != 0 {
				t.Errorf("20 loans of the same server added its socket to the epoll set %d times; want 0 (the registration is kept)", n)
			}

			// The server ends while idle in the pool: its socket closes,
			// which ends its registration, and the next loan dials a new
			// one (whose descriptor likely reuses the old number).
			if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and usename = 'app'", db); err != nil {
				t.Fatal(err)
			}
			ferrytest.Eventually(t, 10*time.Second, "the terminated server to be gone", func() (bool, error) {
				n, err := queryInt(ctx, "select count(*) from pg_stat_activity where datname = $1 and usename = 'app'", db)
				return n == 0, err
			})
			selects(200)
			if n := router.LoopServerAdds(f.Server) - adds; n != 1 {
				t.Errorf("the new server's socket was added %d times over 20 loans; want 1", n)
			}
			if _, h := loopCounters(t, f); h != handbacks {
				t.Errorf("the loop handed the session back %d times; want none", h-handbacks)
			}
			if p := f.Pool(t, "app"); p.Stat.Destroyed < 1 {
				t.Errorf("the terminated server was not destroyed: %+v", p.Stat)
			}
		})
	}
}

// panicLoggedAndCounted checks that pgferry logged one recovered panic and
// counted it (Snapshot.Panics).
func panicLoggedAndCounted(t *testing.T, f *ferrytest.Ferry) {
	t.Helper()
	if !strings.Contains(f.Logs(), "panicked") {
		t.Fatal("the panic was not logged")
	}
	if n := f.Server.Snapshot().Panics; n != 1 {
		t.Fatalf("%d panics counted; want the one", n)
	}
}

// otherClientServed runs 20 queries on c, a client other than the one
// whose session panicked.
func otherClientServed(t *testing.T, ctx context.Context, c *pgconn.PgConn) {
	t.Helper()
	for i := 0; i < 20; i++ {
		if _, err := c.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatalf("query %d of the other client after the panic: %v", i, err)
		}
	}
}
