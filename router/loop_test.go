package router_test

// Tests of the relay loop (relay_loop = true): a busy client served in
// both protocols, session state handed to a goroutine and back, the loop
// off, parked clients served from their first query, a client of one
// query. This file also holds the helpers the loop*_test.go files share.
// How the loop reads and writes its sockets is in loopsockets_test.go, how
// its sessions are interrupted or ended in loopend_test.go.

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

// doomedAndOtherInTheLoop starts pgferry with the relay loop (pool size
// 2) and two clients it serves: doomed, whose application_name app is
// what a fault test aims at, and another, which must be served
// throughout.
func doomedAndOtherInTheLoop(t *testing.T, ctx context.Context, app string) (f *ferrytest.Ferry, doomed, other *pgconn.PgConn) {
	t.Helper()
	cfg, _ := loopTestConfig(t, "disable", 2)
	f = ferrytest.Start(t, cfg)
	doomed = ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	other = ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	allIntoTheLoop(t, ctx, f, doomed, other)
	return f, doomed, other
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

	// (Entered once: an entry again after the sweep parked it, idle on a
	// slow machine, is its stay in the loop going on, see theLoops.)
	if st := loopStateOf(t, f); st.handbacks != 0 || !st.theLoops() {
		t.Fatalf("%s; want the client to have entered the relay loop once and never been handed back", st)
	}
	if p := f.Pool(t, "app"); p.Counters.PumpedLoans != 0 {
		t.Fatalf("%d loans needed a pump", p.Counters.PumpedLoans)
	}
}

func TestTheRelayLoopHandsSessionStateToTheGoroutineAndTakesTheClientBack(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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

func TestWithRelayLoopOffNoSessionEntersIt(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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

func TestAnIdleClientOfTheLoopIsParkedAndComesBackWhenItTalks(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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

func TestClientsThatParkedAfterLoginAreServedByTheLoopFromTheirFirstQueryEvenWhenTheyQueue(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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
	ferrytest.ChoosesItsRelayMode(t)
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
