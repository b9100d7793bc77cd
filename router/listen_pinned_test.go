package router_test

// End-to-end tests of LISTEN/NOTIFY for a client tied to its server
// connection: pinned in transaction mode, or in session mode. A client's
// LISTEN and UNLISTEN must work whichever way it is tied, and it gets its
// notifications as PostgreSQL delivers them: between its transactions.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// request sends msgs and reads up to the next ReadyForQuery, failing on an
// error response. It returns the transcript (see until) and how many
// notifications on channel arrived meanwhile.
func (c *rawClient) request(channel string, msgs []pgproto3.FrontendMessage) (string, int) {
	c.t.Helper()
	c.send(msgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	notes := 0
	for {
		msg, err := c.pc.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("%s: receive after %v: %v", describeMsgs(msgs), out, err)
		}
		switch m := msg.(type) {
		case *pgproto3.NotificationResponse:
			if m.Channel == channel {
				notes++
			}
		case *pgproto3.CommandComplete:
			out = append(out, "C:"+string(m.CommandTag))
		case *pgproto3.DataRow:
			out = append(out, "D:"+string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			c.t.Fatalf("%s: %s %s", describeMsgs(msgs), m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return strings.Join(append(out, "Z:"+string(m.TxStatus)), " "), notes
		}
	}
}

// notifier sends notifications from a connection straight to PostgreSQL.
type notifier struct {
	t    *testing.T
	conn *pgx.Conn
}

func newNotifier(t *testing.T) *notifier {
	return &notifier{t, ferrytest.Connect(t, testContext(t), cluster.DSN("app", ferrytest.User, ferrytest.Password))}
}

// notify sends n notifications on channel, in one transaction.
func (n *notifier) notify(channel string, count int) {
	n.t.Helper()
	if _, err := n.conn.Exec(testContext(n.t), "select pg_notify($1, i::text) from generate_series(1, $2) i", channel, count); err != nil {
		n.t.Fatal(err)
	}
}

func TestAPinnedClientGetsItsNotificationsBetweenItsTransactionsAndItsListenAndUnlistenWork(t *testing.T) {
	t.Parallel()
	for i, via := range stateVia {
		t.Run(via.name, func(t *testing.T) {
			t.Parallel()
			sender := newNotifier(t)
			f := ferrytest.Start(t, ferrytest.Config(t, cluster))
			ch := fmt.Sprintf("pinned_ch%d", i)
			c := newRawClient(t, f.AppDSN())
			if got, _ := c.request(ch, via.send("LISTEN "+ch)); got != "C:LISTEN Z:I" {
				t.Fatalf("LISTEN: %s", got)
			}
			// A temporary table pins the client to its server connection.
			c.request(ch, via.send("create temp table pinned_t (x int)"))
			if n := f.Pool(t, "app").Counters.PinnedClients; n != 1 {
				t.Fatalf("%d clients pinned; want the listening client pinned", n)
			}

			// Idle, it gets a notification at once.
			sender.notify(ch, 1)
			if got := c.notifications(ch, 1, 10*time.Second); got != 1 {
				t.Fatalf("an idle pinned client got %d notifications; want 1", got)
			}
			// Inside a transaction, it gets them when the transaction ends.
			c.request(ch, via.send("BEGIN"))
			sender.notify(ch, 3)
			if _, notes := c.request(ch, via.send("insert into pinned_t values (1)")); notes != 0 {
				t.Fatalf("%d notifications inside the client's transaction; want them held until it ends", notes)
			}
			got, notes := c.request(ch, via.send("COMMIT"))
			if got != "C:COMMIT Z:I" {
				t.Fatalf("COMMIT: %s", got)
			}
			if notes += c.notifications(ch, 3-notes, 10*time.Second); notes != 3 {
				t.Fatalf("the transaction ended and %d of 3 notifications arrived", notes)
			}
			// Many, while it runs queries of its own.
			sender.notify(ch, 500)
			notes = 0
			for range 10 {
				_, n := c.request(ch, via.send("select count(*) from pinned_t"))
				notes += n
			}
			if notes += c.notifications(ch, 500-notes, 10*time.Second); notes != 500 {
				t.Fatalf("%d of 500 notifications arrived", notes)
			}

			// UNLISTEN ends it.
			if got, _ := c.request(ch, via.send("UNLISTEN "+ch)); got != "C:UNLISTEN Z:I" {
				t.Fatalf("UNLISTEN: %s", got)
			}
			sender.notify(ch, 1)
			if got := c.notifications(ch, 1, 500*time.Millisecond); got != 0 {
				t.Fatalf("%d notifications after UNLISTEN", got)
			}
			// LISTEN again, still pinned, and each notification comes once.
			if got, _ := c.request(ch, via.send("LISTEN "+ch)); got != "C:LISTEN Z:I" {
				t.Fatalf("LISTEN again: %s", got)
			}
			sender.notify(ch, 2)
			if got := c.notifications(ch, 3, time.Second); got != 2 {
				t.Fatalf("%d notifications for 2 sent after the second LISTEN", got)
			}
			if got, _ := c.request(ch, via.send("select count(*) from pinned_t")); got != "D:1 C:SELECT 1 Z:I" {
				t.Fatalf("the pinned client lost its temporary table: %s", got)
			}
		})
	}
}

// A pinned client's notifications are delivered as they come while it
// idles, so one that reads them never piles up the 8 MiB that disconnect
// a client.
func TestAPinnedListeningClientThatReadsItsNotificationsStaysConnected(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	c := ferrytest.Connect(t, ctx, f.AppDSN())
	for _, sql := range []string{"listen pinned_flood", "create temp table pinned_flood_t (x int)"} {
		if _, err := c.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	sender := newNotifier(t)
	const rounds, per, size = 4, 400, 7900 // 12 MiB in all
	for r := range rounds {
		if _, err := sender.conn.Exec(ctx, "select pg_notify('pinned_flood', lpad(i::text, $1, 'x')) from generate_series(1, $2) i", size, per); err != nil {
			t.Fatal(err)
		}
		for k := range per {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := c.WaitForNotification(wctx)
			cancel()
			if err != nil {
				t.Fatalf("round %d: notification %d: %v", r, k, err)
			}
		}
	}
	var n int
	if err := c.QueryRow(ctx, "select count(*) from pinned_flood_t").Scan(&n); err != nil {
		t.Fatalf("the client after reading its notifications: %v", err)
	}
}

// LISTEN inside a transaction, in either protocol, is served by pgferry's
// listener: the client is not pinned for it, and UNLISTEN inside one ends
// it.
func TestListenAndUnlistenInsideATransactionAreServedByPgferrysListener(t *testing.T) {
	t.Parallel()
	for i, via := range stateVia {
		t.Run(via.name, func(t *testing.T) {
			t.Parallel()
			sender := newNotifier(t)
			cfg := ferrytest.Config(t, cluster)
			setPoolSize(cfg, "app", 2)
			f := ferrytest.Start(t, cfg)
			ch := fmt.Sprintf("txn_ch%d", i)
			c := newRawClient(t, f.AppDSN())
			c.request(ch, via.send("BEGIN"))
			if got, _ := c.request(ch, via.send("LISTEN "+ch)); got != "C:LISTEN Z:T" {
				t.Fatalf("LISTEN: %s", got)
			}
			c.request(ch, via.send("COMMIT"))
			if n := f.Pool(t, "app").Counters.PinnedClients; n != 0 {
				t.Fatalf("%d clients pinned; want LISTEN served without pinning", n)
			}
			for range 4 {
				if got, _ := c.request(ch, via.send("select count(*) from pg_listening_channels()")); got != "D:0 C:SELECT 1 Z:I" {
					t.Fatalf("a pooled server connection listens itself: %s", got)
				}
			}
			sender.notify(ch, 2)
			if got := c.notifications(ch, 2, 10*time.Second); got != 2 {
				t.Fatalf("%d of 2 notifications", got)
			}
			c.request(ch, via.send("BEGIN"))
			c.request(ch, via.send("UNLISTEN "+ch))
			c.request(ch, via.send("COMMIT"))
			sender.notify(ch, 1)
			if got := c.notifications(ch, 1, 500*time.Millisecond); got != 0 {
				t.Fatalf("%d notifications after UNLISTEN", got)
			}
		})
	}
}

// A LISTEN among other statements of one query runs on the server with
// them (pgferry answers a LISTEN itself only when it is the whole query),
// and an UNLISTEN among them ends the subscription wherever it lives.
func TestListenAndUnlistenAmongOtherStatementsRunTheWholeQuery(t *testing.T) {
	t.Parallel()
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	sender := newNotifier(t)
	c := newRawClient(t, f.AppDSN())
	if got, _ := c.request("several_ch", []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN several_ch; select 42"}}); got != "C:LISTEN D:42 C:SELECT 1 Z:I" {
		t.Fatalf("LISTEN among other statements: %s", got)
	}
	sender.notify("several_ch", 1)
	if got := c.notifications("several_ch", 1, 10*time.Second); got != 1 {
		t.Fatalf("%d of 1 notification", got)
	}
	c.request("several_ch", []pgproto3.FrontendMessage{&pgproto3.Query{String: "LISTEN several_ch"}})
	if got, _ := c.request("several_ch", []pgproto3.FrontendMessage{&pgproto3.Query{String: "select 43; UNLISTEN several_ch"}}); got != "D:43 C:SELECT 1 C:UNLISTEN Z:I" {
		t.Fatalf("UNLISTEN among other statements: %s", got)
	}
	sender.notify("several_ch", 1)
	if got := c.notifications("several_ch", 1, 500*time.Millisecond); got != 0 {
		t.Fatalf("%d notifications after UNLISTEN", got)
	}
}

// In session mode the client has its server connection to itself: LISTEN
// and UNLISTEN run there, in either protocol, and notifications come
// straight from it.
func TestListenAndUnlistenWorkInSessionMode(t *testing.T) {
	t.Parallel()
	for i, via := range stateVia {
		t.Run(via.name, func(t *testing.T) {
			t.Parallel()
			sender := newNotifier(t)
			cfg := ferrytest.Config(t, cluster)
			cfg.PoolMode = "session"
			e := cfg.Databases["app"]
			e.PoolMode = "session"
			cfg.Databases["app"] = e
			f := ferrytest.Start(t, cfg)
			ch := fmt.Sprintf("session_ch%d", i)
			c := newRawClient(t, f.AppDSN())
			if got, _ := c.request(ch, via.send("LISTEN "+ch)); got != "C:LISTEN Z:I" {
				t.Fatalf("LISTEN: %s", got)
			}
			sender.notify(ch, 1)
			if got := c.notifications(ch, 1, 10*time.Second); got != 1 {
				t.Fatalf("%d of 1 notification", got)
			}
			c.request(ch, via.send("BEGIN"))
			sender.notify(ch, 2)
			if _, notes := c.request(ch, via.send("select 1")); notes != 0 {
				t.Fatalf("%d notifications inside the client's transaction", notes)
			}
			_, notes := c.request(ch, via.send("COMMIT"))
			if notes += c.notifications(ch, 2-notes, 10*time.Second); notes != 2 {
				t.Fatalf("%d of 2 notifications after the transaction", notes)
			}
			c.request(ch, via.send("UNLISTEN "+ch))
			sender.notify(ch, 1)
			if got := c.notifications(ch, 1, 500*time.Millisecond); got != 0 {
				t.Fatalf("%d notifications after UNLISTEN", got)
			}
		})
	}
}

// A LISTEN in a query of several statements pins the client and runs on
// its server (pinListenInSeveral); a later LISTEN of the same channel alone
// goes to pgferry's listener (listenLinked). The channel then has two
// homes, and each notification still reaches the client once, as
// PostgreSQL delivers it (heardAside drops the server's copy).
func TestAPinnedClientListeningTwiceOnAChannelGetsEachNotificationOnce(t *testing.T) {
	t.Parallel()
	for i, via := range stateVia {
		t.Run(via.name, func(t *testing.T) {
			t.Parallel()
			sender := newNotifier(t)
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
