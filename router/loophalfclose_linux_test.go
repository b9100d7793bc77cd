//go:build linux && !pgferry_nopark

package router_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/protocol"
	"github.com/pgferry/pgferry/router"
)

// A client that shuts down its sending side (shutdown(SHUT_WR)) while it
// waits for a server looks, to pgferry, like one that closed its socket:
// both are an EOF after the bytes. No PostgreSQL driver half-closes; a
// client that gave up waiting (its own timeout) and closed its socket is
// common under overload. So the relay loop, which sees the hang-up while
// the client waits (EPOLLRDHUP, even behind bytes it has not read), lets
// it go at once and gives its place to the next, whatever it sent: its
// request never takes a server. A goroutine that queued the client cannot
// see an EOF behind unread bytes: it finds out at the grant, and only if
// the client sent nothing after the request it queued with
// (waitForServer); one that sent more is served, and ends at the EOF.

// halfCloseCase is what a client sends, beginning with the request it
// queues with, before it shuts down its sending side; want is what it must
// read back before pgferry closes the connection ("none": it is let go).
type halfCloseCase struct {
	name string
	send func(t *testing.T) []byte
	want string
	// check, if set, looks further at the answers of a client served
	// (their first DataRow is its txid_current(), which the test checks).
	check func(t *testing.T, frames []frame)
}

// bigQuery is a query larger than a read buffer, and bigQueryAnswer its
// answer: the relay loop holds only 8 KiB of what a queued client sends.
var (
	bigQuery       = "select length('" + strings.Repeat("x", 3*protocol.BufferSize) + "')"
	bigQueryAnswer = strconv.Itoa(3 * protocol.BufferSize)
)

var halfCloseCases = []halfCloseCase{
	{
		name: "an extended-protocol request",
		send: func(t *testing.T) []byte {
			b := encode(t, &pgproto3.Parse{Query: "select txid_current()"})
			b = append(b, encode(t, &pgproto3.Bind{})...)
			b = append(b, encode(t, &pgproto3.Describe{ObjectType: 'P'})...)
			b = append(b, encode(t, &pgproto3.Execute{})...)
			return append(b, encode(t, &pgproto3.Sync{})...)
		},
		want: "1 2 T D C Z",
	},
	{
		name: "two simple queries",
		send: func(t *testing.T) []byte {
			return protocol.AppendQuery(protocol.AppendQuery(nil, "select txid_current()"), "select 42")
		},
		want: "T D C Z T D C Z",
		check: func(t *testing.T, frames []frame) {
			if got := dataRowValue(t, frames[5].body); got != "42" {
				t.Fatalf("the second query returned %s; want 42", got)
			}
		},
	},
	{
		// One transaction, so one loan: a request left for a second loan
		// would wait alone behind the third client, and a goroutine that
		// queued it finds the EOF after it (see a lone simple query).
		name: "a transaction larger than the read buffer",
		send: func(t *testing.T) []byte {
			b := protocol.AppendQuery(nil, "begin")
			b = protocol.AppendQuery(b, "select txid_current()")
			b = protocol.AppendQuery(b, bigQuery)
			return protocol.AppendQuery(b, "commit")
		},
		want: "C Z T D C Z T D C Z C Z",
		check: func(t *testing.T, frames []frame) {
			if got := dataRowValue(t, frames[7].body); got != bigQueryAnswer {
				t.Fatalf("the large query returned %s; want %s", got, bigQueryAnswer)
			}
		},
	},
	{
		name: "a lone simple query",
		send: func(t *testing.T) []byte { return protocol.AppendQuery(nil, "select 'never run'") },
		want: "none",
	},
	{
		name: "a Parse without the rest of its request",
		send: func(t *testing.T) []byte { return encode(t, &pgproto3.Parse{Query: "select 'never run'"}) },
		want: "none",
	},
}

func TestAClientThatHangsUpWhileTheLoopQueuesItGivesUpItsPlaceAtOnceWhateverItSent(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	skipWithoutLoop(t)
	t.Parallel()
	for _, tc := range halfCloseCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			halfClosesWhileQueued(t, true, tc)
		})
	}
}

func TestAClientThatHalfClosesWhileAGoroutineQueuesItIsServedIfItSentMoreThanItsRequest(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	for _, tc := range halfCloseCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			halfClosesWhileQueued(t, false, tc)
		})
	}
}

// halfClosesWhileQueued runs tc with the relay loop on (loop) or off: with
// one server connection, held by a client's open transaction, a client
// sends tc's bytes, waits for the server and shuts down its sending side.
// A third client then queues behind it, and the transaction ends. The
// half-closed client must read tc.want (in the loop: nothing) and then
// EOF, ahead of the third client if it was served; the server ends back
// in the pool, clean.
func halfClosesWhileQueued(t *testing.T, loop bool, tc halfCloseCase) {
	if loop {
		tc.want, tc.check = "none", nil
	}
	ctx := testContext(t)
	f, holder, pc, behind := halfCloseSetup(t, ctx, loop)
	_, handbacks := loopCounters(t, f)
	queueings := router.LoopQueueings(f.Server)
	destroyed := f.Pool(t, "app").Stat.Destroyed

	c, ok := hijack(t, pc).(*net.TCPConn)
	if !ok {
		t.Fatal("the client's connection is not a TCP connection")
	}
	sendRaw(t, c, tc.send(t))
	waitQueued(t, f)
	if loop {
		if router.LoopQueueings(f.Server) != queueings+1 {
			t.Fatal("the client queued on its goroutine, not in the relay loop")
		}
		if _, after := loopCounters(t, f); after != handbacks {
			t.Fatal("the relay loop handed the queued client back to a goroutine")
		}
	}
	shutWrite(t, c)

	served := tc.want != "none"
	if loop && !served {
		ferrytest.Eventually(t, 20*time.Second, "the client to be let go and give up its place", func() (bool, error) {
			p := f.Pool(t, "app")
			return p.Stat.Waiting == 0 && p.ClientsWaiting == 0 && f.Server.Snapshot().Clients == 2, nil
		})
	}
	// The hang-up was reported to pgferry's socket before the third
	// client sends (shutWrite), and epoll reports events in the order
	// they came: once the third client waits, the loop has taken the
	// hang-up, and the half-closed client waits too if it kept its place.
	// The grant that commit brings comes later still.
	behindTxid := make(chan string, 1)
	// A test that fails before it reads behindTxid must not leave the
	// query running on behind as its connection closes (a data race in
	// pgconn, which fails every test running at the time): the cleanup,
	// run before behind's own, stops it and waits for it.
	bctx, stop := context.WithCancel(ctx)
	behindDone := make(chan struct{})
	t.Cleanup(func() { stop(); <-behindDone })
	go func() {
		defer close(behindDone)
		res, err := behind.Exec(bctx, "select txid_current()").ReadAll()
		if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
			behindTxid <- "error: " + errString(err)
			return
		}
		behindTxid <- string(res[0].Rows[0][0])
	}()
	waiting, what := 1, "the third client to queue"
	if served || !loop {
		waiting, what = 2, "the third client to queue behind the half-closed one, which keeps its place"
	}
	ferrytest.Eventually(t, 20*time.Second, what, func() (bool, error) {
		p := f.Pool(t, "app")
		return p.ClientsWaiting == waiting && p.Stat.Waiting == waiting, nil
	})
	if loop {
		if _, after := loopCounters(t, f); after != handbacks {
			t.Fatal("the relay loop handed the half-closed client back to a goroutine while it waited")
		}
	}

	if _, err := holder.Exec(ctx, "commit"); err != nil {
		t.Fatal(err)
	}
	frames, closed, err := readFrames(c, 20*time.Second, nil)
	if got := describe(frames); !closed || got != tc.want {
		t.Fatalf("the half-closed client read %s, then %v; want %s, then EOF", got, err, tc.want)
	}
	other := <-behindTxid
	if served {
		if tc.check != nil {
			tc.check(t, frames)
		}
		first := firstDataRow(t, frames)
		a, errA := strconv.ParseInt(first, 10, 64)
		b, errB := strconv.ParseInt(other, 10, 64)
		if errA != nil || errB != nil {
			t.Fatalf("transaction ids %q and %q", first, other)
		}
		if a > b {
			t.Fatalf("the third client's transaction (%d) ran before the half-closed client's (%d); want it to keep its place", b, a)
		}
	} else if _, err := strconv.ParseInt(other, 10, 64); err != nil {
		t.Fatalf("the third client's query: %s", other)
	}
	ferrytest.Eventually(t, 20*time.Second, "the server to be idle in the pool and the client gone", func() (bool, error) {
		p := f.Pool(t, "app")
		return p.Stat.Idle == 1 && p.Stat.Active == 0 && p.Stat.Waiting == 0 && f.Server.Snapshot().Clients == 2, nil
	})
	if n := f.Pool(t, "app").Stat.Destroyed; n != destroyed {
		t.Fatalf("%d server connections destroyed; want the server returned clean", n-destroyed)
	}
}

// halfCloseSetup starts pgferry with one server connection and the relay
// loop on (loop) or off, and returns a client holding that connection in
// an open transaction and two more clients, all three in the loop if it
// is on.
func halfCloseSetup(t *testing.T, ctx context.Context, loop bool) (f *ferrytest.Ferry, holder *pgx.Conn, a, b *pgconn.PgConn) {
	t.Helper()
	cfg, _ := loopTestConfig(t, "disable", 1)
	cfg.RelayLoop = loop
	f = ferrytest.Start(t, cfg)
	holder = ferrytest.Connect(t, ctx, f.AppDSN())
	a = ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	b = ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	if loop {
		allIntoTheLoop(t, ctx, f, holder.PgConn(), a, b)
	}
	if _, err := holder.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "select 1"); err != nil { // the server is linked from here
		t.Fatal(err)
	}
	return f, holder, a, b
}

// shutWrite shuts down c's sending side and waits until pgferry's end has
// acknowledged the FIN (c is then in FIN_WAIT2, or CLOSE once pgferry
// closed too: a time-wait socket stands in for it from there): the kernel
// has reported the hang-up to pgferry's socket before anything the test
// sends next.
func shutWrite(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 10*time.Second, "pgferry to acknowledge the client's FIN", func() (bool, error) {
		var state [1]byte // struct tcp_info begins with tcpi_state
		n := uint32(len(state))
		var errno syscall.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
				uintptr(unsafe.Pointer(&state[0])), uintptr(unsafe.Pointer(&n)), 0)
		}); err != nil {
			return false, err
		}
		if errno != 0 {
			return false, errno
		}
		return state[0] == tcpFinWait2 || state[0] == tcpClose, nil
	})
}

// TCP states, as Linux numbers them (include/net/tcp_states.h).
const (
	tcpFinWait2 = 5
	tcpClose    = 7
)

// firstDataRow is the first column of the first DataRow among frames.
func firstDataRow(t *testing.T, frames []frame) string {
	t.Helper()
	for _, fr := range frames {
		if fr.typ == 'D' {
			return dataRowValue(t, fr.body)
		}
	}
	t.Fatalf("no DataRow in %s", describe(frames))
	return ""
}

// errString is err's text, or "none".
func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
