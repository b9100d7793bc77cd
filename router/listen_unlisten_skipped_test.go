package router_test

// End-to-end tests of an UNLISTEN the server never runs (skipped after an
// error earlier in its pipeline, or undone with its query's implicit
// transaction): the client keeps listening, as PostgreSQL keeps it.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

func TestAnUnlistenTheServerSkipsAfterAnErrorKeepsTheSubscription(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
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
	t.Parallel()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
				t.Parallel()
				sender := newNotifier(t)
				f := ferrytest.Start(t, cfg)
				ch := fmt.Sprintf("unlisten_skipped%c_%v", 'a'+i, cfg.RelayLoop)
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

// In the extended protocol an implicit transaction runs up to the Sync:
// an error after an UNLISTEN's portal, before the Sync, rolls the
// UNLISTEN back with the rest, and a LISTEN and an UNLISTEN of a channel
// in one such transaction leave the client as the later of them says.
// PostgreSQL, asked the same first, says what the client must hear.
func TestAnUnlistenPortalTakesEffectAsItsImplicitTransactionEnds(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	tests := []struct {
		name string
		send func(ch string) []pgproto3.FrontendMessage // once the client listens on ch
		want string                                     // the transcript
		got  int                                        // notifications received of one sent
	}{
		{
			name: "undone by an error before its sync", want: "1 2 C 1 2 E:22012 Z", got: 1,
			send: func(ch string) []pgproto3.FrontendMessage {
				return append(append(portal("UNLISTEN "+ch), failingStatement()...), syncMsg())
			},
		},
		{
			name: "then a LISTEN of the channel", want: "1 2 C 1 2 C Z", got: 1,
			send: func(ch string) []pgproto3.FrontendMessage {
				return append(append(portal("UNLISTEN "+ch), portal("LISTEN "+ch)...), syncMsg())
			},
		},
		{
			name: "after a LISTEN of the channel", want: "1 2 C 1 2 C Z", got: 0,
			send: func(ch string) []pgproto3.FrontendMessage {
				return append(append(portal("LISTEN "+ch), portal("UNLISTEN "+ch)...), syncMsg())
			},
		},
	}
	t.Parallel()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
				t.Parallel()
				sender := newNotifier(t)
				f := ferrytest.Start(t, cfg)
				direct := newRawClient(t, cluster.DSN("app", ferrytest.User, ferrytest.Password))
				for _, who := range []string{"PostgreSQL", "pgferry"} {
					c := direct
					if who == "pgferry" {
						c = newRawClient(t, f.AppDSN())
					}
					ch := fmt.Sprintf("unlisten_implicit%d_%v_%s", i, cfg.RelayLoop, strings.ToLower(who))
					c.request(ch, []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN " + ch}})
					c.send(tc.send(ch)...)
					if got := c.until(1); got != tc.want {
						t.Fatalf("%s: got %q, want %q", who, got, tc.want)
					}
					sender.notify(ch, 1)
					if got := c.notifications(ch, 1, 2*time.Second); got != tc.got {
						t.Fatalf("%s: 1 notification sent, %d received; want %d", who, got, tc.got)
					}
				}
			})
		})
	}
}

// portal is sql's unnamed statement, bound and executed, without a Sync.
func portal(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{parse("", sql), bind(""), execMsg()}
}
