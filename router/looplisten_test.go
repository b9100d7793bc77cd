package router_test

// A LISTEN executed through a prepared statement waits for pgferry's
// listener connection (router/notify): the session's goroutine may wait,
// the relay loop must not, or every other client it serves waits too.
// Two things keep it off the loop: a session holding such a statement
// does not enter the loop (loopable), and the loop hands such an Execute
// back (loopServes). With neither, b waits here for the gate.

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/router"
)

func TestAPreparedListenThatWaitsForTheListenerConnectionStallsNoOtherClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// lost: the listener connection existed and was lost (its channel
		// had no subscriber left, so nothing re-established it); else the
		// LISTEN is the database's first.
		lost bool
	}{
		{name: "the listener's first connection"},
		{name: "a new listener connection after the last was lost", lost: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			aPreparedListenWaitsForTheListenerAlone(t, tc.lost)
		})
	}
}

// aPreparedListenWaitsForTheListenerAlone has client a run a LISTEN it
// prepared under a name (as pgx's statement cache and postgres.js do)
// while the listener's dial waits at a proxy's gate, and checks that
// client b is served meanwhile, then that a's LISTEN works.
func aPreparedListenWaitsForTheListenerAlone(t *testing.T, lost bool) {
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	proxy := startProxy(t, net.JoinHostPort(cluster.Host, strconv.Itoa(cluster.Port)))
	e := cfg.Databases["app"]
	e.Port = proxy.port() // the listener's dials too
	e.PoolSize = 3
	cfg.Databases["app"] = e
	f := ferrytest.Start(t, cfg)
	a := ferrytest.Connect(t, ctx, f.AppDSN())
	b := ferrytest.Connect(t, ctx, f.AppDSN())
	ctrl := ferrytest.Connect(t, ctx, cluster.SuperDSN(db))
	exec := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	const ch = "loop_listen_ch"

	// Two server connections, dialed while the proxy lets them through:
	// a's Bind holds one while its Execute waits for the listener, b
	// needs the other.
	_, err := a.Exec(ctx, "begin")
	exec("a: begin", err)
	_, err = b.Exec(ctx, "select 1")
	exec("b: select 1", err)
	_, err = a.Exec(ctx, "commit")
	exec("a: commit", err)
	if cfg.RelayLoop && router.RelayLoopBuilt {
		allIntoTheLoop(t, ctx, f, b.PgConn())
	}
	if lost {
		// Another client's LISTEN opens the listener connection; its
		// UNLISTEN leaves the connection without a channel.
		c := ferrytest.Connect(t, ctx, f.AppDSN())
		_, err = c.Exec(ctx, "LISTEN "+ch)
		exec("c: LISTEN", err)
		_, err = c.Exec(ctx, "UNLISTEN "+ch)
		exec("c: UNLISTEN", err)
	}

	// a prepares its LISTEN, then is a busy client.
	_, err = a.PgConn().Prepare(ctx, "listen_ch", "LISTEN "+ch, nil)
	exec("a: prepare LISTEN", err)
	for range 10 {
		_, err = a.Exec(ctx, "select 1")
		exec("a: select 1", err)
		_, err = b.Exec(ctx, "select 1")
		exec("b: select 1", err)
	}
	entries, handbacks := loopCounters(t, f)
	t.Logf("relay loop: %d entries, %d handbacks before a's LISTEN", entries, handbacks)

	// The listener's next connection waits at the gate.
	proxy.hold()
	if lost {
		n, err := queryInt(ctx, `select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query = 'UNLISTEN "`+ch+`"'`, db)
		if err != nil || n != 1 {
			t.Fatalf("terminated %d listener backends (%v); want 1", n, err)
		}
		ferrytest.Eventually(t, 10*time.Second, "pgferry to notice its listener connection is gone", func() (bool, error) {
			return strings.Contains(f.Logs(), "listener connection lost"), nil
		})
	}
	listened := make(chan error, 1)
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		_, err := a.PgConn().ExecPrepared(ctx, "listen_ch", nil, nil, nil).Close()
		listened <- err
	}()
	t.Cleanup(func() { proxy.open(); <-aDone }) // before a is closed
	select {
	case <-proxy.pending:
	case err := <-listened:
		t.Fatalf("a's LISTEN ended (%v) before the listener connection was dialed", err)
	case <-time.After(10 * time.Second):
		t.Fatal("pgferry did not dial a listener connection for a's LISTEN")
	}

	// Meanwhile b is served. (With the relay loop waiting for the
	// listener, b would wait for the gate: 10 s is a hang check, not a
	// timing bound.)
	answered := make(chan error, 1)
	bDone := make(chan struct{})
	go func() {
		defer close(bDone)
		_, err := b.Exec(ctx, "select 1")
		answered <- err
	}()
	t.Cleanup(func() { proxy.open(); <-bDone })
	select {
	case err := <-answered:
		exec("b: select 1 while a's LISTEN waits for the listener", err)
	case <-time.After(10 * time.Second):
		t.Fatal("b's select 1 waited for a's LISTEN: the relay loop waited for the listener connection")
	}
	select {
	case err := <-listened:
		t.Fatalf("a's LISTEN ended (%v) while its listener connection waited at the gate", err)
	default:
	}

	proxy.open()
	select {
	case err := <-listened:
		exec("a: LISTEN", err)
	case <-ctx.Done():
		t.Fatal("a's LISTEN did not end once the listener connected")
	}
	_, err = ctrl.Exec(ctx, "NOTIFY "+ch+", 'hello'")
	exec("NOTIFY", err)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	note, err := a.WaitForNotification(wctx)
	if err != nil || note.Channel != ch || note.Payload != "hello" {
		t.Fatalf("a's notification: %+v, %v", note, err)
	}
	assertNoPanic(t, f)
}
