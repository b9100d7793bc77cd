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
	sender := newNotifier(t)
	for i, via := range stateVia {
		for _, order := range []string{"listener first", "server first"} {
			t.Run(via.name+", "+order, func(t *testing.T) {
				sender.t = t
				f := ferrytest.Start(t, ferrytest.Config(t, cluster))
				ch := fmt.Sprintf("home_both%d", i)
				own := fmt.Sprintf("home_own%d", i) // only ever on the server
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
