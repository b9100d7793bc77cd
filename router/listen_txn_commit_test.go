package router_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// PostgreSQL delivers to a session only the notifications committed after
// its LISTEN's transaction committed (async.c, Exec_ListenPreCommit): one
// committed while the transaction that LISTENs is still open never comes,
// and one committed after its COMMIT does, pinned or not.
func TestAListenInATransactionHearsOnlyWhatIsCommittedAfterItsCommit(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	forEachRelayLoop(t, func(t *testing.T, cfg *configs.Config) {
		t.Parallel()
		sender := newNotifier(t)
		f := ferrytest.Start(t, cfg)
		// The witness hears pgferry's listener fan a notification out:
		// it handed the one before it to every subscriber first.
		witness := newRawClient(t, f.AppDSN())
		seen := fmt.Sprintf("txn_commit_seen_%v", cfg.RelayLoop)
		witness.request(seen, query("LISTEN "+seen))
		for _, pinned := range []bool{false, true} {
			t.Run(fmt.Sprintf("pinned %v", pinned), func(t *testing.T) {
				sender.t = t
				var want string
				for _, who := range []string{"PostgreSQL", "pgferry"} {
					dsn := cluster.DSN("app", ferrytest.User, ferrytest.Password)
					if who == "pgferry" {
						dsn = f.AppDSN()
					}
					c := newRawClient(t, dsn)
					ch := fmt.Sprintf("txn_commit_%v_%v_%s", cfg.RelayLoop, pinned, strings.ToLower(who))
					if pinned {
						c.request(ch, query("SELECT pg_advisory_lock(hashtext('"+ch+"'))"))
					}
					c.request(ch, query("BEGIN"))
					c.request(ch, query("LISTEN "+ch))
					if _, err := sender.conn.Exec(testContext(t), "select pg_notify($1, 'before'), pg_notify($2, '')", ch, seen); err != nil {
						t.Fatal(err)
					}
					if witness.notifications(seen, 1, 20*time.Second) != 1 {
						t.Fatal("the witness heard nothing")
					}
					c.send(query("COMMIT")...)
					got := c.until(1)
					if who == "PostgreSQL" {
						want = got
					} else if got != want {
						t.Fatalf("pgferry answered the COMMIT %q, PostgreSQL %q", got, want)
					}
					if n := c.heard(sender, ch); n != 1 {
						t.Fatalf("%s: %d notifications heard after the COMMIT, want the 1 sent then", who, n)
					}
				}
			})
		}
	})
}
