package router_test

// How the relay loop reads and writes its sockets: a client that reads
// slowly, frames larger than the read buffer, a long pipeline handed to a
// pump, servers dialed out of Go's netpoller and kept registered in the
// loop's epoll set from one loan to the next. The shared helpers are in
// loop_test.go.

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
	"github.com/pgferry/pgferry/router"
)

func TestTheRelayLoopWaitsForASlowClientWithoutHoldingUpOthers(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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
	ferrytest.ChoosesItsRelayMode(t)
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

func TestALongPipelineWithoutSyncIsHandedToAPumpAndAnsweredInOrder(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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

func TestServersAreDialedOutOfGosNetpollerOnlyWhileTheLoopCanServeTheirPool(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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
	// (The rebuilt pool's counters go on from the old one's.)
	entriesBefore, _ := loopCounters(t, f)
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
	if entries, _ := loopCounters(t, f); entries != entriesBefore {
		t.Fatalf("with query_timeout set, %d sessions entered the loop; want none", entries-entriesBefore)
	}

	if err := f.Server.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	conn, detached = client("with query_timeout unset again")
	if !detached {
		t.Fatal("after a reload that unsets query_timeout, the pool still dials its servers into the netpoller")
	}
	inLoop(t, ctx, f, conn, entriesBefore+1)
}

func TestTheLoopKeepsAServersRegistrationFromOneLoanToTheNextAndMakesANewOneForANewServer(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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
