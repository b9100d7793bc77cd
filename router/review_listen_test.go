package router_test

// Review tests: defects found in LISTEN for a client tied to its server.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A LISTEN in a query of several statements pins the client and runs on
// its server (pinListenInSeveral); a later LISTEN of the same channel alone
// goes to pgferry's listener (listenLinked). The channel then has two
// homes, and each notification reaches the client twice, where PostgreSQL
// delivers it once.
func TestReviewAPinnedClientListeningTwiceOnAChannelGetsEachNotificationOnce(t *testing.T) {
	sender := newNotifier(t)
	for i, via := range stateVia {
		t.Run(via.name, func(t *testing.T) {
			sender.t = t
			f := ferrytest.Start(t, ferrytest.Config(t, cluster))
			ch := fmt.Sprintf("review_dup%d", i)
			c := newRawClient(t, f.AppDSN())
			c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch + "; SELECT 1"}})
			if n := f.Pool(t, "app").Counters.PinnedClients; n != 1 {
				t.Fatalf("%d clients pinned; want the client pinned by its LISTEN in a query of several", n)
			}
			c.request(ch, via.send("LISTEN "+ch))
			sender.notify(ch, 1)
			if got := c.notifications(ch, 2, 2*time.Second); got != 1 {
				t.Fatalf("one notification sent, %d received", got)
			}
		})
	}
}

// interceptExecute subscribes the client as the Execute of a LISTEN goes
// to the server, before it is known whether the server runs it: after an
// error earlier in the pipeline the server skips to the Sync, the client
// gets only that error (its LISTEN never ran, as PostgreSQL tells it), yet
// pgferry delivers the channel's notifications. (The simple protocol's
// LISTEN in a failed transaction goes to the server instead: listenLinked.)
func TestReviewAListenSkippedAfterAnErrorInItsPipelineSubscribesNothing(t *testing.T) {
	sender := newNotifier(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.RelayLoop, cfg.RelayLoopSet = false, true // the whole pipeline read by the session goroutine
	f := ferrytest.Start(t, cfg)
	ch := "review_skipped"
	// Another client's LISTEN makes the pool's listener connection first.
	warm := newRawClient(t, f.AppDSN())
	warm.request("review_warm", []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN review_warm"}})
	c := newRawClient(t, f.AppDSN())
	c.send(
		parse("", "SELECT 1/(0*random())::int"), bind(""), execMsg(), // (fails at its Execute)
		parse("", "LISTEN "+ch), bind(""), execMsg(),
		syncMsg(),
	)
	if got := c.until(1); !strings.HasSuffix(got, "E:22012 Z") || strings.Contains(got, "C") {
		t.Fatalf("got %q, want the first statement's error and nothing of the LISTEN", got)
	}
	sender.notify(ch, 1)
	if got := c.notifications(ch, 1, time.Second); got != 0 {
		t.Fatalf("%d notifications on a channel whose LISTEN the server skipped", got)
	}
}
