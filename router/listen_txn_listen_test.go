package router_test

// End-to-end tests of LISTEN and UNLISTEN inside a transaction: each takes
// effect when its transaction commits, and a ROLLBACK, a ROLLBACK TO a
// savepoint before it or an error that aborts its transaction undoes it
// (PostgreSQL's LISTEN reference page; async.c, AtCommit_Notify). Every
// case runs on PostgreSQL directly first, which says what the client must
// hear, then through pgferry.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// txnCase is a client's requests, each answered by one ReadyForQuery, and
// whether the client then hears a notification on the channel they name.
type txnCase struct {
	name  string
	steps func(ch string) [][]pgproto3.FrontendMessage
	heard bool
}

func TestAListenInATransactionTakesEffectOnlyWhenItsTransactionCommits(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	runTxnCases(t, "txn_listen", txnClient{}, listenTxnCases)
}

// listenTxnCases are LISTENs in transactions, of a client not listening
// on their channel before.
var listenTxnCases = []txnCase{
	{name: "committed", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("LISTEN " + ch), query("COMMIT")}
	}},
	{name: "rolled back", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("LISTEN " + ch), query("ROLLBACK")}
	}},
	{name: "rolled back, through a portal", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), synced(portal("LISTEN " + ch)), query("ROLLBACK")}
	}},
	{name: "rolled back, through a named statement", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		named := []pgproto3.FrontendMessage{parse("listen_stmt", "LISTEN "+ch), bind("listen_stmt"), execMsg()}
		return [][]pgproto3.FrontendMessage{query("BEGIN"), synced(named), query("ROLLBACK")}
	}},
	{name: "committed after an error aborted it", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("LISTEN " + ch), query("SELECT 1/(0*random())::int"), query("COMMIT")}
	}},
	{name: "rolled back to a savepoint before it", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("SAVEPOINT a"), query("LISTEN " + ch), query("ROLLBACK TO a"), query("COMMIT")}
	}},
	{name: "rolled back to a savepoint after it", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("LISTEN " + ch), query("SAVEPOINT a"), query("ROLLBACK TO a"), query("COMMIT")}
	}},
	{name: "its savepoint released", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("SAVEPOINT a"), synced(portal("LISTEN " + ch)), query("RELEASE a"), query("COMMIT")}
	}},
	{name: "rolled back, then listened again", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("LISTEN " + ch), query("ROLLBACK"), query("LISTEN " + ch)}
	}},
	{name: "rolled back in a pipeline that listens again after it", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{synced(slices.Concat(portal("BEGIN"), portal("LISTEN "+ch), portal("ROLLBACK"), portal("LISTEN "+ch)))}
	}},
	{name: "rolled back in a pipeline that listens again in a transaction it then rolls back", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{synced(slices.Concat(portal("BEGIN"), portal("LISTEN "+ch), portal("ROLLBACK"),
			portal("BEGIN"), portal("LISTEN "+ch), portal("ROLLBACK")))}
	}},
	{name: "a portal whose implicit transaction an error before its sync rolls back", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{synced(append(portal("LISTEN "+ch), failingStatement()...))}
	}},
}

// txnClient says how runTxnCases prepares its client: listening on the
// case's channel first, pinned to its server connection first.
type txnClient struct{ listening, pinned bool }

// runTxnCases runs each case on PostgreSQL, then through pgferry in both
// relay modes, on a client prepared as how says: pgferry must answer as
// PostgreSQL did and leave the client hearing the channel or not as
// PostgreSQL did.
func runTxnCases(t *testing.T, prefix string, how txnClient, tests []txnCase) {
	forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
		t.Parallel()
		sender := newNotifier(t)
		f := ferrytest.Start(t, cfg)
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				sender.t = t
				var want string
				for _, who := range []string{"PostgreSQL", "pgferry"} {
					dsn := cluster.DSN("app", ferrytest.User, ferrytest.Password)
					if who == "pgferry" {
						dsn = f.AppDSN()
					}
					c := newRawClient(t, dsn)
					ch := fmt.Sprintf("%s%d_%v_%s", prefix, i, cfg.RelayLoop, strings.ToLower(who))
					if how.pinned {
						// A session advisory lock pins the client (its
						// own key: nobody waits for it).
						c.request(ch, query("SELECT pg_advisory_lock(hashtext('"+ch+"'))"))
					}
					if how.listening {
						c.request(ch, query("LISTEN "+ch))
					}
					var got []string
					for _, step := range tc.steps(ch) {
						c.send(step...)
						got = append(got, c.until(1))
					}
					transcript := strings.Join(got, " | ")
					if who == "PostgreSQL" {
						want = transcript
					} else if transcript != want {
						t.Fatalf("pgferry answered %q, PostgreSQL %q", transcript, want)
					}
					if heard := c.hears(sender, ch); heard != tc.heard {
						t.Fatalf("%s: the client hears its channel: %v, want %v (after %q)", who, heard, tc.heard, transcript)
					}
				}
			})
		}
	})
}

// hears reports whether the client hears a notification on channel (see
// heard).
func (c *rawClient) hears(sender *notifier, channel string) bool {
	c.t.Helper()
	return c.heard(sender, channel) > 0
}

// heard returns how many notifications on channel the client hears, of
// those waiting and one more: the sender notifies channel, then in the
// same transaction a channel of the client's own it listens on first,
// whose notification comes after the other's if that one comes at all
// (PostgreSQL delivers a transaction's notifications in order).
func (c *rawClient) heard(sender *notifier, channel string) int {
	c.t.Helper()
	mark := channel + "_mark"
	c.request(mark, query("LISTEN "+mark))
	if _, err := sender.conn.Exec(testContext(c.t), "select pg_notify($1, 'x'), pg_notify($2, 'end')", channel, mark); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	heard := 0
	for {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("waiting for the notification on %s: %v", mark, err)
		}
		if m, ok := msg.(*pgproto3.NotificationResponse); ok {
			switch m.Channel {
			case channel:
				heard++
			case mark:
				return heard
			}
		}
	}
}

// query is sql as a simple Query.
func query(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}
}

// synced is msgs and a Sync.
func synced(msgs []pgproto3.FrontendMessage) []pgproto3.FrontendMessage {
	return append(msgs[:len(msgs):len(msgs)], syncMsg())
}
