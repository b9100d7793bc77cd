package router_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
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
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

// loopQueueSetup starts pgferry with the relay loop on and one server
// connection, and returns a client holding it in an open transaction, and
// a second client in the loop, both past their entry.
// With tlsHolder the holder is a TLS 1.2 client, which the loop does not
// serve: its goroutine releases the server.
func loopQueueSetup(t *testing.T, ctx context.Context, sslMode string, tlsHolder bool, edit func(*configs.Config)) (f *ferrytest.Ferry, holder *pgx.Conn, queued *pgconn.PgConn) {
	t.Helper()
	cfg, _ := loopTestConfig(t, sslMode, 1)
	if tlsHolder {
		offerClientTLS(cfg, "prefer")
	}
	if edit != nil {
		edit(cfg)
	}
	f = ferrytest.Start(t, cfg)
	want := uint64(1)
	if tlsHolder {
		// TLS 1.2: crypto/tls carries its records, so a goroutine serves
		// it, never the loop.
		cc, err := pgx.ParseConfig(strings.Replace(f.AppDSN(), "sslmode=disable", "sslmode=require", 1))
		if err != nil {
			t.Fatal(err)
		}
		cc.TLSConfig.MaxVersion = tls.VersionTLS12
		holder = ferrytest.ConnectConfig(t, ctx, cc)
		want = 0
	} else {
		holder = ferrytest.Connect(t, ctx, f.AppDSN())
		inLoop(t, ctx, f, holder, 1)
	}
	queued = ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	for i := 0; ; i++ {
		if n, _ := loopCounters(t, f); n >= want+1 {
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
	return f, holder, queued
}

// waitQueued waits until one client waits for a server and the pool's
// queue holds it.
func waitQueued(t *testing.T, f *ferrytest.Ferry) {
	t.Helper()
	ferrytest.Eventually(t, 20*time.Second, "the client to queue for the server", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.ClientsWaiting == 1 && p.Stat.Waiting == 1, nil
	})
}

func TestClientsTheLoopQueuesForABusyServerAreServedInTurnWithoutAHandBack(t *testing.T) {
	skipWithoutLoop(t)
	for _, mode := range serverSSLModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			f, holder, queued := loopQueueSetup(t, ctx, mode, false, nil)
			_, handbacks := loopCounters(t, f)
			queueings := router.LoopQueueings(f.Server)

			res := make(chan error, 1)
			go func() {
				_, err := queued.Exec(ctx, "select 42").ReadAll()
				res <- err
			}()
			waitQueued(t, f)
			if _, err := holder.Exec(ctx, "commit"); err != nil {
				t.Fatal(err)
			}
			if err := <-res; err != nil {
				t.Fatalf("the queued client's query: %v", err)
			}

			// Now both take turns on the one server, many times.
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			wg.Add(2)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					if _, err := holder.Exec(ctx, "select 1"); err != nil {
						errs <- err
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					if _, err := queued.Exec(ctx, "select 2").ReadAll(); err != nil {
						errs <- err
						return
					}
				}
			}()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if _, after := loopCounters(t, f); after != handbacks {
				t.Fatalf("%d hand-backs while the clients queued in the loop; want none", after-handbacks)
			}
			if n := router.LoopQueueings(f.Server) - queueings; n < 2 {
				t.Fatalf("the loop queued %d times for the server; want the clients to have queued in it", n)
			}
			// (The answer reaches a client as its loan ends: a moment later.)
			ferrytest.Eventually(t, 20*time.Second, "the one server to be idle and nobody queued", func() (bool, error) {
				p := f.Pool(t, "app")
				return p.Stat.Total == 1 && p.Stat.Active == 0 && p.Stat.Waiting == 0, nil
			})
		})
	}
}

func TestAClientThatLeavesWhileTheLoopQueuesItGivesUpItsPlace(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queued := loopQueueSetup(t, ctx, "disable", false, nil)
	queueings := router.LoopQueueings(f.Server)
	c := hijack(t, queued)
	sendRaw(t, c, protocol.AppendQuery(nil, "select 'never run'"))
	waitQueued(t, f)
	if router.LoopQueueings(f.Server) != queueings+1 {
		t.Fatal("the client queued on its goroutine, not in the loop")
	}
	c.Close()

	ferrytest.Eventually(t, 20*time.Second, "the leaving client to give up its place", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Waiting == 0 && p.ClientsWaiting == 0 && f.Server.Snapshot().Clients == 1, nil
	})
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	// The server goes back to the pool, not to the client that left.
	ferrytest.Eventually(t, 20*time.Second, "the server to be idle", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Active == 0 && p.Stat.Idle == 1, nil
	})
	other := ferrytest.Connect(t, ctx, f.AppDSN())
	var n int
	if err := other.QueryRow(ctx, "select 7").Scan(&n); err != nil || n != 7 {
		t.Fatalf("a new client after: %d, %v", n, err)
	}
}

func TestAClientThatSendsTheRestOfItsRequestWhileQueuedKeepsItsPlace(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	rest := encode(t, &pgproto3.Bind{})
	rest = append(rest, encode(t, &pgproto3.Execute{})...)
	rest = append(rest, encode(t, &pgproto3.Sync{})...)
	f, _, handbacks := aQueuedClientSendsMore(t, rest, "1 2 D C Z")
	if _, after := loopCounters(t, f); after != handbacks {
		t.Fatalf("%d hand-backs; want the loop to keep the queued client", after-handbacks)
	}
}

func TestAClientThatSendsMoreThanItsReadBufferWhileQueuedKeepsItsPlace(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	rest := encode(t, &pgproto3.Bind{})
	rest = append(rest, encode(t, &pgproto3.Execute{})...)
	rest = append(rest, encode(t, &pgproto3.Sync{})...)
	// Then a query larger than the loop's read buffer: the loop reads what
	// fits and leaves the rest in the socket until the grant.
	rest = protocol.AppendQuery(rest, "select length('"+strings.Repeat("x", 3*protocol.BufferSize)+"')")
	_, frames, _ := aQueuedClientSendsMore(t, rest, "1 2 D C Z T D C Z")
	if got := dataRowValue(t, frames[6].body); got != strconv.Itoa(3*protocol.BufferSize) {
		t.Fatalf("the large query returned %s; want %d", got, 3*protocol.BufferSize)
	}
}

// aQueuedClientSendsMore makes a client queue in the loop for the one
// server with a Parse of "select txid_current()", a second client queue
// behind it, and the first then send rest (which must finish that
// statement's Bind, Execute and Sync first). Once the server is free, it
// checks that the first client's answers, up to as many ReadyForQuery as
// want has, read as want and that its transaction ran before the second
// client's: the first kept its place. It returns them, and the hand-back
// count from before rest was sent.
func aQueuedClientSendsMore(t *testing.T, rest []byte, want string) (*ferrytest.Ferry, []frame, uint64) {
	t.Helper()
	ctx := testContext(t)
	f, holder, queued := loopQueueSetup(t, ctx, "disable", false, nil)
	_, handbacks := loopCounters(t, f)
	reads := router.LoopQueuedReads(f.Server)

	first := hijack(t, queued)
	sendRaw(t, first, encode(t, &pgproto3.Parse{Query: "select txid_current()"}))
	waitQueued(t, f)

	second := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	secondTxid := make(chan string, 1)
	go func() {
		res, err := second.Exec(ctx, "select txid_current()").ReadAll()
		if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
			secondTxid <- fmt.Sprintf("error: %v", err)
			return
		}
		secondTxid <- string(res[0].Rows[0][0])
	}()
	ferrytest.Eventually(t, 20*time.Second, "the second client to queue", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.ClientsWaiting == 2 && p.Stat.Waiting == 2, nil
	})

	sent := make(chan error, 1)
	go func() { // (a write larger than the socket's buffers waits for the grant)
		first.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, err := first.Write(rest)
		sent <- err
	}()
	ferrytest.Eventually(t, 20*time.Second, "the loop to read what the first client sent", func() (bool, error) {
		return router.LoopQueuedReads(f.Server) > reads, nil
	})
	if p := f.Pool(t, "app"); p.Stat.Waiting != 2 {
		t.Fatalf("%d waiting for the server after the first client sent more; want both still queued", p.Stat.Waiting)
	}

	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	frames := answersAre(t, first, want)
	if err := <-sent; err != nil {
		t.Fatalf("the first client's write: %v", err)
	}
	firstTxid := dataRowValue(t, frames[2].body)
	other := <-secondTxid
	a, errA := strconv.ParseInt(firstTxid, 10, 64)
	b, errB := strconv.ParseInt(other, 10, 64)
	if errA != nil || errB != nil {
		t.Fatalf("transaction ids %q and %q", firstTxid, other)
	}
	if a > b {
		t.Fatalf("the second client's transaction (%d) ran before the first's (%d); want the first to keep its place", b, a)
	}
	return f, frames, handbacks
}

// dataRowValue is the first column of a DataRow body, as text.
func dataRowValue(t *testing.T, body []byte) string {
	t.Helper()
	if len(body) < 6 || binary.BigEndian.Uint16(body) < 1 {
		t.Fatalf("a DataRow without columns: %x", body)
	}
	n := int(int32(binary.BigEndian.Uint32(body[2:])))
	if n < 0 || 6+n > len(body) {
		t.Fatalf("a DataRow whose first column is NULL or cut: %x", body)
	}
	return string(body[6 : 6+n])
}

func TestQueryWaitTimeoutEndsAClientTheLoopQueuedTooLong(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	f, holder, queued := loopQueueSetup(t, ctx, "disable", false, func(cfg *configs.Config) {
		cfg.QueryWaitTimeout = configs.Duration(time.Second)
	})
	_, handbacks := loopCounters(t, f)
	queueings := router.LoopQueueings(f.Server)
	_, err := queued.Exec(ctx, "select 'too late'").ReadAll()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != protocol.SQLStateProtocolViolation || pe.Message != "query_wait_timeout" {
		t.Fatalf("the queued client got %v; want FATAL query_wait_timeout", err)
	}
	if _, after := loopCounters(t, f); after != handbacks || router.LoopQueueings(f.Server) != queueings+1 {
		t.Fatalf("the client did not wait in the loop (%d hand-backs, %d queueings); want the loop's timeout",
			after-handbacks, router.LoopQueueings(f.Server)-queueings)
	}
	// The holder's transaction goes on, and its server comes back clean.
	var n int
	if err := holder.QueryRow(ctx, "select 3").Scan(&n); err != nil || n != 3 {
		t.Fatalf("the holder after: %d, %v", n, err)
	}
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "the pool to settle", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Waiting == 0 && p.Stat.Active == 0 && f.Server.Snapshot().Clients == 1, nil
	})
}

func TestAServerReleasedByAGoroutineWakesTheLoopForItsQueuedClient(t *testing.T) {
	skipWithoutLoop(t)
	t.Parallel()
	ctx := testContext(t)
	// The holder is a TLS 1.2 client: its goroutine, not the loop, ends its
	// transaction and gives the server to the client queued in the loop,
	// which meanwhile waits in epoll with nothing else to do (no login
	// comes, so only the grant writes to its nudge pipe).
	f, holder, queued := loopQueueSetup(t, ctx, "disable", true, nil)
	queueings := router.LoopQueueings(f.Server)
	res := make(chan error, 1)
	go func() {
		_, err := queued.Exec(ctx, "select 'served'").ReadAll()
		res <- err
	}()
	waitQueued(t, f)
	nudges := router.LoopNudgeWakes(f.Server) // (any login's nudge is read by now)
	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second): // a hang guard
		t.Fatal("the queued client's query never ended")
	}
	if router.LoopQueueings(f.Server) != queueings+1 {
		t.Fatal("the client did not queue in the loop")
	}
	if router.LoopNudgeWakes(f.Server) == nudges {
		t.Fatal("the grant did not wake the loop from its wait; it was served at a later sweep")
	}
}
