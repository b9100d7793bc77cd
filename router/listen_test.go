package router_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestListeningClientsReceiveEveryNotificationOnTheirChannelsInTransactionMode(t *testing.T) {
	// Not parallel: beside the parallel LISTEN tests its 200 clients took
	// 10 to 35 times as long as alone (about 2 s under -race), holding a
	// slot of -parallel for longer than it saves.
	cfg := ferrytest.Config(t, cluster)
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)

	const clients, channels, perChannel = 200, 4, 5
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		c := ferrytest.Connect(t, ctx, f.AppDSN())
		// Every client listens on its own channel and on a channel it then
		// leaves, whose notifications it must not see.
		if _, err := c.Exec(ctx, fmt.Sprintf("LISTEN ch%d", i%channels)); err != nil {
			t.Fatalf("listen: %v", err)
		}
		if _, err := c.Exec(ctx, "LISTEN left"); err != nil {
			t.Fatalf("listen: %v", err)
		}
		if _, err := c.Exec(ctx, "UNLISTEN left"); err != nil {
			t.Fatalf("unlisten: %v", err)
		}
		// The session keeps working for ordinary transactions.
		var one int
		if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("query after listen: %v", err)
		}
		conns[i] = c
	}

	sender := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := sender.Exec(ctx, "select pg_notify('left', 'nobody')"); err != nil {
		t.Fatal(err)
	}
	for ch := 0; ch < channels; ch++ {
		for k := 0; k < perChannel; k++ {
			if _, err := sender.Exec(ctx, "NOTIFY ch"+fmt.Sprint(ch)+", 'payload "+fmt.Sprint(ch, "-", k)+" ✓'"); err != nil {
				t.Fatal(err)
			}
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := i % channels
			for k := 0; k < perChannel; k++ {
				n, err := c.WaitForNotification(ctx)
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
					return
				}
				want := fmt.Sprint("payload ", ch, "-", k, " ✓")
				if n.Channel != fmt.Sprint("ch", ch) || n.Payload != want {
					errs <- fmt.Errorf("client %d got %s/%q, want ch%d/%q", i, n.Channel, n.Payload, ch, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestListenersResubscribeAfterTheListenerConnectionIsLost(t *testing.T) {
	t.Parallel()
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	ctx := testContext(t)
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := c.Exec(ctx, "LISTEN resub"); err != nil {
		t.Fatal(err)
	}
	// Kill pgferry's listener connection on the server.
	n, err := cluster.QueryInt(ctx, `select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = $1 and query like 'LISTEN "resub"%'`, db)
	if err != nil || n != 1 {
		t.Fatalf("terminated %d listener backends (%v), want 1", n, err)
	}
	sender := ferrytest.Connect(t, ctx, f.AppDSN())
	// Notifications sent while it reconnects are lost (as for a session
	// whose connection breaks); keep sending until one arrives.
	for {
		if _, err := sender.Exec(ctx, "NOTIFY resub, 'again'"); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		note, err := c.WaitForNotification(wctx)
		wcancel()
		if err == nil {
			if note.Payload != "again" {
				t.Fatalf("payload %q", note.Payload)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatal("no notification after the listener connection was lost")
		}
	}
}

func TestAListenerWhoseNotificationsPileUpInALongTransactionIsDisconnectedAndItsServerFreed(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 2)
	f := ferrytest.Start(t, cfg)

	listener := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := listener.Exec(ctx, "LISTEN busy"); err != nil {
		t.Fatal(err)
	}
	// Inside a transaction the notifications wait in pgferry.
	if _, err := listener.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	var backend int
	if err := listener.QueryRow(ctx, "select pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}

	// 9 MiB of distinct notifications (PostgreSQL folds duplicates).
	sender := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := sender.Exec(ctx, "select pg_notify('busy', lpad(i::text, 7900, 'x')) from generate_series(1, 1200) i"); err != nil {
		t.Fatal(err)
	}

	var code, severity string
	ferrytest.Eventually(t, 20*time.Second, "the listener to be disconnected", func() (bool, error) {
		_, err := listener.Exec(ctx, "select 1")
		if err == nil {
			return false, nil
		}
		code, severity, _ = pgCode(err)
		return true, nil
	})
	if code != "54000" || severity != "FATAL" {
		t.Fatalf("got %s %s, want FATAL 54000 for the notification backlog", severity, code)
	}
	// The server it held was closed, which rolled its transaction back,
	// and the pool serves the next client.
	waitNoBusyBackends(t, ctx, db)
	ferrytest.Eventually(t, 10*time.Second, "the pool to have nothing lent", func() (bool, error) {
		return f.Pool(t, "app").Stat.Active == 0, nil
	})
	ferrytest.Eventually(t, 10*time.Second, "the server connection of the disconnected client to be closed", func() (bool, error) {
		n, err := queryInt(ctx, "select count(*) from pg_stat_activity where pid = $1", backend)
		return n == 0, err
	})
	assertServes(t, ctx, f)
	assertNoPanic(t, f)
}

func TestAListenerThatStopsReadingIsDisconnectedOnceItsBacklogPassesTheLimit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	f := ferrytest.Start(t, cfg)

	c := hijack(t, ferrytest.ConnectPgConn(t, ctx, f.AppDSN()))
	sendRaw(t, c, encode(t, &pgproto3.Query{String: "LISTEN flood"}))
	if _, _, err := readFrames(c, 10*time.Second, func(fr frame) bool { return fr.typ == 'Z' }); err != nil {
		t.Fatal(err)
	}
	// From here on the client reads nothing: pgferry's writes to it block
	// once the socket buffers are full, and the rest piles up in pgferry.
	sender := ferrytest.Connect(t, ctx, f.AppDSN())
	for range 4 {
		if _, err := sender.Exec(ctx, "select pg_notify('flood', lpad(i::text, 7900, 'x')) from generate_series(1, 1000) i"); err != nil {
			t.Fatal(err)
		}
	}
	ferrytest.Eventually(t, 20*time.Second, "the client that stopped reading to be disconnected", func() (bool, error) {
		return f.Server.Snapshot().Clients == 1, nil // the sender
	})
	assertServes(t, ctx, f)
	assertNoPanic(t, f)
}

func TestAListeningClientIsToldWhenAReloadEndsItsListen(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	listener := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := listener.Exec(ctx, "listen reload_channel"); err != nil {
		t.Fatal(err)
	}
	bystander := ferrytest.Connect(t, ctx, f.AppDSN())
	stale := ferrytest.Connect(t, ctx, f.AppDSN()) // idle until after the reload

	// A pool setting changes: the database's pools, and their listener, are
	// replaced. The listening client cannot keep its LISTEN; it is told so
	// instead of waiting in silence.
	next := *cfg
	next.Databases = maps.Clone(cfg.Databases)
	setPoolSize(&next, "app", cfg.Databases["app"].PoolSize+1)
	if err := f.Server.Reload(&next); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := listener.WaitForNotification(wctx)
	pe := expectPgError(t, err, "57P01")
	if pe.Severity != "FATAL" || !strings.Contains(pe.Message, "LISTEN ended") {
		t.Fatalf("the listening client got %s %q; want FATAL saying its LISTEN ended", pe.Severity, pe.Message)
	}

	// Other clients carry on with the new pools, and a new listener works.
	var n int
	if err := bystander.QueryRow(ctx, "select 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("a client that was not listening, after the reload: %d, %v", n, err)
	}
	again := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := again.Exec(ctx, "listen reload_channel"); err != nil {
		t.Fatal(err)
	}
	if _, err := bystander.Exec(ctx, "notify reload_channel, 'after'"); err != nil {
		t.Fatal(err)
	}
	got, err := again.WaitForNotification(wctx)
	if err != nil || got.Payload != "after" {
		t.Fatalf("a client listening after the reload: %v, %v", got, err)
	}

	// A client still on the replaced pools (it needed no server since)
	// that LISTENs now moves to the new ones: it shares their listener,
	// rather than open one on closed pools that nothing would close.
	if _, err := stale.Exec(ctx, "listen reload_channel"); err != nil {
		t.Fatalf("LISTEN from a client idle since before the reload: %v", err)
	}
	if _, err := bystander.Exec(ctx, "notify reload_channel, 'both'"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*pgx.Conn{"the client listening after the reload": again, "the client idle since before the reload": stale} {
		if got, err := c.WaitForNotification(wctx); err != nil || got.Payload != "both" {
			t.Fatalf("%s: %v, %v", name, got, err)
		}
	}
	listeners, err := cluster.QueryInt(ctx, "select count(*) from pg_stat_activity where datname = '"+db+"' and query ilike 'listen %'")
	if err != nil || listeners != 1 {
		t.Fatalf("%d listener connections on the server (%v); want the new pools' one only", listeners, err)
	}
}
