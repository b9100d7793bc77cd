package router_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// An UNLISTEN inside a transaction ends the subscription only when its
// transaction commits; a ROLLBACK, a ROLLBACK TO a savepoint before it or
// an error that aborts its transaction keeps the client listening.
func TestAnUnlistenInATransactionTakesEffectOnlyWhenItsTransactionCommits(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	runTxnCases(t, "txn_unlisten", txnClient{listening: true}, unlistenTxnCases)
}

// unlistenTxnCases are UNLISTENs in transactions, of a client listening
// on their channel before.
var unlistenTxnCases = []txnCase{
	{name: "committed", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("UNLISTEN " + ch), query("COMMIT")}
	}},
	{name: "rolled back", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("UNLISTEN " + ch), query("ROLLBACK")}
	}},
	{name: "rolled back, through a portal", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), synced(portal("UNLISTEN " + ch)), query("ROLLBACK")}
	}},
	{name: "of every channel, rolled back", heard: true, steps: func(string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("UNLISTEN *"), query("ROLLBACK")}
	}},
	{name: "committed after an error aborted it", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("UNLISTEN " + ch), query("SELECT 1/(0*random())::int"), query("COMMIT")}
	}},
	{name: "rolled back to a savepoint before it", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("SAVEPOINT a"), synced(portal("UNLISTEN " + ch)), query("ROLLBACK TO a"), query("COMMIT")}
	}},
	{name: "its savepoint released", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("SAVEPOINT a"), query("UNLISTEN " + ch), query("RELEASE a"), query("COMMIT")}
	}},
	{name: "then a LISTEN of the channel, committed", heard: true, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("UNLISTEN " + ch), query("LISTEN " + ch), query("COMMIT")}
	}},
	{name: "after a LISTEN of the channel, committed", heard: false, steps: func(ch string) [][]pgproto3.FrontendMessage {
		return [][]pgproto3.FrontendMessage{query("BEGIN"), query("LISTEN " + ch), query("UNLISTEN " + ch), query("COMMIT")}
	}},
}
