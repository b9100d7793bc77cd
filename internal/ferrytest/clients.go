package ferrytest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgferry/pgferry/router"
)

// Connect connects to dsn with pgx and closes the connection when the test
// ends. A failed connection fails the test.
func Connect(t testing.TB, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return ConnectConfig(t, ctx, cc)
}

// ConnectConfig is Connect for a configuration the test adjusted first
// (query exec mode, runtime parameters, notice handler, ...).
func ConnectConfig(t testing.TB, ctx context.Context, cc *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatalf("connect with pgx: %v", err)
	}
	closeAtEnd(t, conn.Close)
	return conn
}

// ConnectPgConn is Connect at pgx's lower level, pgconn, for tests that
// drive the protocol message by message or take over the socket.
func ConnectPgConn(t testing.TB, ctx context.Context, dsn string) *pgconn.PgConn {
	t.Helper()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect with pgconn: %v", err)
	}
	closeAtEnd(t, pc.Close)
	return pc
}

// closeAtEnd calls close when the test ends, giving it 5 seconds.
func closeAtEnd(t testing.TB, close func(context.Context) error) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = close(ctx)
	})
}

// Eventually polls cond every 20ms until it returns true without an error,
// and fails the test once timeout has passed, naming what it waited for and
// the last error cond returned. cond runs on the test's goroutine, so it
// may fail the test itself.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		<-tick.C
	}
}

// Pool returns the current snapshot of the pool serving the client-facing
// database (the first one, should several users have a pool there). It
// fails the test when there is none.
func (f *Ferry) Pool(t testing.TB, database string) router.PoolSnapshot {
	t.Helper()
	for _, p := range f.Server.Snapshot().Pools {
		if p.Database == database {
			return p
		}
	}
	t.Fatalf("no pool for database %s", database)
	return router.PoolSnapshot{}
}
