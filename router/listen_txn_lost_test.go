package router_test

import (
	"fmt"
	"testing"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A LISTEN answered inside a transaction whose server connection is then
// lost is undone with the transaction: the client is told it rolled back
// (08006, ReadyForQuery 'I'), and listens on nothing it did not before.
func TestAListenInATransactionWhoseServerIsLostIsUndone(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
		t.Parallel()
		sender := newNotifier(t)
		f := ferrytest.Start(t, cfg)
		ch := fmt.Sprintf("txn_lost_listen_%v", cfg.RelayLoop)
		c := newRawClient(t, f.AppDSN())
		for _, sql := range []string{"BEGIN", "LISTEN " + ch} {
			c.request(ch, query(sql))
		}
		c.send(query("SELECT pg_terminate_backend(pg_backend_pid())")...)
		if got := c.until(1); got != "T D:t E:08006 Z" {
			t.Fatalf("got %q, want the lost connection's error", got)
		}
		if c.hears(sender, ch) {
			t.Fatal("the client hears a channel whose LISTEN's transaction was lost")
		}
	})
}
