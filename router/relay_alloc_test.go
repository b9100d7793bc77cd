package router_test

import (
	"encoding/binary"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// TestRelayingTransactionsAllocatesNothingPerTransaction counts the heap
// allocations of the whole process (pgferry runs in it; the two clients
// here reuse their buffers) while two clients share one server connection,
// so that many transactions queue for it: one sends simple queries, the
// other Bind/Execute/Sync of a prepared statement.
//
// Not parallel: runtime.MemStats counts every goroutine of the test
// binary, and parallel tests start only after the sequential ones. It skips
// itself under -race; .ci/run runs it without.
func TestRelayingTransactionsAllocatesNothingPerTransaction(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; .ci/run runs this test without it")
	}
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1)
	// crypto/tls allocates on every Conn.Read (golang/go#53142): the
	// server connection is plain here so that pgferry's own count shows.
	db := cfg.Databases["app"]
	db.SSLMode = "disable"
	cfg.Databases["app"] = db
	f := ferrytest.Start(t, cfg)
	simple := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
	prepared := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))

	query := encode(t, &pgproto3.Query{String: "select 1"})
	var setup []byte
	for _, m := range []pgproto3.FrontendMessage{&pgproto3.Parse{Name: "s1", Query: "select $1::int"}, &pgproto3.Sync{}} {
		setup = append(setup, encode(t, m)...)
	}
	var bindExec []byte
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("42")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	} {
		bindExec = append(bindExec, encode(t, m)...)
	}
	buf := make([]byte, 8192)
	exchange(t, prepared, setup, buf)

	round := func() {
		sendRaw(t, simple, query)
		sendRaw(t, prepared, bindExec)
		awaitReady(t, simple, buf)
		awaitReady(t, prepared, buf)
	}
	for i := 0; i < 300; i++ { // warm up buffers, rings and pools
		round()
	}
	const rounds = 3000
	waitsBefore := f.Pool(t, "app").Stat.WaitCount
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < rounds; i++ {
		round()
	}
	runtime.ReadMemStats(&after)
	// The queued path must have been taken, or this measured only half of
	// the relay.
	waits := f.Pool(t, "app").Stat.WaitCount - waitsBefore
	if waits < rounds/10 {
		t.Fatalf("only %d of %d transactions queued for the server connection", waits, 2*rounds)
	}
	perTx := float64(after.Mallocs-before.Mallocs) / (2 * rounds)
	t.Logf("%d transactions (%d queued), %d allocations in the process (%.3f per transaction)", 2*rounds, waits, after.Mallocs-before.Mallocs, perTx)
	// Background work (the pool's janitor, the budget's ticker, the GC)
	// allocates a little over a few seconds; per message or per
	// transaction work would show as 1 or more.
	if perTx > 0.05 {
		t.Fatalf("relaying allocated %.3f times per transaction, want none", perTx)
	}
}

// exchange sends b and waits for ReadyForQuery.
func exchange(t *testing.T, c net.Conn, b, buf []byte) {
	t.Helper()
	sendRaw(t, c, b)
	awaitReady(t, c, buf)
}

// awaitReady reads c into buf until its last complete frame is
// ReadyForQuery, without allocating; an ErrorResponse fails the test.
func awaitReady(t *testing.T, c net.Conn, buf []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for {
		m, err := c.Read(buf[n:])
		if err != nil {
			t.Fatalf("read from pgferry: %v", err)
		}
		n += m
		for off := 0; off+5 <= n; {
			size := 1 + int(binary.BigEndian.Uint32(buf[off+1:]))
			if off+size > n {
				break
			}
			switch buf[off] {
			case 'E':
				t.Fatalf("error from pgferry: %q", buf[off:off+size])
			case 'Z':
				if off+size == n {
					return
				}
			}
			off += size
		}
		if n == len(buf) {
			t.Fatal("response larger than the test's buffer")
		}
	}
}
