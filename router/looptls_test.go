package router_test

// TLS 1.3 clients served by the relay loop, as plain clients are in
// loop_test.go, loopsockets_test.go, loopend_test.go and loopqueue_test.go.
// This file holds the fixture the looptls tests share (newTLSLoop and the
// helpers around it) and the basics: which clients the loop serves, a slow
// reader, a request TLS holds past the read buffer, parking. What the loop
// hands back or waits for (session state, COPY, cancel, a busy server) is
// in looptls_session_test.go; how a TLS client of the loop ends (drops,
// KILL, reload, shutdown) in looptls_end_test.go. Each test checks that
// its client spoke TLS 1.3 and was in the loop when it mattered.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/tls13"
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

// skipWithoutTLS13Loop skips where the relay loop is not built or does not
// carry TLS records (skipWithoutLoop, skipWithoutTLS13).
func skipWithoutTLS13Loop(t *testing.T) {
	t.Helper()
	skipWithoutLoop(t)
	skipWithoutTLS13(t)
}

// startTLSLoop starts pgferry with the relay loop on, poolSize server
// connections for "app" (reached without TLS) and TLS required of clients.
// It returns the configuration it started with and the server database.
func startTLSLoop(t *testing.T, poolSize int) (f *ferrytest.Ferry, cfg *configs.Config, db string) {
	t.Helper()
	cfg, db = loopTestConfig(t, "disable", poolSize)
	offerClientTLS(cfg, "require")
	return ferrytest.Start(t, cfg), cfg, db
}

// tlsLoop is a TLS 1.3 client in the relay loop of a pgferry it was the
// first client of, as newTLSLoop left them.
type tlsLoop struct {
	ctx  context.Context // the test's (testContext)
	f    *ferrytest.Ferry
	cfg  *configs.Config // what f started with
	db   string          // the server database behind "app"
	conn *pgx.Conn
}

// newTLSLoop starts pgferry as startTLSLoop does, connects a TLS 1.3 pgx
// client and runs queries until it is in the relay loop.
func newTLSLoop(t *testing.T, poolSize int) *tlsLoop {
	t.Helper()
	ctx := testContext(t)
	f, cfg, db := startTLSLoop(t, poolSize)
	conn := connectTLS13(t, ctx, f)
	intoTheLoop(t, ctx, f, conn)
	return &tlsLoop{ctx: ctx, f: f, cfg: cfg, db: db, conn: conn}
}

// newTLSLoopPgConn is newTLSLoop for a pgconn client, which runs at least
// three queries on its way into the loop. It returns the test's context,
// pgferry, the server database and the client.
func newTLSLoopPgConn(t *testing.T, poolSize int) (ctx context.Context, f *ferrytest.Ferry, db string, pc *pgconn.PgConn) {
	t.Helper()
	ctx = testContext(t)
	f, _, db = startTLSLoop(t, poolSize)
	pc = connectTLS13PgConn(t, ctx, f)
	pgConnInLoop(t, ctx, f, pc, 1, 3)
	return ctx, f, db, pc
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
func dropTCP(t *testing.T, c net.Conn) {
	t.Helper()
	if err := tls13Of(t, c).NetConn().Close(); err != nil {
		t.Fatal(err)
	}
}

// intoTheLoop runs queries on conn, the only client of f, until it is in
// the relay loop (its session may have entered it at login, and been
// handed back since), failing the test if it never is.
func intoTheLoop(t *testing.T, ctx context.Context, f *ferrytest.Ferry, conn *pgx.Conn) {
	t.Helper()
	for i := 0; ; i++ {
		st := loopStateOf(t, f)
		if st.theLoops() {
			return
		}
		if i == 1000 {
			t.Fatalf("the client never entered the relay loop (%s)", st)
		}
		if _, err := conn.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
	}
}

// pgConnInLoop runs "select 1" on pc, at least min times and until the
// relay loop's entry count reaches entries (pc's session entered it),
// failing the test if it never does.
func pgConnInLoop(t *testing.T, ctx context.Context, f *ferrytest.Ferry, pc *pgconn.PgConn, entries uint64, min int) {
	t.Helper()
	for i := 0; ; i++ {
		if n, _ := loopCounters(t, f); n >= entries && i >= min {
			return
		}
		if i == 1000 {
			t.Fatal("the client never entered the relay loop")
		}
		if _, err := pc.Exec(ctx, "select 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
}

// inLoopNow fails the test unless the only client of f is the relay
// loop's now (loopState.theLoops). It returns the loop's counters.
func inLoopNow(t *testing.T, f *ferrytest.Ferry, when string) (entries, handbacks uint64) {
	t.Helper()
	st := loopStateOf(t, f)
	if !st.theLoops() {
		t.Fatalf("%s: %s; want the client in the relay loop", when, st)
	}
	return st.entries, st.handbacks
}

// loopState is what tells where the only client of a pgferry is: the
// relay loop's counters for "app" (loopCounters), the sessions of the loop
// its sweep parked (router.LoopSettles) and the clients parked now.
type loopState struct {
	entries, handbacks, settles uint64
	parked                      int
}

// loopStateOf reads f's loopState, again until two readings agree (a
// sweep that parks the client between two of the numbers would otherwise
// read as a client nowhere).
func loopStateOf(t *testing.T, f *ferrytest.Ferry) loopState {
	t.Helper()
	read := func() loopState {
		var st loopState
		st.settles = router.LoopSettles(f.Server)
		st.entries, st.handbacks = loopCounters(t, f)
		st.parked = f.Server.Snapshot().ParkedClients
		return st
	}
	for st := read(); ; {
		again := read()
		if again == st {
			return st
		}
		st = again
	}
}

// theLoops reports whether the relay loop serves the client's next
// request: the client is in the loop (it entered it once more than it was
// handed back or parked by the loop's sweep) or parked (the loop adopts a
// parked client when it speaks). A client of the loop that sends nothing
// for a sweep interval is parked (settle); the loop counts an entry again
// when it adopts it, with no hand-back in between, so entries less
// hand-backs alone tell nothing once that happened: a slow machine lets
// it happen between any two requests.
func (st loopState) theLoops() bool {
	switch int64(st.entries) - int64(st.handbacks) - int64(st.settles) {
	case 1:
		return st.parked == 0
	case 0:
		return st.parked == 1
	}
	return false
}

func (st loopState) String() string {
	return fmt.Sprintf("%d entries, %d hand-backs, %d sessions of the loop parked by its sweep, %d parked now",
		st.entries, st.handbacks, st.settles, st.parked)
}

// loopCountersAre fails the test unless sessions of "app" entered the
// relay loop entries times and were handed back handbacks times; when says
// at what point, and why those counts. entries counts the entries the
// test brings about, not those of clients coming back from a sweep that
// parked them while the test did not wait for it (sweepReturns): a slow
// machine lets a client of the loop send nothing for a sweep interval
// between any two of a test's steps. A sweep the test waits for itself
// is such a return too: its entry is not in entries.
func loopCountersAre(t *testing.T, f *ferrytest.Ferry, entries, handbacks uint64, when string) {
	t.Helper()
	st := loopStateOf(t, f)
	if e := st.entries - st.sweepReturns(); e != entries || st.handbacks != handbacks {
		t.Fatalf("%s: %d entries and %d hand-backs; want %d and %d (%s)", when, e, st.handbacks, entries, handbacks, st)
	}
}

// sweepReturns is how many clients the loop's sweep parked came back to
// it since, each with an entry as the loop adopted it: the parkings less
// the clients parked now, each taken for one the sweep parked (the
// callers' clients are the loop's, or on a goroutine that does not park
// them while the test asserts).
func (st loopState) sweepReturns() uint64 {
	if st.settles <= uint64(st.parked) {
		return 0
	}
	return st.settles - uint64(st.parked)
}

// queryRower is what runs a query for one row: a *pgx.Conn or a pgx.Tx.
type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// assertSelects runs "select n" on q, failing the test unless it returns
// n; who names q in the failure.
func assertSelects(t *testing.T, ctx context.Context, q queryRower, n int, who string) {
	t.Helper()
	var got int
	if err := q.QueryRow(ctx, "select "+strconv.Itoa(n)).Scan(&got); err != nil || got != n {
		t.Fatalf("%s: %d, %v; want %d", who, got, err, n)
	}
}

// servesQueries runs n queries "select $1::int" on conn, failing the test
// unless each returns its number; when says whose or at what point.
func servesQueries(t *testing.T, ctx context.Context, conn *pgx.Conn, n int, when string) {
	t.Helper()
	for i := 0; i < n; i++ {
		var got int
		if err := conn.QueryRow(ctx, "select $1::int", i).Scan(&got); err != nil || got != i {
			t.Fatalf("query %d %s: %d, %v", i, when, got, err)
		}
	}
}

// eventuallyPool waits until cond holds of f's pool for "app".
func eventuallyPool(t *testing.T, f *ferrytest.Ferry, what string, cond func(p router.PoolSnapshot) bool) {
	t.Helper()
	ferrytest.Eventually(t, 20*time.Second, what, func() (bool, error) {
		return cond(f.Pool(t, "app")), nil
	})
}

func TestATLS13ClientIsServedByTheRelayLoopInBothProtocols(t *testing.T) {
	skipWithoutTLS13Loop(t)
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
	f, _, _ := startTLSLoop(t, 2)
	cc, err := pgx.ParseConfig(clientDSN(f, true))
	if err != nil {
		t.Fatal(err)
	}
	cc.TLSConfig.MaxVersion = tls.VersionTLS12 // crypto/tls carries its records
	servesQueries(t, ctx, ferrytest.ConnectConfig(t, ctx, cc), 20, "of the TLS 1.2 client")
	if entries, _ := loopCounters(t, f); entries != 0 {
		t.Fatalf("a TLS 1.2 client entered the relay loop %d times; want never", entries)
	}
}

func TestTheRelayLoopWaitsForASlowTLSClientWhoseRecordsArriveWhole(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutTLS13Loop(t)
	t.Parallel()
	// 40 MB to a client that stops reading: its socket takes records in
	// part, and the loop sends the rest of each before anything else.
	theRelayLoopWaitsForASlowClient(t, "disable", true)
}

func TestARequestTLSHoldsPastTheReadBufferIsServedWithoutWaitingForTheSocket(t *testing.T) {
	skipWithoutTLS13Loop(t)
	t.Parallel()
	// Into the loop, and on: after a transaction whose client sent
	// nothing more, the loop waits for the next requests without first
	// reading (loopSkipReads).
	_, f, _, conn := newTLSLoopPgConn(t, 1)

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
	loopCountersAre(t, f, 1, 0, "after both queries (the loop serves both)")
}

func TestAnIdleTLSClientOfTheLoopIsParkedAndComesBackWhenItTalks(t *testing.T) {
	skipWithoutTLS13Loop(t)
	skipWithoutParking(t)
	t.Parallel()
	l := newTLSLoop(t, 5) // (ferrytest's default_pool_size)
	ctx, f, conn := l.ctx, l.f, l.conn
	ferrytest.Eventually(t, parkWait, "the idle TLS client of the loop to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	// Its records' keys were parked with it; the loop serves its next
	// query with them, and ends it when it leaves.
	servesQueries(t, ctx, conn, 3, "of the parked TLS client")
	if router.LoopSettles(f.Server) == 0 {
		t.Fatal("the client was parked, and not by the loop's sweep")
	}
	loopCountersAre(t, f, 1, 0, "after the parked TLS client's queries (the loop served them, its entries back from the sweep not counted)")
	theLoopEnds(t, f, "a TLS client of the loop that sent Terminate", func() error { return conn.Close(ctx) })
}

// The sweep parks a client of the loop that sends nothing for a sweep
// interval, and the loop counts an entry again when it adopts it, with no
// hand-back in between: where the client is must not be read from entries
// less hand-backs (loopState.theLoops). A slow machine parks a client
// between any two requests (COPY FROM STDIN's test failed so: its client,
// parked while the test built 4 MB of rows, never came back "into the
// loop" as those counters had it).
func TestATLSClientTheSweepParkedIsFoundInTheLoopAfterAHandBack(t *testing.T) {
	skipWithoutTLS13Loop(t)
	skipWithoutParking(t)
	t.Parallel()
	l := newTLSLoop(t, 1)
	ctx, f, conn := l.ctx, l.f, l.conn
	settles := router.LoopSettles(f.Server)
	ferrytest.Eventually(t, parkWait, "the idle TLS client of the loop to be parked", func() (bool, error) {
		return f.Server.Snapshot().ParkedClients == 1, nil
	})
	if router.LoopSettles(f.Server) != settles+1 {
		t.Fatal("the client was parked, but not by the loop's sweep")
	}
	inLoopNow(t, f, "parked")
	servesQueries(t, ctx, conn, 3, "of the parked TLS client")
	entries, handbacks := inLoopNow(t, f, "after the parked client spoke (adopted)")

	// A SET: handed back to the goroutine, which brings it back.
	if _, err := conn.Exec(ctx, "set search_path = loop_a, public"); err != nil {
		t.Fatal(err)
	}
	if _, h := loopCounters(t, f); h != handbacks+1 {
		t.Fatalf("%d hand-backs for the SET; want 1", h-handbacks)
	}
	intoTheLoop(t, ctx, f, conn)
	if e, _ := loopCounters(t, f); e == entries {
		t.Fatal("the client never came back to the loop after the SET")
	}
	assertSelects(t, ctx, conn, 7, "the client back in the loop")
	inLoopNow(t, f, "after a query back in the loop")
}
