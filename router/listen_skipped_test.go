package router_test

// End-to-end tests of a LISTEN the server never runs (skipped after an
// error earlier in its pipeline, or refused in a failed transaction): it
// subscribes nothing, and leaves alone a subscription that was there.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A LISTEN the server skips after an error earlier in its pipeline (a
// portal's, or a simple Query's before the Sync) subscribes nothing: the
// client, told only of the error, hears nothing of a LISTEN that never ran.
// It leaves as it was a subscription the client had before it, and a
// LISTEN of the channel that runs behind the Sync makes the subscription
// good, once. (interceptExecute subscribes the client as the Execute of a
// LISTEN goes to the server, before it is known whether the server runs
// it; listensSkipped undoes that.)
func TestAListenTheServerSkipsAfterAnErrorInItsPipelineSubscribesNothing(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name   string
		before bool                                       // the client LISTENs on the channel first
		send   func(ch string) []pgproto3.FrontendMessage // behind the failing statement
		syncs  int                                        // the ReadyForQuerys the client reads
		ends   string                                     // its transcript's end; no CommandComplete before it
		sent   int                                        // notifications sent on the channel
		want   int                                        // and received
	}{
		{
			name: "a portal", send: listenPortal, syncs: 1, ends: "E:22012 Z", sent: 1, want: 0,
		},
		{
			name: "a simple query before the sync", syncs: 1, ends: "E:22012 Z", sent: 1, want: 0,
			send: func(ch string) []pgproto3.FrontendMessage {
				return []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}, syncMsg()}
			},
		},
		{
			name: "a portal, the client subscribed before", before: true, send: listenPortal,
			syncs: 1, ends: "E:22012 Z", sent: 2, want: 2,
		},
		{
			name: "a portal, then one behind the sync", syncs: 2, ends: "E:22012 Z 1 2 C Z", sent: 1, want: 1,
			send: func(ch string) []pgproto3.FrontendMessage { return append(listenPortal(ch), listenPortal(ch)...) },
		},
	}
	t.Parallel()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eachRelayLoopListening(t, func(t *testing.T, f *ferrytest.Ferry, sender *notifier, loop bool) {
				ch := fmt.Sprintf("home_skipped%d_%v", i, loop)
				c := newRawClient(t, f.AppDSN())
				if tc.before {
					c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}})
				}
				c.send(append(failingStatement(), tc.send(ch)...)...)
				got := c.until(tc.syncs)
				if !strings.HasSuffix(got, tc.ends) || strings.Contains(strings.TrimSuffix(got, tc.ends), "C") {
					t.Fatalf("got %q, want the error, nothing of the skipped LISTEN, and it to end %q", got, tc.ends)
				}
				sender.notify(ch, tc.sent)
				if got := c.notifications(ch, 2*tc.sent, time.Second); got != tc.want {
					t.Fatalf("%d notifications sent, %d received; want %d", tc.sent, got, tc.want)
				}
			})
		})
	}
}

// listenPortal is a LISTEN of ch by an unnamed portal, and its Sync.
func listenPortal(ch string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{parse("", "LISTEN "+ch), bind(""), execMsg(), syncMsg()}
}

// In a failed transaction the server refuses the Parse of a LISTEN (the
// statement pgferry made an UNLISTEN of a channel no one listens on), as
// PostgreSQL refuses the LISTEN's, and skips its Bind and Execute: the
// client is not subscribed, as the simple protocol's LISTEN, which the
// server refuses, does not subscribe it either.
func TestAListenPortalInAFailedTransactionSubscribesNothing(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	eachRelayLoopListening(t, func(t *testing.T, f *ferrytest.Ferry, sender *notifier, loop bool) {
		ch := fmt.Sprintf("home_failed_%v", loop) // the other relay loop setting runs alongside
		c := newRawClient(t, f.AppDSN())
		c.send(&pgproto3.Query{String: "BEGIN"})
		c.until(1)
		c.send(&pgproto3.Query{String: "SELECT 1/(0*random())::int"})
		c.until(1)
		c.send(parse("", "LISTEN "+ch), bind(""), execMsg(), syncMsg())
		if got := c.until(1); got != "E:25P02 Z" {
			t.Fatalf("got %q, want the Parse refused in the failed transaction", got)
		}
		c.send(&pgproto3.Query{String: "ROLLBACK"})
		c.until(1)
		sender.notify(ch, 1)
		if got := c.notifications(ch, 1, time.Second); got != 0 {
			t.Fatalf("%d notifications on a channel whose LISTEN the server refused", got)
		}
	})
}

// A pinned client whose server listens on a channel itself, and whose
// LISTEN of it through pgferry's listener the server then skips, still
// gets the channel's notifications once: from its server.
func TestAPinnedClientsSkippedListenOfAChannelItsServerHearsKeepsItOnce(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	eachRelayLoopListening(t, func(t *testing.T, f *ferrytest.Ferry, sender *notifier, loop bool) {
		ch := fmt.Sprintf("home_pinned_skip_%v", loop) // the other relay loop setting runs alongside
		c := newRawClient(t, f.AppDSN())
		c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch + "; SELECT 1"}})
		c.send(failingStatement()...)
		c.send(parse("", "LISTEN "+ch), bind(""), execMsg(), syncMsg())
		if got := c.until(1); !strings.HasSuffix(got, "E:22012 Z") {
			t.Fatalf("got %q, want the error and nothing of the LISTEN", got)
		}
		sender.notify(ch, 2)
		if got := c.notifications(ch, 4, 2*time.Second); got != 2 {
			t.Fatalf("2 notifications sent, %d received", got)
		}
		// Its next LISTEN lets go of the skipped one's subscription first.
		c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}})
		sender.notify(ch, 1)
		if got := c.notifications(ch, 2, 2*time.Second); got != 1 {
			t.Fatalf("1 notification sent after a LISTEN that ran, %d received", got)
		}
	})
}

// A LISTEN the client sends once the error has come back, before its
// Sync, is skipped too (dropped at the Sync's ReadyForQuery).
func TestAListenSentAfterTheErrorCameBackSubscribesNothing(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	eachRelayLoopListening(t, func(t *testing.T, f *ferrytest.Ferry, sender *notifier, loop bool) {
		ch := fmt.Sprintf("home_after_%v", loop) // the other relay loop setting runs alongside
		c := newRawClient(t, f.AppDSN())
		c.send(append(failingStatement(), &pgproto3.Flush{})...)
		if got := c.transcript(func(w string) bool { return !strings.HasPrefix(w, "E:") }); got != "1 2 E:22012" {
			t.Fatalf("got %q, want the error", got)
		}
		c.send(parse("", "LISTEN "+ch), bind(""), execMsg(), syncMsg())
		if got := c.until(1); got != "Z" {
			t.Fatalf("got %q, want the Sync's ReadyForQuery alone", got)
		}
		sender.notify(ch, 1)
		if got := c.notifications(ch, 1, time.Second); got != 0 {
			t.Fatalf("%d notifications on a channel whose LISTEN the server skipped", got)
		}
	})
}

// forEachRelayLoop runs test with the relay loop off (the session's
// goroutine reads a pipeline whole, so the server's error comes after all
// of it was sent) and on (the loop may hand the rest of the pipeline over
// after the error came).
func forEachRelayLoop(t *testing.T, test func(t *testing.T, cfg *configs.Config)) {
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %v", loop), func(t *testing.T) {
			cfg := ferrytest.Config(t, cluster)
			cfg.RelayLoop, cfg.RelayLoopSet = loop, true
			test(t, cfg)
		})
	}
}

// eachRelayLoopListening runs test in parallel with the relay loop off and
// on (forEachRelayLoop), each time with a notifier and a pgferry of its
// own whose listener connection is up (warmListener). The two runs share
// the database: test names its channels after loop.
func eachRelayLoopListening(t *testing.T, test func(t *testing.T, f *ferrytest.Ferry, sender *notifier, loop bool)) {
	forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
		t.Parallel()
		sender := newNotifier(t)
		f := ferrytest.Start(t, cfg)
		warmListener(t, f)
		test(t, f, sender, cfg.RelayLoop)
	})
}

// failingStatement is an unnamed statement whose Execute fails with
// 22012 (division by zero), not at its Parse.
func failingStatement() []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{parse("", "SELECT 1/(0*random())::int"), bind(""), execMsg()}
}

// warmListener makes the pool's listener connection with another client's
// LISTEN, so that the client under test does not wait for its dial.
func warmListener(t *testing.T, f *ferrytest.Ferry) {
	t.Helper()
	warm := newRawClient(t, f.AppDSN())
	warm.request("home_warm", []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN home_warm"}})
}
