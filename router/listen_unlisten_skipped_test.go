package router_test

// End-to-end tests of an UNLISTEN the server never runs (skipped after an
// error earlier in its pipeline, or undone with its query's implicit
// transaction): the client keeps listening, as PostgreSQL keeps it.

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestAnUnlistenTheServerSkipsAfterAnErrorKeepsTheSubscription(t *testing.T) {
	tests := []struct {
		name     string
		unlisten func(ch string) []pgproto3.FrontendMessage
	}{
		{"portal", func(ch string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{parse("", "UNLISTEN "+ch), bind(""), execMsg(), syncMsg()}
		}},
		{"query before the sync", func(ch string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{&pgproto3.Query{String: "UNLISTEN " + ch}, syncMsg()}
		}},
		{"every channel", func(string) []pgproto3.FrontendMessage {
			return []pgproto3.FrontendMessage{parse("", "UNLISTEN *"), bind(""), execMsg(), syncMsg()}
		}},
	}
	sender := newNotifier(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
				sender.t = t
				f := ferrytest.Start(t, cfg)
				ch := "unlisten_skipped" + string(rune('a'+i))
				c := newRawClient(t, f.AppDSN())
				c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}})
				c.send(append(failingStatement(), tc.unlisten(ch)...)...)
				if got := c.until(1); !strings.HasSuffix(got, "E:22012 Z") || strings.Contains(got, "C") {
					t.Fatalf("got %q, want the error and nothing of the UNLISTEN", got)
				}
				sender.notify(ch, 2)
				if got := c.notifications(ch, 2, 10*time.Second); got != 2 {
					t.Fatalf("2 notifications sent to a client whose UNLISTEN the server skipped, %d received", got)
				}
			})
		})
	}
}

// An UNLISTEN among other statements of one Query is undone with the
// query's implicit transaction when a statement after it fails.
func TestAnUnlistenUndoneByAnErrorInItsQueryKeepsTheSubscription(t *testing.T) {
	t.Parallel()
	sender := newNotifier(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ch := "unlisten_undone"
	c := newRawClient(t, f.AppDSN())
	c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}})
	c.send(&pgproto3.Query{String: "UNLISTEN " + ch + "; SELECT 1/(0*random())::int"})
	if got := c.until(1); got != "C T E:22012 Z" {
		t.Fatalf("got %q, want the UNLISTEN's tag, then the error", got)
	}
	sender.notify(ch, 1)
	if got := c.notifications(ch, 1, 10*time.Second); got != 1 {
		t.Fatalf("1 notification sent to a client whose UNLISTEN was undone, %d received", got)
	}
}
