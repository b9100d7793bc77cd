package router_test

// End-to-end tests of a channel a pinned client listens on both through
// its own server and through pgferry's listener: each notification
// reaches it once.

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A LISTEN among other statements of one Query runs on the client's
// server (and pins it); one alone is served by pgferry's listener. Either
// way round, a channel heard both ways reaches the client once; a channel
// its server alone listens on still reaches it; and UNLISTEN ends both.
func TestAPinnedClientHearingAChannelBothWaysGetsEachNotificationOnceInEitherOrder(t *testing.T) {
	t.Parallel()
	for i, via := range stateVia {
		for j, order := range []string{"listener first", "server first"} {
			t.Run(via.name+", "+order, func(t *testing.T) {
				t.Parallel()
				sender := newNotifier(t)
				f := ferrytest.Start(t, ferrytest.Config(t, cluster))
				// Channels of this subtest's own: the others run alongside
				// in the same database.
				ch := fmt.Sprintf("home_both%d_%d", i, j)
				own := fmt.Sprintf("home_own%d_%d", i, j) // only ever on the server
				c := newRawClient(t, f.AppDSN())
				onServer := []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch + "; LISTEN " + own + "; SELECT 1"}}
				if order == "listener first" {
					c.request(ch, via.send("LISTEN "+ch))
					c.request(ch, onServer)
				} else {
					c.request(ch, onServer)
					c.request(ch, via.send("LISTEN "+ch))
				}
				if n := f.Pool(t, "app").Counters.PinnedClients; n != 1 {
					t.Fatalf("%d clients pinned; want 1", n)
				}
				sender.notify(ch, 3)
				if got := c.notifications(ch, 6, 2*time.Second); got != 3 {
					t.Fatalf("3 notifications sent on a channel heard both ways, %d received", got)
				}
				sender.notify(own, 2)
				if got := c.notifications(own, 2, 10*time.Second); got != 2 {
					t.Fatalf("2 notifications sent on a channel only the server listens on, %d received", got)
				}
				c.request(ch, via.send("UNLISTEN "+ch))
				sender.notify(ch, 1)
				if got := c.notifications(ch, 1, time.Second); got != 0 {
					t.Fatalf("%d notifications after UNLISTEN", got)
				}
			})
		}
	}
}

// While pgferry's listener is down (its connection lost, and no new one
// can be had), a channel a pinned client hears both ways still reaches it
// from its own server; once the listener is back, each notification
// comes once again.
func TestAPinnedClientHearingAChannelBothWaysGetsItFromItsServerWhileTheListenerReconnects(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, db := configWithOwnDatabase(t)
	f := ferrytest.Start(t, cfg)
	sender := &notifier{t, ferrytest.Connect(t, ctx, cluster.DSN(db, ferrytest.User, ferrytest.Password))}
	ch := "home_reconnect"
	c := newRawClient(t, f.AppDSN())
	c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch + "; SELECT 1"}})
	c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}})

	// No new connection to the database: the listener cannot reconnect.
	if err := cluster.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS true") })
	listenerGone := "select count(*) from pg_stat_activity where datname = '" + db + "' and query ilike 'listen \"%'"
	if _, err := cluster.QueryInt(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = '"+db+"' and query ilike 'listen \"%'"); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := cluster.QueryInt(ctx, listenerGone)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the listener's server connection did not end")
		}
		time.Sleep(10 * time.Millisecond) // polling the server's view, no state of pgferry's
	}
	sender.notify(ch, 2)
	if got := c.notifications(ch, 2, 10*time.Second); got != 2 {
		t.Fatalf("2 notifications sent while the listener was down, %d received", got)
	}

	// Back: another client's LISTEN returns once the listener is up again.
	if err := cluster.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	warm := newRawClient(t, f.AppDSN())
	warm.request("home_reconnect_warm", []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN home_reconnect_warm"}})
	sender.notify(ch, 3)
	if got := c.notifications(ch, 6, 2*time.Second); got != 3 {
		t.Fatalf("3 notifications sent once the listener was back, %d received", got)
	}
}
