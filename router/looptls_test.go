package router_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/tls13"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

// clientDSN is f's DSN for database "app", asking for TLS if withTLS.
func clientDSN(f *ferrytest.Ferry, withTLS bool) string {
	if !withTLS {
		return f.AppDSN()
	}
	return strings.Replace(f.AppDSN(), "sslmode=disable", "sslmode=require", 1)
}

// skipWithoutTLS13 skips where pgferry leaves every TLS connection with
// crypto/tls (build tag pgferry_notls13): the loop serves only the records
// internal/tls13 carries.
func skipWithoutTLS13(t *testing.T) {
	t.Helper()
	if !tls13.Enabled {
		t.Skip("built with pgferry_notls13: TLS clients stay on goroutines")
	}
}

func TestATLS13ClientIsServedByTheRelayLoopInBothProtocols(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	for _, mode := range serverSSLModes {
		t.Run("server sslmode "+mode, func(t *testing.T) {
			t.Parallel()
			aBusyClientIsServedByTheRelayLoop(t, mode, true)
		})
	}
}

func TestATLS12ClientIsServedByItsGoroutine(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 2)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	cc, err := pgx.ParseConfig(clientDSN(f, true))
	if err != nil {
		t.Fatal(err)
	}
	cc.TLSConfig.MaxVersion = tls.VersionTLS12 // crypto/tls carries its records
	conn := ferrytest.ConnectConfig(t, ctx, cc)
	for i := 0; i < 20; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d: %d, %v", i, n, err)
		}
	}
	if entries, _ := loopCounters(t, f); entries != 0 {
		t.Fatalf("a TLS 1.2 client entered the relay loop %d times; want never", entries)
	}
}

func TestTheRelayLoopWaitsForASlowTLSClientWhoseRecordsArriveWhole(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	// 40 MB to a client that stops reading: its socket takes records in
	// part, and the loop sends the rest of each before anything else.
	theRelayLoopWaitsForASlowClient(t, "disable", true)
}

func TestARequestTLSHoldsPastTheReadBufferIsServedWithoutWaitingForTheSocket(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := loopTestConfig(t, "disable", 1)
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.ConnectPgConn(t, ctx, clientDSN(f, true))
	// Into the loop, and on: after a transaction whose client sent
	// nothing more, the loop waits for the next requests without first
	// reading (loopSkipReads).
	for i := 0; ; i++ {
		if entries, _ := loopCounters(t, f); entries == 1 && i >= 3 {
			break
		}
		if i == 1000 {
			t.Fatal("the client never entered the relay loop")
		}
		if _, err := conn.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}

	// Two queries in one write, so in one TLS record: the first is 512
	// bytes, the session's read buffer, which it fills; TLS holds the
	// second, which the socket's readiness will not announce.
	first := "select 1 as n --"
	first += strings.Repeat("x", 512-6-len(first))
	fe := conn.Frontend()
	fe.Send(&pgproto3.Query{String: first})
	fe.Send(&pgproto3.Query{String: "select 2 as n"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	conn.Conn().SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	var got []string
	for ready := 0; ready < 2; {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v (the second query was never served)", got, err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			got = append(got, string(m.Values[0]))
		case *pgproto3.ReadyForQuery:
			ready++
		case *pgproto3.ErrorResponse:
			t.Fatalf("error: %s", m.Message)
		}
	}
	conn.Conn().SetReadDeadline(time.Time{})
	if strings.Join(got, ",") != "1,2" {
		t.Fatalf("rows %v; want 1 and 2", got)
	}
	if entries, handbacks := loopCounters(t, f); entries != 1 || handbacks != 0 {
		t.Fatalf("%d entries and %d hand-backs; want the loop to serve both", entries, handbacks)
	}
}

func TestAnIdleTLSClientOfTheLoopIsParkedAndComesBackWhenItTalks(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutParking(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = true
	offerClientTLS(cfg, "require")
	f := ferrytest.Start(t, cfg)
	conn := ferrytest.Connect(t, ctx, clientDSN(f, true))
	inLoop(t, ctx, f, conn, 1)
	ferrytest.Eventually(t, parkWait, "the idle TLS client of the loop to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	// Its records' keys were parked with it; the loop serves its next
	// query with them, and ends it when it leaves.
	for i := 0; i < 3; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("the parked TLS client's query %d: %d, %v", i, n, err)
		}
	}
	if entries, handbacks := loopCounters(t, f); entries != 2 || handbacks != 0 {
		t.Fatalf("entries %d, handbacks %d after the parked TLS client's queries: want 2 and 0 (the loop served them)", entries, handbacks)
	}
	theLoopEnds(t, f, "a TLS client of the loop that sent Terminate", func() error { return conn.Close(ctx) })
}

// TLS clients of the relay loop doing what the loop hands back, waits for
// or is interrupted in, as plain clients do in loop_test.go and
// loopqueue_test.go: each checks that the client spoke TLS 1.3 and was in
// the loop when it mattered.

// startTLSLoop starts pgferry with the relay loop on, poolSize server
// connections for "app" (reached without TLS) and TLS required of clients.
// It returns the configuration it started with and the server database.
func startTLSLoop(t *testing.T, poolSize int) (f *ferrytest.Ferry, cfg *configs.Config, db string) {
	t.Helper()
	cfg, db = loopTestConfig(t, "disable", poolSize)
	offerClientTLS(cfg, "require")
	return ferrytest.Start(t, cfg), cfg, db
}

// connectTLS13 connects a pgx client to f's "app" with sslmode=require,
// failing the test unless it speaks TLS 1.3.
func connectTLS13(t *testing.T, ctx context.Context, f *ferrytest.Ferry) *pgx.Conn {
	t.Helper()
	conn := ferrytest.Connect(t, ctx, clientDSN(f, true))
	tls13Of(t, conn.PgConn().Conn())
	return conn
}

// connectTLS13PgConn is connectTLS13 for a pgconn client.
func connectTLS13PgConn(t *testing.T, ctx context.Context, f *ferrytest.Ferry) *pgconn.PgConn {
	t.Helper()
	pc := ferrytest.ConnectPgConn(t, ctx, clientDSN(f, true))
	tls13Of(t, pc.Conn())
	return pc
}

// tls13Of returns c as the TLS connection it must be, failing the test
// unless it runs TLS 1.3 (the records the loop carries).
func tls13Of(t *testing.T, c net.Conn) *tls.Conn {
	t.Helper()
	tc, ok := c.(*tls.Conn)
	if !ok {
		t.Fatalf("the client's connection is a %T; want TLS", c)
	}
	if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("the client speaks %s; want TLS 1.3", tls.VersionName(v))
	}
	return tc
}

// dropTCP closes the socket under a TLS client's connection, as a killed
// process's kernel does: no close_notify, no Terminate.
func dropTCP(t *testing.T, c net.Conn) error {
	t.Helper()
	return tls13Of(t, c).NetConn().Close()
}

// intoTheLoop runs queries on conn, the only client of f, until it is in
// the relay loop (its session may have entered it at login, and been
// handed back since), failing the test if it never is.
func intoTheLoop(t *testing.T, ctx context.Context, f *ferrytest.Ferry, conn *pgx.Conn) {
	t.Helper()
	for i := 0; ; i++ {
		if entries, handbacks := loopCounters(t, f); entries == handbacks+1 {
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

// inLoopNow fails the test unless the only client of f is in the relay
// loop now: it entered it once more than it was handed back.
func inLoopNow(t *testing.T, f *ferrytest.Ferry, when string) (entries, handbacks uint64) {
	t.Helper()
	entries, handbacks = loopCounters(t, f)
	if entries != handbacks+1 {
		t.Fatalf("%s: %d entries and %d hand-backs; want the client in the relay loop", when, entries, handbacks)
	}
	return entries, handbacks
}

func TestATLSClientOfTheLoopThatChangesSessionStateIsServedByItsGoroutineAndTakenBack(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, _, _ := startTLSLoop(t, 2)
	conn := connectTLS13(t, ctx, f)
	inLoop(t, ctx, f, conn, 1)
	inLoopNow(t, f, "before the SET")

	searchPath := func(when, want string, mode pgx.QueryExecMode) {
		t.Helper()
		for i := 0; i < 5; i++ {
			var path string
			if err := conn.QueryRow(ctx, "select current_setting('search_path')", mode).Scan(&path); err != nil || path != want {
				t.Fatalf("search_path %s (query %d): %q, %v; want %q", when, i, path, err, want)
			}
		}
	}
	// A simple-protocol SET: the loop hands it to the goroutine, which
	// takes its records over, and the client comes back to the loop.
	if _, err := conn.Exec(ctx, "set search_path = loop_a, public"); err != nil {
		t.Fatal(err)
	}
	searchPath("after the simple SET", "loop_a, public", pgx.QueryExecModeCacheStatement)
	inLoopNow(t, f, "after the simple SET and five queries")
	if entries, handbacks := loopCounters(t, f); entries != 2 || handbacks != 1 {
		t.Fatalf("entries %d, handbacks %d after the simple SET; want 2 and 1", entries, handbacks)
	}

	// A SET prepared under a name keeps the client on its goroutine until
	// it closes the statement.
	if _, err := conn.Prepare(ctx, "set_b", "set search_path = loop_b, public"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "set_b"); err != nil {
		t.Fatal(err)
	}
	searchPath("after the prepared SET", "loop_b, public", pgx.QueryExecModeSimpleProtocol)
	if entries, handbacks := loopCounters(t, f); entries != 2 || handbacks != 2 {
		t.Fatalf("entries %d, handbacks %d while the SET statement is open; want 2 and 2 (on its goroutine)", entries, handbacks)
	}
	if err := conn.Deallocate(ctx, "set_b"); err != nil {
		t.Fatal(err)
	}
	searchPath("after the statement was closed", "loop_b, public", pgx.QueryExecModeExec)
	inLoopNow(t, f, "after the SET statement was closed")
	if entries, _ := loopCounters(t, f); entries != 3 {
		t.Fatalf("entries %d: want the client back in the loop once its SET statement is closed", entries)
	}
}

func TestCOPYByATLSClientOfTheLoopArrivesWholeInBothDirections(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, _, _ := startTLSLoop(t, 1)
	conn := connectTLS13(t, ctx, f)
	if _, err := conn.Exec(ctx, "create table copied (id int primary key, payload text not null)"); err != nil {
		t.Fatal(err)
	}
	intoTheLoop(t, ctx, f, conn)

	// About 4 MB each way: hundreds of TLS records. The loop hands COPY
	// FROM STDIN to the goroutine (a pump relays the server's answers
	// while it reads the client) and relays COPY TO STDOUT itself.
	const n = 20000
	rows := make([][]any, n)
	var text strings.Builder
	for i := range rows {
		payload := fmt.Sprintf("row %d %s", i, strings.Repeat(string(rune('a'+i%26)), 150+i%50))
		rows[i] = []any{i, payload}
		fmt.Fprintf(&text, "%d\t%s\n", i, payload)
	}
	entries, handbacks := inLoopNow(t, f, "before COPY FROM STDIN")
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"copied"}, []string{"id", "payload"}, pgx.CopyFromRows(rows))
	if err != nil || copied != n {
		t.Fatalf("COPY FROM STDIN: %d rows, %v; want %d", copied, err, n)
	}
	if _, h := loopCounters(t, f); h != handbacks+1 {
		t.Fatalf("%d hand-backs for COPY FROM STDIN; want 1 (the loop hands it to the goroutine)", h-handbacks)
	}
	var count int
	var sum string
	if err := conn.QueryRow(ctx, "select count(*), md5(string_agg(id || E'\\t' || payload || E'\\n', '' order by id)) from copied").Scan(&count, &sum); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%x", md5.Sum([]byte(text.String()))); count != n || sum != want {
		t.Fatalf("the table holds %d rows with digest %s; want %d with %s", count, sum, n, want)
	}

	intoTheLoop(t, ctx, f, conn)
	if e, _ := loopCounters(t, f); e == entries {
		t.Fatal("the client never came back to the loop after COPY FROM STDIN")
	}
	_, handbacks = inLoopNow(t, f, "before COPY TO STDOUT")
	var out bytes.Buffer
	tag, err := conn.PgConn().CopyTo(ctx, &out, "copy (select id, payload from copied order by id) to stdout")
	if err != nil || tag.RowsAffected() != n {
		t.Fatalf("COPY TO STDOUT: %s, %v", tag, err)
	}
	if out.String() != text.String() {
		t.Fatalf("COPY TO STDOUT gave %d bytes (%d lines); want the %d bytes copied in", out.Len(), strings.Count(out.String(), "\n"), text.Len())
	}
	// The loop relays COPY TO's rows as it relays a result's, in records
	// the socket may take in part.
	inLoopNow(t, f, "after COPY TO STDOUT")
	if _, h := loopCounters(t, f); h != handbacks {
		t.Fatalf("%d hand-backs during COPY TO STDOUT; want the loop to relay it", h-handbacks)
	}
}

func TestACancelRequestStopsATLSClientsQueryTheLoopWaitsForAndTheSessionGoesOn(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, _, db := startTLSLoop(t, 1)
	conn := connectTLS13(t, ctx, f)
	intoTheLoop(t, ctx, f, conn)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "select pg_sleep(60)")
		errc <- err
	}()
	waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)'")
	inLoopNow(t, f, "while the server sleeps")
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if code, _, _ := pgCode(err); code != "57014" {
			t.Fatalf("the cancelled query ended with %v; want SQLSTATE 57014", err)
		}
	case <-ctx.Done(): // a hang guard
		t.Fatal("the cancelled query never ended")
	}
	for i := 0; i < 5; i++ {
		var n int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d after the cancel: %d, %v", i, n, err)
		}
	}
	intoTheLoop(t, ctx, f, conn) // (back in the loop, if it ever left)
	ferrytest.Eventually(t, 10*time.Second, "the server to go back to the pool", func() (bool, error) {
		return f.Pool(t, "app").Stat.Active == 0, nil
	})
}

func TestATLSClientOfTheLoopThatDropsItsConnectionIsEndedByTheLoopAndItsServerComesBackClean(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
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
			ctx := testContext(t)
			f, _, _ := startTLSLoop(t, 1)
			conn := connectTLS13(t, ctx, f)
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
			if err := dropTCP(t, conn.PgConn().Conn()); err != nil {
				t.Fatal(err)
			}
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
			ferrytest.Eventually(t, 10*time.Second, "one idle server, none lent", func() (bool, error) {
				p := f.Pool(t, "app")
				return p.Stat.Active == 0 && p.Stat.Idle == 1, nil
			})
		})
	}
}

func TestATLSClientThatLeavesWhileTheLoopWaitsForItsAnswerHasItsQueryCancelled(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, _, db := startTLSLoop(t, 1)
	pc := connectTLS13PgConn(t, ctx, f)
	for i := 0; i < 3; i++ {
		if _, err := pc.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	inLoopNow(t, f, "before the long query")
	c := hijack(t, pc)
	sendRaw(t, c, protocol.AppendQuery(nil, "select pg_sleep(60)"))
	waitForBackend(t, ctx, db, "query = 'select pg_sleep(60)'")
	inLoopNow(t, f, "while the server sleeps")
	if err := dropTCP(t, c); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the abandoned query to be cancelled and the server to go back", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Counters.AbandonedCancels == 1 && f.Server.Snapshot().Clients == 0 && p.Stat.Active == 0, nil
	})
	waitNoBusyBackends(t, ctx, db)
	conn := connectTLS13(t, ctx, f)
	var n int
	if err := conn.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("the pool's one server after: %d, %v", n, err)
	}
}

// tlsQueueSetup starts pgferry as startTLSLoop does with one server
// connection, and returns a TLS client holding it in an open transaction
// and a second TLS client in the loop, both past their entry.
func tlsQueueSetup(t *testing.T, ctx context.Context) (f *ferrytest.Ferry, holder *pgx.Conn, queued *pgconn.PgConn) {
	t.Helper()
	f, _, _ = startTLSLoop(t, 1)
	holder = connectTLS13(t, ctx, f)
	inLoop(t, ctx, f, holder, 1)
	queued = connectTLS13PgConn(t, ctx, f)
	for i := 0; ; i++ {
		if n, _ := loopCounters(t, f); n >= 2 {
			break
		}
		if i == 1000 {
			t.Fatal("the second client never entered the relay loop")
		}
		if _, err := queued.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := holder.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "select 1"); err != nil { // the server is linked from here
		t.Fatal(err)
	}
	if e, h := loopCounters(t, f); e != 2 || h != 0 {
		t.Fatalf("%d entries and %d hand-backs; want both clients in the loop", e, h)
	}
	return f, holder, queued
}

func TestATLSClientTheLoopQueuesForTheOnlyServerIsServedWhenItComesBack(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queued := tlsQueueSetup(t, ctx)
	queueings := router.LoopQueueings(f.Server)

	res := make(chan error, 1)
	go func() {
		r, err := queued.Exec(ctx, "select 42").ReadAll()
		if err == nil && (len(r) != 1 || len(r[0].Rows) != 1 || string(r[0].Rows[0][0]) != "42") {
			err = fmt.Errorf("results %v", r)
		}
		res <- err
	}()
	waitQueued(t, f)
	if router.LoopQueueings(f.Server) != queueings+1 {
		t.Fatal("the TLS client queued on its goroutine, not in the loop")
	}
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("the queued TLS client's query: %v", err)
	}

	// Now both take turns on the one server, many times.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, run := range []func() error{
		func() error { _, err := holder.Exec(ctx, "select 1"); return err },
		func() error { _, err := queued.Exec(ctx, "select repeat('q', 1000)").ReadAll(); return err },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if err := run(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, h := loopCounters(t, f); h != 0 {
		t.Fatalf("%d hand-backs while the TLS clients queued in the loop; want none", h)
	}
	if n := router.LoopQueueings(f.Server) - queueings; n < 2 {
		t.Fatalf("the loop queued %d times for the server; want the clients to have queued in it", n)
	}
	ferrytest.Eventually(t, 20*time.Second, "the one server to be idle and nobody queued", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Total == 1 && p.Stat.Active == 0 && p.Stat.Waiting == 0, nil
	})
}

func TestATLSClientThatSendsMoreWhileQueuedKeepsItsPlace(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	big := "select length('" + strings.Repeat("x", 3*protocol.BufferSize) + "')"
	tests := []struct {
		name string
		// more follows a Parse of "select 42", in a record each.
		more []pgproto3.FrontendMessage
		want string
		// handbacks: the loop hands a query larger than its read buffer
		// to the goroutine.
		handbacks uint64
	}{
		{"the rest of its request", []pgproto3.FrontendMessage{&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}}, "1 2 D C Z", 0},
		// The loop reads what fits in its read buffer; TLS holds the rest
		// of a record it opened, which the socket will not announce.
		{"more than its read buffer", []pgproto3.FrontendMessage{&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}, &pgproto3.Query{String: big}}, "1 2 D C Z T D C Z", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			f, holder, queued := tlsQueueSetup(t, ctx)
			reads := router.LoopQueuedReads(f.Server)
			c := hijack(t, queued)
			sendRaw(t, c, encode(t, &pgproto3.Parse{Query: "select 42"}))
			waitQueued(t, f)
			sent := make(chan error, 1)
			go func() { // (what the socket does not take waits for the grant)
				c.SetWriteDeadline(time.Now().Add(20 * time.Second))
				for _, m := range tc.more {
					b, err := m.Encode(nil)
					if err == nil {
						_, err = c.Write(b) // a record each
					}
					if err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			ferrytest.Eventually(t, 20*time.Second, "the loop to read what the queued client sent", func() (bool, error) {
				return router.LoopQueuedReads(f.Server) > reads, nil
			})
			if p := f.Pool(t, "app"); p.Stat.Waiting != 1 {
				t.Fatalf("%d waiting for the server after the client sent more; want it still queued", p.Stat.Waiting)
			}
			if _, err := holder.Exec(ctx, "commit"); err != nil {
				t.Fatal(err)
			}
			zs := strings.Count(tc.want, "Z")
			frames, closed, err := readFrames(c, 20*time.Second, func(fr frame) bool {
				if fr.typ == 'Z' {
					zs--
				}
				return zs == 0
			})
			if closed || err != nil {
				t.Fatalf("the queued client's answers: %s (%v)", describe(frames), err)
			}
			if got := describe(frames); got != tc.want {
				t.Fatalf("the queued client got %s; want %s", got, tc.want)
			}
			if err := <-sent; err != nil {
				t.Fatalf("the queued client's writes: %v", err)
			}
			if v := dataRowValue(t, frames[2].body); v != "42" {
				t.Fatalf("the queued client read %s; want 42", v)
			}
			if len(frames) > 6 {
				if v := dataRowValue(t, frames[6].body); v != strconv.Itoa(3*protocol.BufferSize) {
					t.Fatalf("the large query returned %s; want %d", v, 3*protocol.BufferSize)
				}
			}
			if _, h := loopCounters(t, f); h != tc.handbacks {
				t.Fatalf("%d hand-backs; want %d (the loop keeps the queued TLS client)", h, tc.handbacks)
			}
		})
	}
}

func TestATLSClientThatLeavesWhileTheLoopQueuesItGivesUpItsPlace(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queued := tlsQueueSetup(t, ctx)
	queueings := router.LoopQueueings(f.Server)
	c := hijack(t, queued)
	sendRaw(t, c, protocol.AppendQuery(nil, "select 'never run'"))
	waitQueued(t, f)
	if router.LoopQueueings(f.Server) != queueings+1 {
		t.Fatal("the TLS client queued on its goroutine, not in the loop")
	}
	if err := dropTCP(t, c); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the leaving client to give up its place", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Waiting == 0 && p.ClientsWaiting == 0 && f.Server.Snapshot().Clients == 1, nil
	})
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the server to be idle", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Active == 0 && p.Stat.Idle == 1, nil
	})
	if _, h := loopCounters(t, f); h != 0 {
		t.Fatalf("%d hand-backs; want the loop to end the client that left", h)
	}
	var n int
	if err := holder.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("the holder after: %d, %v", n, err)
	}
}

func TestTheAdminConsolesKillEndsATLSClientInTheLoop(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, _, _ := startTLSLoop(t, 2)
	app := connectTLS13(t, ctx, f)
	intoTheLoop(t, ctx, f, app)
	pc := ferrytest.ConnectPgConn(t, ctx, strings.Replace(adminDSN(f), "sslmode=disable", "sslmode=require", 1))
	row := mustAdmin(t, pc, "SHOW CLIENTS").row("user", "app")
	if row == nil || !strings.HasPrefix(row["tls"], "TLS 1.3/") {
		t.Fatalf("SHOW CLIENTS shows the TLS client of the loop as %v; want its tls column TLS 1.3/...", row)
	}
	inLoopNow(t, f, "at the KILL")
	mustAdmin(t, pc, "KILL app")
	ferrytest.Eventually(t, 10*time.Second, "the killed client to go", func() (bool, error) {
		return mustAdmin(t, pc, "SHOW CLIENTS").row("user", "app") == nil, nil
	})
	if _, err := app.Exec(ctx, "select 1"); err == nil {
		t.Fatal("the killed TLS client still runs queries")
	}
	ferrytest.Eventually(t, 10*time.Second, "no server lent", func() (bool, error) {
		return f.Pool(t, "app").Stat.Active == 0, nil
	})
}

func TestAReloadThatTurnsTheLoopOffSendsATLSClientOfTheLoopBackToAGoroutine(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, cfg, _ := startTLSLoop(t, 2)
	conn := connectTLS13(t, ctx, f)
	intoTheLoop(t, ctx, f, conn)
	inLoopNow(t, f, "before the reload")

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
	// The reload rebuilt the pools: the counters are the new pool's, which
	// serves the session on its goroutine.
	if entries, handbacks := loopCounters(t, f); entries != 0 || handbacks != 0 {
		t.Fatalf("after the reload: %d entries, %d handbacks; want the TLS client kept out of the loop", entries, handbacks)
	}
	if p := f.Pool(t, "app"); p.Counters.Queries < 20 {
		t.Fatalf("the new pool served %d queries; want the session's 20 moved to it", p.Counters.Queries)
	}
}

func TestShutdownLetsATLSClientOfTheLoopFinishItsTransaction(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, _, _ := startTLSLoop(t, 2)
	idle := connectTLS13(t, ctx, f)
	inLoop(t, ctx, f, idle, 1)
	busy := connectTLS13(t, ctx, f)
	inLoop(t, ctx, f, busy, 2)
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e, h := loopCounters(t, f); e != 2 || h != 0 {
		t.Fatalf("%d entries and %d hand-backs at shutdown; want both TLS clients in the loop", e, h)
	}

	cut := make(chan int, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cut <- f.Server.Shutdown(sctx)
	}()
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
	// The idle client was told why, in a record its goroutine sealed.
	_, err = idle.Exec(ctx, "select 1")
	expectPgError(t, err, "57P01")
}

func TestShutdownLetsATLSClientTheLoopWaitsForReadTheRestOfItsResult(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	t.Parallel()
	ctx := testContext(t)
	f, _, db := startTLSLoop(t, 1)
	conn := connectTLS13(t, ctx, f)
	intoTheLoop(t, ctx, f, conn)
	pumped := f.Pool(t, "app").Counters.PumpedLoans

	// 40 MB to a client that reads one row and stops: the server waits to
	// write (the loop no longer reads it), the loop waits for room on the
	// client's socket, and the records it sealed wait with it.
	rows, err := conn.Query(ctx, "select repeat('x', 1000) from generate_series(1, 40000)", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatalf("no first row: %v", rows.Err())
	}
	waitForBackend(t, ctx, db, "wait_event = 'ClientWrite'")
	inLoopNow(t, f, "while the client stalls")
	if p := f.Pool(t, "app"); p.Counters.PumpedLoans != pumped {
		t.Fatal("a pump relays the result; want the loop to wait for the client")
	}

	cut := make(chan int, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cut <- f.Server.Shutdown(sctx)
	}()
	n := 1
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil || len(s) != 1000 {
			t.Fatalf("row %d during shutdown: %d bytes, %v", n, len(s), err)
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 40000 {
		t.Fatalf("the client got %d rows, %v; want 40000", n, err)
	}
	if c := <-cut; c != 0 {
		t.Fatalf("Shutdown cut %d sessions, want 0", c)
	}
	_, err = conn.Exec(ctx, "select 1")
	expectPgError(t, err, "57P01")
}

// stallMidResult has conn, a TLS client of f's loop, start a 40 MB result
// and read one row of it, and waits until the loop waits for room on its
// socket (the server, unread, waits to write). It returns the rows.
func stallMidResult(t *testing.T, ctx context.Context, f *ferrytest.Ferry, db string, conn *pgx.Conn) pgx.Rows {
	t.Helper()
	pumped := f.Pool(t, "app").Counters.PumpedLoans
	rows, err := conn.Query(ctx, "select repeat('x', 1000) from generate_series(1, 40000)", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatalf("no first row: %v", rows.Err())
	}
	waitForBackend(t, ctx, db, "wait_event = 'ClientWrite'")
	inLoopNow(t, f, "while the client stalls")
	if p := f.Pool(t, "app"); p.Counters.PumpedLoans != pumped {
		t.Fatal("a pump relays the result; want the loop to wait for the client")
	}
	return rows
}

func TestATLSClientTheLoopWaitsForMidResultIsEndedOrServedWhole(t *testing.T) {
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
	tests := []struct {
		name string
		// act happens while the client stalls; finish checks the end.
		act   func(t *testing.T, ctx context.Context, f *ferrytest.Ferry, cfg *configs.Config, conn *pgx.Conn)
		whole bool // the client reads the whole result after act
	}{
		{"the client drops its connection", func(t *testing.T, _ context.Context, _ *ferrytest.Ferry, _ *configs.Config, conn *pgx.Conn) {
			if err := dropTCP(t, conn.PgConn().Conn()); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"the admin console kills it", func(t *testing.T, ctx context.Context, f *ferrytest.Ferry, _ *configs.Config, _ *pgx.Conn) {
			pc := ferrytest.ConnectPgConn(t, ctx, strings.Replace(adminDSN(f), "sslmode=disable", "sslmode=require", 1))
			mustAdmin(t, pc, "KILL app")
			mustAdmin(t, pc, "RESUME app") // (KILL pauses the database, as PgBouncer's does)
		}, false},
		{"a reload turns the loop off", func(t *testing.T, _ context.Context, f *ferrytest.Ferry, cfg *configs.Config, _ *pgx.Conn) {
			next := *cfg
			next.RelayLoop = false
			if err := f.Server.Reload(&next); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			f, cfg, db := startTLSLoop(t, 1)
			conn := connectTLS13(t, ctx, f)
			intoTheLoop(t, ctx, f, conn)
			rows := stallMidResult(t, ctx, f, db, conn)
			tc.act(t, ctx, f, cfg, conn)
			n := 1
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil || len(s) != 1000 {
					t.Fatalf("row %d: %d bytes, %v", n, len(s), err)
				}
				n++
			}
			rows.Close()
			if tc.whole {
				if err := rows.Err(); err != nil || n != 40000 {
					t.Fatalf("the client got %d rows, %v; want 40000", n, err)
				}
				var one int
				if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
					t.Fatalf("the client after its result: %d, %v", one, err)
				}
			} else {
				if rows.Err() == nil {
					t.Fatalf("the client read %d rows and no error; want its session ended", n)
				}
				ferrytest.Eventually(t, 20*time.Second, "the session to end", func() (bool, error) {
					s := f.Server.Snapshot()
					return s.Clients-int64(s.AdminClients) == 0, nil // (the console's stays)
				})
			}
			// The pool's one server is idle again, or gone and replaced
			// for the next client: nothing is left lent or half read.
			ferrytest.Eventually(t, 20*time.Second, "no server lent", func() (bool, error) {
				return f.Pool(t, "app").Stat.Active == 0, nil
			})
			waitNoBusyBackends(t, ctx, db)
			other := connectTLS13(t, ctx, f)
			var n2 int
			if err := other.QueryRow(ctx, "select 8").Scan(&n2); err != nil || n2 != 8 {
				t.Fatalf("the next client: %d, %v", n2, err)
			}
			assertNoPanic(t, f)
		})
	}
}
