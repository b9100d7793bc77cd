package router_test

// How a TLS 1.3 client of the relay loop ends, or is sent back to a
// goroutine: it drops its connection (idle, in a transaction, waiting for
// an answer, mid-result), the admin console KILLs it, a reload turns the
// loop off, pgferry shuts down. The fixture (newTLSLoop and its helpers)
// is in looptls_test.go.

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

// adminOverTLS connects to f's admin console with sslmode=require.
func adminOverTLS(t *testing.T, ctx context.Context, f *ferrytest.Ferry) *pgconn.PgConn {
	t.Helper()
	return ferrytest.ConnectPgConn(t, ctx, strings.Replace(adminDSN(f), "sslmode=disable", "sslmode=require", 1))
}

// reloadLoopOff reloads f with cfg, what it started with, but the relay
// loop off.
func reloadLoopOff(t *testing.T, f *ferrytest.Ferry, cfg *configs.Config) {
	t.Helper()
	next := *cfg
	next.RelayLoop = false
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
}

// shutdownInBackground starts f's Shutdown, bounded by timeout, and
// returns the channel it sends the number of sessions it cut on.
func shutdownInBackground(f *ferrytest.Ferry, timeout time.Duration) <-chan int {
	cut := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cut <- f.Server.Shutdown(ctx)
	}()
	return cut
}

// shutdownCutNone fails the test unless the Shutdown behind cut ended
// every session without cutting one, and conn, a TLS client that stayed,
// was told why, in a record its goroutine sealed (57P01 admin_shutdown).
func shutdownCutNone(t *testing.T, ctx context.Context, cut <-chan int, conn *pgx.Conn) {
	t.Helper()
	if c := <-cut; c != 0 {
		t.Fatalf("Shutdown cut %d sessions, want 0", c)
	}
	_, err := conn.Exec(ctx, "select 1")
	expectPgError(t, err, "57P01")
}

// stalledRows is how many rows of 1,000 bytes stallMidResult asks for.
const stalledRows = 40000

// stallMidResult has the client start a 40 MB result and read one row of
// it, and waits until the loop waits for room on its socket (the server,
// unread, waits to write), failing the test if a pump relays the result
// instead. It returns the rows.
func (l *tlsLoop) stallMidResult(t *testing.T) pgx.Rows {
	t.Helper()
	pumped := l.f.Pool(t, "app").Counters.PumpedLoans
	rows, err := l.conn.Query(l.ctx, "select repeat('x', 1000) from generate_series(1, "+strconv.Itoa(stalledRows)+")", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatalf("no first row: %v", rows.Err())
	}
	waitForBackend(t, l.ctx, l.db, "wait_event = 'ClientWrite'")
	inLoopNow(t, l.f, "while the client stalls")
	if p := l.f.Pool(t, "app"); p.Counters.PumpedLoans != pumped {
		t.Fatal("a pump relays the result; want the loop to wait for the client")
	}
	return rows
}

// readRest reads what is left of rows, the result stallMidResult stalled,
// failing the test on a row that is not 1,000 bytes; it returns how many
// rows the client read in all. when says at what point.
func readRest(t *testing.T, rows pgx.Rows, when string) int {
	t.Helper()
	n := 1
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil || len(s) != 1000 {
			t.Fatalf("row %d %s: %d bytes, %v", n, when, len(s), err)
		}
		n++
	}
	return n
}

// readWholeResult is readRest, failing the test unless the client read
// the whole result without an error.
func readWholeResult(t *testing.T, rows pgx.Rows, when string) {
	t.Helper()
	if n := readRest(t, rows, when); rows.Err() != nil || n != stalledRows {
		t.Fatalf("the client got %d rows %s, %v; want %d", n, when, rows.Err(), stalledRows)
	}
}

func TestATLSClientOfTheLoopThatDropsItsConnectionIsEndedByTheLoopAndItsServerComesBackClean(t *testing.T) {
	skipWithoutTLS13Loop(t)
	tests := []struct {
		name string
		// before runs on the client in the loop before it drops.
		before func(ctx context.Context, conn *pgx.Conn) error
	}{
		{"idle", func(context.Context, *pgx.Conn) error { return nil }},
		{"inside a transaction", func(ctx context.Context, conn *pgx.Conn) error {
			if _, err := conn.Exec(ctx, "begin"); err != nil {
				return err
			}
			_, err := conn.Exec(ctx, "insert into dropped values (1)")
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newTLSLoop(t, 1)
			ctx, f, conn := l.ctx, l.f, l.conn
			if _, err := conn.Exec(ctx, "create table dropped (x int)"); err != nil {
				t.Fatal(err)
			}
			intoTheLoop(t, ctx, f, conn)
			var pid int
			if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if err := tc.before(ctx, conn); err != nil {
				t.Fatal(err)
			}
			_, handbacks := inLoopNow(t, f, "before the drop")
			dropTCP(t, conn.PgConn().Conn())
			ferrytest.Eventually(t, 10*time.Second, "the client's session to end", func() (bool, error) {
				return f.Server.Snapshot().Clients == 0, nil
			})
			if _, h := loopCounters(t, f); h != handbacks {
				t.Fatalf("%d hand-backs for the TLS client that dropped its connection; want none (the loop ends it)", h-handbacks)
			}

			// The pool's one server serves the next client, outside any
			// transaction, without what the one that left did not commit.
			other := connectTLS13(t, ctx, f)
			var n, otherPid int
			if err := other.QueryRow(ctx, "select count(*), pg_backend_pid() from dropped").Scan(&n, &otherPid); err != nil {
				t.Fatalf("the next client: %v", err)
			}
			if n != 0 {
				t.Fatalf("the next client sees %d rows the client that left never committed", n)
			}
			if tc.name == "idle" && otherPid != pid {
				t.Fatalf("the next client runs on backend %d, not on the idle client's %d: its server did not come back", otherPid, pid)
			}
			eventuallyPool(t, f, "one idle server, none lent", func(p router.PoolSnapshot) bool {
				return p.Stat.Active == 0 && p.Stat.Idle == 1
			})
		})
	}
}

func TestATLSClientThatLeavesWhileTheLoopWaitsForItsAnswerHasItsQueryCancelled(t *testing.T) {
	skipWithoutTLS13Loop(t)
	t.Parallel()
	ctx, f, db, pc := newTLSLoopPgConn(t, 1)
	inLoopNow(t, f, "before the long query")
	c := hijack(t, pc)
	sendRaw(t, c, protocol.AppendQuery(nil, "select pg_sleep(60)"))
	waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)'")
	inLoopNow(t, f, "while the server sleeps")
	dropTCP(t, c)
	eventuallyPool(t, f, "the abandoned query to be cancelled and the server to go back", func(p router.PoolSnapshot) bool {
		return p.Counters.AbandonedCancels == 1 && f.Server.Snapshot().Clients == 0 && p.Stat.Active == 0
	})
	waitNoBusyBackends(t, ctx, db)
	assertSelects(t, ctx, connectTLS13(t, ctx, f), 7, "the pool's one server after")
}

func TestTheAdminConsolesKillEndsATLSClientInTheLoop(t *testing.T) {
	skipWithoutTLS13Loop(t)
	t.Parallel()
	l := newTLSLoop(t, 2)
	pc := adminOverTLS(t, l.ctx, l.f)
	row := mustAdmin(t, pc, "SHOW CLIENTS").row("user", "app")
	if row == nil || !strings.HasPrefix(row["tls"], "TLS 1.3/") {
		t.Fatalf("SHOW CLIENTS shows the TLS client of the loop as %v; want its tls column TLS 1.3/...", row)
	}
	inLoopNow(t, l.f, "at the KILL")
	mustAdmin(t, pc, "KILL app")
	ferrytest.Eventually(t, 10*time.Second, "the killed client to go", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW CLIENTS").row("user", "app") == nil, nil
	})
	if _, err := l.conn.Exec(l.ctx, "select 1"); err == nil {
		t.Fatal("the killed TLS client still runs queries")
	}
	eventuallyPool(t, l.f, "no server lent", func(p router.PoolSnapshot) bool { return p.Stat.Active == 0 })
}

func TestAReloadThatTurnsTheLoopOffSendsATLSClientOfTheLoopBackToAGoroutine(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutTLS13Loop(t)
	t.Parallel()
	l := newTLSLoop(t, 2)
	inLoopNow(t, l.f, "before the reload")
	entries, handbacks := loopCounters(t, l.f)
	reloadLoopOff(t, l.f, l.cfg)
	servesQueries(t, l.ctx, l.conn, 20, "after the reload")
	// The reload rebuilt the pools; the new pool's counters go on from the
	// old one's, and it serves the session on its goroutine: no entry into
	// the loop (a hand-back at the reload counts if the old pool counted it
	// before the reload took its counters over).
	if e, h := loopCounters(t, l.f); e != entries || h > handbacks+1 {
		t.Fatalf("after the reload (the TLS client kept out of the loop): %d entries and %d hand-backs; want %d and at most %d", e, h, entries, handbacks+1)
	}
	if p := l.f.Pool(t, "app"); p.Counters.Queries < 20 {
		t.Fatalf("the new pool served %d queries; want the session's 20 moved to it", p.Counters.Queries)
	}
}

func TestShutdownLetsATLSClientOfTheLoopFinishItsTransaction(t *testing.T) {
	skipWithoutTLS13Loop(t)
	t.Parallel()
	l := newTLSLoop(t, 2)
	ctx, f, idle := l.ctx, l.f, l.conn
	busy := connectTLS13(t, ctx, f)
	inLoop(t, ctx, f, busy, 2)
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	loopCountersAre(t, f, 2, 0, "at shutdown (both TLS clients in the loop)")

	cut := shutdownInBackground(f, 30*time.Second)
	assertSelects(t, ctx, tx, 5, "inside the open transaction during shutdown")
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during shutdown: %v", err)
	}
	shutdownCutNone(t, ctx, cut, idle)
}

func TestShutdownLetsATLSClientTheLoopWaitsForReadTheRestOfItsResult(t *testing.T) {
	skipWithoutTLS13Loop(t)
	t.Parallel()
	l := newTLSLoop(t, 1)
	// 40 MB to a client that reads one row and stops: the server waits to
	// write (the loop no longer reads it), the loop waits for room on the
	// client's socket, and the records it sealed wait with it.
	rows := l.stallMidResult(t)
	cut := shutdownInBackground(l.f, 60*time.Second)
	readWholeResult(t, rows, "during shutdown")
	shutdownCutNone(t, l.ctx, cut, l.conn)
}

func TestATLSClientTheLoopWaitsForMidResultIsEndedOrServedWhole(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutTLS13Loop(t)
	tests := []struct {
		name string
		act  func(t *testing.T, l *tlsLoop) // while the client stalls
		// whole: the client reads the whole result after act; otherwise
		// its session ends.
		whole bool
	}{
		{"the client drops its connection", func(t *testing.T, l *tlsLoop) {
			dropTCP(t, l.conn.PgConn().Conn())
		}, false},
		{"the admin console kills it", func(t *testing.T, l *tlsLoop) {
			pc := adminOverTLS(t, l.ctx, l.f)
			mustAdmin(t, pc, "KILL app")
			mustAdmin(t, pc, "RESUME app") // (KILL pauses the database, as PgBouncer's does)
		}, false},
		{"a reload turns the loop off", func(t *testing.T, l *tlsLoop) {
			reloadLoopOff(t, l.f, l.cfg)
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newTLSLoop(t, 1)
			rows := l.stallMidResult(t)
			tc.act(t, l)
			if tc.whole {
				readWholeResult(t, rows, "after "+tc.name)
				assertSelects(t, l.ctx, l.conn, 1, "the client after its result")
			} else {
				n := readRest(t, rows, "after "+tc.name)
				rows.Close()
				if rows.Err() == nil {
					t.Fatalf("the client read %d rows and no error; want its session ended", n)
				}
				ferrytest.Eventually(t, 20*time.Second, "the session to end", func() (bool, error) {
					s := l.f.Server.Snapshot()
					return s.Clients-int64(s.AdminClients) == 0, nil // (the console's stays)
				})
			}
			// The pool's one server is idle again, or gone and replaced
			// for the next client: nothing is left lent or half read.
			eventuallyPool(t, l.f, "no server lent", func(p router.PoolSnapshot) bool { return p.Stat.Active == 0 })
			waitNoBusyBackends(t, l.ctx, l.db)
			assertSelects(t, l.ctx, connectTLS13(t, l.ctx, l.f), 8, "the next client")
			assertNoPanic(t, l.f)
		})
	}
}
