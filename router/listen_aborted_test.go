package router_test

// End-to-end tests of a LISTEN that reaches the server in a transaction an
// earlier statement failed: PostgreSQL refuses it, and so does pgferry.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A LISTEN pipelined by simple query behind a statement that fails inside
// an open transaction gets 25P02, as from PostgreSQL, and subscribes
// nothing.
func TestAListenPipelinedBehindAFailureInATransactionIsRefusedAndSubscribesNothing(t *testing.T) {
	t.Parallel()
	sender := newNotifier(t)
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	direct := newRawClient(t, cluster.DSN("app", ferrytest.User, ferrytest.Password))
	for _, c := range []*rawClient{direct, newRawClient(t, f.AppDSN())} {
		ch := "aborted_listen"
		c.send(
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Query{String: "SELECT 1/(0*random())::int"},
			&pgproto3.Query{String: "LISTEN " + ch},
		)
		if got := c.until(3); got != "C Z T E:22012 Z E:25P02 Z" {
			t.Fatalf("got %q, want BEGIN, the error, then the LISTEN refused", got)
		}
		c.send(&pgproto3.Query{String: "ROLLBACK"})
		c.until(1)
		sender.t = t
		sender.notify(ch, 1)
		if got := c.notifications(ch, 1, time.Second); got != 0 {
			t.Fatalf("%d notifications on a channel whose LISTEN was refused", got)
		}
	}
}
