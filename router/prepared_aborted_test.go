package router_test

// End-to-end tests of Parses pgferry answers with a stand-in of its own
// (a statement the server has already, a LISTEN its listener serves) in a
// failed transaction, and of a LISTEN's portal run twice, compared with
// PostgreSQL itself.

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// In a failed transaction, a Parse of a statement the server has already
// (prepared, closed by the client and kept on the server, prepared
// again: pgferry parses a stand-in of its own in its place), and a Parse of a LISTEN, get 25P02 and the rest of their group
// is skipped, as from PostgreSQL, but for a Parse of a ROLLBACK, which
// runs; and a LISTEN's portal run twice gets 55000 the second time, and
// its LISTEN, undone with its failed transaction, subscribes nothing.
func TestAParseServedByAStandInAnswersAsPostgreSQLInAFailedTransaction(t *testing.T) {
	t.Parallel()
	cfg, db := configWithOwnDatabase(t)
	setPoolSize(cfg, "app", 1) // (one server: it has what the client closed)
	f := ferrytest.Start(t, cfg)
	direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	ferry := newRawClient(t, f.AppDSN())
	const aborted = "E:25P02:current transaction is aborted, commands ignored until end of transaction block Z"
	fail := exchangeStep{"a failed transaction", 2, "C:BEGIN Z T E:22012:division by zero Z",
		[]pgproto3.FrontendMessage{&pgproto3.Query{String: "begin"}, &pgproto3.Query{String: "select 1/(0*random())::int"}}}
	answersAlike(t, direct, ferry, []exchangeStep{
		// (s2 and r2 keep the statements registered, so that s and r
		// prepared again are the ones the server has.)
		{"prepare and close", 1, "1 1 3 1 1 3 Z", []pgproto3.FrontendMessage{
			parse("s", "select 1"), parse("s2", "select 1"), closeStmt("s"),
			parse("r", "rollback"), parse("r2", "rollback"), closeStmt("r"), syncMsg()}},
		fail,
		{"prepare s again", 1, aborted, []pgproto3.FrontendMessage{parse("s", "select 1"), bind("s"), execMsg(), syncMsg()}},
		{"s was not prepared", 2, `C:ROLLBACK Z E:26000:prepared statement "s" does not exist Z`,
			[]pgproto3.FrontendMessage{&pgproto3.Query{String: "rollback"}, bind("s"), execMsg(), syncMsg()}},
		fail,
		{"prepare a LISTEN", 1, aborted, []pgproto3.FrontendMessage{parse("l", "listen aborted_ch"), syncMsg()}},
		{"prepare an unnamed LISTEN", 1, aborted, []pgproto3.FrontendMessage{parse("", "listen aborted_ch"), bind(""), execMsg(), syncMsg()}},
		{"prepare r again and run it", 1, "1 2 C:ROLLBACK Z", []pgproto3.FrontendMessage{parse("r", "rollback"), bind("r"), execMsg(), syncMsg()}},
		{"a LISTEN's portal run twice", 1, `1 2 C:LISTEN E:55000:portal "" cannot be run Z`, []pgproto3.FrontendMessage{
			parse("", "listen twice_ch"), bind(""), execMsg(), execMsg(), syncMsg()}},
		{"a named one", 1, `1 2 C:LISTEN E:55000:portal "p" cannot be run Z`, []pgproto3.FrontendMessage{
			parse("", "listen twice_ch"), &pgproto3.Bind{DestinationPortal: "p"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Execute{Portal: "p"}, syncMsg()}},
	})
	sender := &notifier{t, ferrytest.Connect(t, testContext(t), cluster.DSN(db, ferrytest.User, ferrytest.Password))}
	sender.notify("aborted_ch", 1)
	sender.notify("twice_ch", 1)
	for _, c := range []*rawClient{direct, ferry} {
		if got := c.notifications("aborted_ch", 1, time.Second) + c.notifications("twice_ch", 1, time.Second); got != 0 {
			t.Fatalf("%d notifications on channels whose LISTENs failed", got)
		}
	}
}
