package router_test

import (
	"testing"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client pinned to its server connection hears LISTEN and UNLISTEN in
// its transactions take effect as an unpinned one does: at commit.
func TestAPinnedClientsListenAndUnlistenInATransactionTakeEffectOnlyWhenItCommits(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Run("LISTEN", func(t *testing.T) {
		runTxnCases(t, "txn_pinned_listen", txnClient{pinned: true}, listenTxnCases)
	})
	t.Run("UNLISTEN", func(t *testing.T) {
		runTxnCases(t, "txn_pinned_unlisten", txnClient{listening: true, pinned: true}, unlistenTxnCases)
	})
}
