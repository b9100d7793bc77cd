package router_test

// TLS 1.3 clients of the relay loop doing what the loop hands back to a
// goroutine or waits for: session state, COPY both ways, a cancelled
// query, and queueing for a server another client holds. The fixture
// (newTLSLoop and its helpers) is in looptls_test.go.

import (
	"bytes"
	"context"
	"crypto/md5"
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

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

func TestATLSClientOfTheLoopThatChangesSessionStateIsServedByItsGoroutineAndTakenBack(t *testing.T) {
	skipWithoutTLS13Loop(t)
	t.Parallel()
	l := newTLSLoop(t, 2)
	ctx, f, conn := l.ctx, l.f, l.conn
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
	loopCountersAre(t, f, 2, 1, "after the simple SET")

	// A SET prepared under a name keeps the client on its goroutine until
	// it closes the statement.
	if _, err := conn.Prepare(ctx, "set_b", "set search_path = loop_b, public"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "set_b"); err != nil {
		t.Fatal(err)
	}
	searchPath("after the prepared SET", "loop_b, public", pgx.QueryExecModeSimpleProtocol)
	loopCountersAre(t, f, 2, 2, "while the SET statement is open (on its goroutine)")
	if err := conn.Deallocate(ctx, "set_b"); err != nil {
		t.Fatal(err)
	}
	searchPath("after the statement was closed", "loop_b, public", pgx.QueryExecModeExec)
	inLoopNow(t, f, "after the SET statement was closed")
	if st := loopStateOf(t, f); st.entries-st.sweepReturns() != 3 {
		t.Fatalf("%s: want the client back in the loop once its SET statement is closed (3 entries, not counting returns from a sweep)", st)
	}
}

func TestCOPYByATLSClientOfTheLoopArrivesWholeInBothDirections(t *testing.T) {
	skipWithoutTLS13Loop(t)
	t.Parallel()
	l := newTLSLoop(t, 1)
	ctx, f, conn := l.ctx, l.f, l.conn
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
	skipWithoutTLS13Loop(t)
	t.Parallel()
	l := newTLSLoop(t, 1)
	ctx, f, conn := l.ctx, l.f, l.conn
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "select pg_sleep(60)")
		errc <- err
	}()
	waitForBackend(t, ctx, l.db, "query = 'select pg_sleep(60)'")
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
	servesQueries(t, ctx, conn, 5, "after the cancel")
	intoTheLoop(t, ctx, f, conn) // (back in the loop, if it ever left)
	eventuallyPool(t, f, "the server to go back to the pool", func(p router.PoolSnapshot) bool {
		return p.Stat.Active == 0
	})
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
	pgConnInLoop(t, ctx, f, queued, 2, 0)
	if _, err := holder.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "select 1"); err != nil { // the server is linked from here
		t.Fatal(err)
	}
	loopCountersAre(t, f, 2, 0, "with the server held (both clients in the loop)")
	return f, holder, queued
}

// queuedInTheLoop waits until a client queues for the server (waitQueued)
// and fails the test unless the loop queued it, not its goroutine: the
// loop's count of queueings rose by one from before, read before the
// client asked.
func queuedInTheLoop(t *testing.T, f *ferrytest.Ferry, before uint64) {
	t.Helper()
	waitQueued(t, f)
	if router.LoopQueueings(f.Server) != before+1 {
		t.Fatal("the TLS client queued on its goroutine, not in the loop")
	}
}

// queueInTheLoop takes over the socket of queued, a TLS client of the loop
// whose server another client holds, sends b on it and waits until the
// loop queues it (queuedInTheLoop). It returns the socket.
func queueInTheLoop(t *testing.T, f *ferrytest.Ferry, queued *pgconn.PgConn, b []byte) net.Conn {
	t.Helper()
	before := router.LoopQueueings(f.Server)
	c := hijack(t, queued)
	sendRaw(t, c, b)
	queuedInTheLoop(t, f, before)
	return c
}

// takeTurns runs each of runs 200 times, all at once, and ends the test
// if one fails.
func takeTurns(t *testing.T, runs ...func() error) {
	t.Helper()
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if err := run(); err != nil {
					t.Error(err) // (t.Fatal must not run on another goroutine)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

func TestATLSClientTheLoopQueuesForTheOnlyServerIsServedWhenItComesBack(t *testing.T) {
	skipWithoutTLS13Loop(t)
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
	queuedInTheLoop(t, f, queueings)
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("the queued TLS client's query: %v", err)
	}

	// Now both take turns on the one server, many times.
	takeTurns(t,
		func() error { _, err := holder.Exec(ctx, "select 1"); return err },
		func() error { _, err := queued.Exec(ctx, "select repeat('q', 1000)").ReadAll(); return err },
	)
	if _, h := loopCounters(t, f); h != 0 {
		t.Fatalf("%d hand-backs while the TLS clients queued in the loop; want none", h)
	}
	if n := router.LoopQueueings(f.Server) - queueings; n < 2 {
		t.Fatalf("the loop queued %d times for the server; want the clients to have queued in it", n)
	}
	eventuallyPool(t, f, "the one server to be idle and nobody queued", func(p router.PoolSnapshot) bool {
		return p.Stat.Total == 1 && p.Stat.Active == 0 && p.Stat.Waiting == 0
	})
}

// answersAre reads frames from c, the queued client's socket, up to the
// last ReadyForQuery of want, failing the test unless they are want (as
// describe renders them). It returns the frames.
func answersAre(t *testing.T, c net.Conn, want string) []frame {
	t.Helper()
	zs := strings.Count(want, "Z")
	frames, closed, err := readFrames(c, 20*time.Second, func(fr frame) bool {
		if fr.typ == 'Z' {
			zs--
		}
		return zs == 0
	})
	if closed || err != nil {
		t.Fatalf("the queued client's answers: %s (%v)", describe(frames), err)
	}
	if got := describe(frames); got != want {
		t.Fatalf("the queued client got %s; want %s", got, want)
	}
	return frames
}

func TestATLSClientThatSendsMoreWhileQueuedKeepsItsPlace(t *testing.T) {
	skipWithoutTLS13Loop(t)
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
			c := queueInTheLoop(t, f, queued, encode(t, &pgproto3.Parse{Query: "select 42"}))
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
			frames := answersAre(t, c, tc.want)
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
	skipWithoutTLS13Loop(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queued := tlsQueueSetup(t, ctx)
	dropTCP(t, queueInTheLoop(t, f, queued, protocol.AppendQuery(nil, "select 'never run'")))
	ferrytest.Eventually(t, 20*time.Second, "the leaving client to give up its place", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Waiting == 0 && p.ClientsWaiting == 0 && f.Server.Snapshot().Clients == 1, nil
	})
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	eventuallyPool(t, f, "the server to be idle", func(p router.PoolSnapshot) bool {
		return p.Stat.Active == 0 && p.Stat.Idle == 1
	})
	if _, h := loopCounters(t, f); h != 0 {
		t.Fatalf("%d hand-backs; want the loop to end the client that left", h)
	}
	assertSelects(t, ctx, holder, 7, "the holder after")
}
