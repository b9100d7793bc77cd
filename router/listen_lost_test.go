package router_test

// End-to-end tests of a LISTEN whose server connection is lost before it
// answers: the client is told the connection was lost and its transaction
// rolled back, and is not listening.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A LISTEN pipelined behind a query that ends its own server gets the
// error every request owed then gets (08006), and subscribes nothing: the
// client heard only that its LISTEN failed, as a LISTEN that got an error
// from PostgreSQL leaves the session not listening.
func TestAListenWhoseServerIsLostBeforeItAnswersSubscribesNothing(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name   string
		listen func(ch string) []pgproto3.FrontendMessage
	}{
		{"simple query", func(ch string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}}
		}},
		{"portal", func(ch string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{parse("", "LISTEN "+ch), bind(""), execMsg(), syncMsg()}
		}},
	}
	t.Parallel()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sender := newNotifier(t)
			cfg := ferrytest.Config(t, cluster)
			cfg.RelayLoop, cfg.RelayLoopSet = false, true // the whole pipeline sent before the server goes
			f := ferrytest.Start(t, cfg)
			warmListener(t, f)
			ch := "lost_listen" + string(rune('a'+i))
			c := newRawClient(t, f.AppDSN())
			c.send(append([]pgproto3.FrontendMessage{
				&pgproto3.Query{String: "SELECT pg_terminate_backend(pg_backend_pid())"},
			}, tc.listen(ch)...)...)
			if got := c.until(2); got != "T D:t E:08006 Z E:08006 Z" {
				t.Fatalf("got %q, want the lost connection's error for both requests", got)
			}
			sender.notify(ch, 1)
			if got := c.notifications(ch, 1, time.Second); got != 0 {
				t.Fatalf("%d notifications on a channel whose LISTEN got an error", got)
			}
		})
	}
}

// An UNLISTEN pipelined behind a query that ends its own server gets the
// lost connection's error and ends nothing, then or at a later answer: the
// client was told its transaction was rolled back.
func TestAnUnlistenWhoseServerIsLostBeforeItAnswersKeepsTheSubscription(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	sender := newNotifier(t)
	cfg := ferrytest.Config(t, cluster)
	cfg.RelayLoop, cfg.RelayLoopSet = false, true // the whole pipeline sent before the server goes
	f := ferrytest.Start(t, cfg)
	ch := "lost_unlisten"
	c := newRawClient(t, f.AppDSN())
	c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}})
	c.send(
		&pgproto3.Query{String: "SELECT pg_terminate_backend(pg_backend_pid())"},
		&pgproto3.Query{String: "UNLISTEN " + ch},
	)
	if got := c.until(2); got != "T D:t E:08006 Z E:08006 Z" {
		t.Fatalf("got %q, want the lost connection's error for both requests", got)
	}
	c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}})
	c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "COMMIT"}})
	sender.notify(ch, 1)
	if got := c.notifications(ch, 1, 10*time.Second); got != 1 {
		t.Fatalf("1 notification sent to a client whose UNLISTEN got an error, %d received", got)
	}
}
