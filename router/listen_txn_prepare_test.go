package router_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// PostgreSQL refuses to PREPARE TRANSACTION a transaction that ran LISTEN
// or UNLISTEN (async.c, AtPrepare_Notify: 0A000), and rolls it back: the
// client does not listen after a LISTEN, still listens after an UNLISTEN,
// and no prepared transaction is left. pgferry answers the same and
// leaves the client's subscriptions as PostgreSQL does, the LISTEN by the
// simple protocol or the extended one, relay loop off and on. It
// answered PREPARE TRANSACTION and the server kept a prepared
// transaction: the server had run an empty query or UNLISTEN "pgferry
// stand-in" for the LISTEN, which pgferry's listener serves, and no
// UNLISTEN of its own before. (The test's cluster of its own allows
// prepared transactions, which the shared one does not: there PREPARE
// TRANSACTION fails first, 55000.)
func TestAPrepareTransactionAfterAListenIsRefusedAsPostgreSQLRefusesIt(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	ctx := testContext(t)
	pg, err := pgtest.Start(pgtest.Options{TLS: true, Conf: map[string]string{"max_prepared_transactions": "10"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	direct := pg.DSN(pgtest.AppDatabase, pgtest.AppUser, pgtest.AppPassword)
	sender := &notifier{t, ferrytest.Connect(t, ctx, direct)}
	ways := []struct {
		name  string
		steps func(ch string) [][]pgproto3.FrontendMessage
		heard bool
	}{
		{"a LISTEN by a simple query", func(ch string) [][]pgproto3.FrontendMessage {
			return [][]pgproto3.FrontendMessage{query("BEGIN"), query("LISTEN " + ch)}
		}, false},
		{"a LISTEN by a portal", func(ch string) [][]pgproto3.FrontendMessage {
			return [][]pgproto3.FrontendMessage{query("BEGIN"), synced(portal("LISTEN " + ch))}
		}, false},
		{"an UNLISTEN of a channel the client listens on", func(ch string) [][]pgproto3.FrontendMessage {
			return [][]pgproto3.FrontendMessage{query("LISTEN " + ch), query("BEGIN"), query("UNLISTEN " + ch)}
		}, true},
	}
	for _, loop := range []bool{false, true} {
		cfg := ferrytest.Config(t, pg)
		cfg.RelayLoop, cfg.RelayLoopSet = loop, true
		f := ferrytest.Start(t, cfg)
		for i, way := range ways {
			t.Run(fmt.Sprintf("relay loop %v, %s", loop, way.name), func(t *testing.T) {
				sender.t = t
				var want string
				for _, who := range []string{"PostgreSQL", "pgferry"} {
					dsn := direct
					if who == "pgferry" {
						dsn = f.AppDSN()
					}
					c := newRawClient(t, dsn)
					ch := fmt.Sprintf("txn_prepare_%v_%d_%s", loop, i, strings.ToLower(who))
					var got []string
					for _, step := range append(way.steps(ch), query("PREPARE TRANSACTION '"+ch+"'")) {
						c.send(step...)
						got = append(got, c.until(1))
					}
					transcript := strings.Join(got, " | ")
					prepared, err := pg.QueryInt(ctx, "select count(*) from pg_prepared_xacts where gid = $1", ch)
					if err != nil {
						t.Fatal(err)
					}
					if prepared != 0 { // (from the database it was prepared in)
						if _, err := sender.conn.Exec(ctx, "rollback prepared '"+ch+"'"); err != nil {
							t.Fatal(err)
						}
					}
					if who == "PostgreSQL" {
						want = transcript
						if !strings.Contains(want, "E:0A000") {
							t.Fatalf("PostgreSQL answered %q", want) // (the reference itself)
						}
					} else if transcript != want {
						t.Fatalf("pgferry answered %q, PostgreSQL %q (%d prepared transactions left)", transcript, want, prepared)
					}
					if prepared != 0 {
						t.Fatalf("%s: the transaction was prepared", who)
					}
					if heard := c.hears(sender, ch); heard != way.heard {
						t.Fatalf("%s: the client hears its channel: %v, want %v (the transaction rolled back)", who, heard, way.heard)
					}
				}
			})
		}
	}
}
