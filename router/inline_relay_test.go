package router_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// pumpedLoans reads how many loans of database "app" a second relay
// goroutine carried.
func pumpedLoans(t *testing.T, f *ferrytest.Ferry) uint64 {
	t.Helper()
	return f.Pool(t, "app").Counters.PumpedLoans
}

func TestTransactionModeRelaysResponsesOnTheClientsOwnGoroutine(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = false // the goroutine's relay, whatever PGFERRY_TEST_RELAY_LOOP says
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "create table items (id int primary key, v text)"); err != nil {
		t.Fatal(err)
	}

	// Ordinary transactions: simple and extended protocol, explicit
	// transactions, a pipelined batch, COPY TO.
	for i := 0; i < 50; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int * 2", i).Scan(&n); err != nil || n != 2*i {
			t.Fatalf("extended query %d: %d, %v", i, n, err)
		}
		if _, err := conn.Exec(ctx, "insert into items values ($1, 'x')", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "update items set v = 'y' where id < 10")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	for i := 0; i < 20; i++ {
		b.Queue("select count(*) from items where id >= $1", i)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.PgConn().Exec(ctx, "select 1; select 2").ReadAll(); err != nil {
		t.Fatal(err)
	}
	// About 125 loans so far. Only a response slower than the budget
	// (50 ms: possible on a loaded test machine, hence the tolerance) may
	// have needed a second goroutine.
	if got := pumpedLoans(t, f); got > 10 {
		t.Fatalf("ordinary transactions needed a relay goroutine %d times, want (almost) none", got)
	}

	// A response slower than the inline budget is handed to a pump and
	// still arrives whole.
	before := pumpedLoans(t, f)
	var slept int
	if err := conn.QueryRow(ctx, "select 7 from pg_sleep(0.3)").Scan(&slept); err != nil || slept != 7 {
		t.Fatalf("slow query: %d, %v", slept, err)
	}
	if got := pumpedLoans(t, f) - before; got != 1 {
		t.Fatalf("a slow query was handed off %d times, want 1", got)
	}

	// COPY FROM STDIN needs the client read while the server waits.
	rows := make([][]any, 1000)
	for i := range rows {
		rows[i] = []any{1000 + i, "copied"}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"id", "v"}, pgx.CopyFromRows(rows))
	if err != nil || n != 1000 {
		t.Fatalf("copy from: %d, %v", n, err)
	}
	if got := pumpedLoans(t, f) - before; got < 2 {
		t.Fatalf("COPY FROM STDIN was not handed to a pump (%d hand-offs since the slow query)", got-1)
	}
	var count int
	if err := conn.QueryRow(ctx, "select count(*) from items").Scan(&count); err != nil || count != 1050 {
		t.Fatalf("items: %d, %v (want 1050)", count, err)
	}
}

func TestSessionModeRelaysEveryLoanWithAPump(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.PoolMode = "session"
	db := cfg.Databases["app"]
	db.PoolMode = "session"
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	for i := 0; i < 3; i++ {
		conn, err := pgx.Connect(ctx, f.AppDSN())
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := conn.QueryRow(ctx, "select 1").Scan(&n); err != nil || n != 1 {
			t.Fatalf("select 1: %d, %v", n, err)
		}
		conn.Close(context.Background())
	}
	if got := pumpedLoans(t, f); got < 3 {
		t.Fatalf("session mode: %d pumped loans for 3 sessions, want every loan pumped", got)
	}
}

func TestASlowQueryAfterAQuietSpellIsStillHandedOff(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = false // as above
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	// The budget's goroutine sleeps after a second without loans; the next
	// loan must wake it, or a slow answer would never be handed off.
	time.Sleep(1500 * time.Millisecond)
	before := pumpedLoans(t, f)
	var slept int
	if err := conn.QueryRow(ctx, "select 7 from pg_sleep(0.3)").Scan(&slept); err != nil || slept != 7 {
		t.Fatalf("slow query: %d, %v", slept, err)
	}
	if got := pumpedLoans(t, f) - before; got != 1 {
		t.Fatalf("a slow query after a quiet spell was handed off %d times, want 1", got)
	}
}

func TestAClientLeavingASlowQueryIsNoticedWhenAReloadReplacedItsPoolMidTransaction(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	// PostgreSQL ends a backend whose client (pgferry) closed the
	// connection only when it checks the socket during the query.
	if err := cluster.Exec(ctx, "alter database "+db+" set client_connection_check_interval = '100ms'"); err != nil {
		t.Fatal(err)
	}
	f := ferrytest.Start(t, cfg)
	c := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
	sendRaw(t, c, encode(t, &pgproto3.Query{String: "begin"}))
	if _, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'Z' }); err != nil {
		t.Fatal(err)
	}

	// The reload replaces the pool; the open transaction keeps its server.
	next := *cfg
	next.Databases = maps.Clone(cfg.Databases)
	setPoolSize(&next, "app", cfg.Databases["app"].PoolSize+1)
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}

	// The slow answer must still be handed to a pump after the inline
	// budget, so that the session sees its client leave and closes the
	// server instead of waiting out the query.
	sendRaw(t, c, encode(t, &pgproto3.Query{String: "select pg_sleep(60)"}))
	waitForBackend(t, ctx, db, "state = 'active' and query = 'select pg_sleep(60)'")
	c.Close()
	waitNoBusyBackends(t, ctx, db)
	assertNoPanic(t, f)
}
