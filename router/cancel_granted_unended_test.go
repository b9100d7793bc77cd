package router_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A CancelRequest for a statement that waited for a server connection and
// went to it as an extended-protocol group the client has not ended (Parse,
// Bind, Execute, no Sync nor Flush) cancels it while it runs, as
// PostgreSQL cancels the same frames: the server runs an Execute as soon
// as it reads it, and the cancel's error (57014) comes at once, before the
// Sync, which then ends the group; the session goes on. pgferry held the
// cancel until the client's Sync (the granted request had not asked for
// answers yet: owesNow), and the client, waiting for the statement's end,
// got nothing (20 s here).
func TestACancelOfAGrantedGroupWithoutItsSyncCancelsItWhileItRunsAsInPostgreSQL(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	const sleep = "select pg_sleep(300) -- a granted group without its Sync"
	group := msgs(parse("", sleep), bind(""), execMsg())
	next := msgs(syncMsg(), parse("", "select 3"), bind(""), execMsg(), syncMsg())
	running := "state = 'active' and query = '" + sleep + "'"

	ctx := testContext(t)
	_, db := configWithOwnDatabase(t)
	direct := newRawClient(t, cluster.DSN(db, ferrytest.User, ferrytest.Password))
	direct.send(group...)
	waitForBackend(t, ctx, db, running)
	if err := direct.pc.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	pg := direct.next(3)
	direct.send(next...)
	pg += " / " + direct.until(2)
	if pg != "1 2 E:57014 / Z 1 2 D:3 C Z" {
		t.Fatalf("PostgreSQL answered %q", pg) // (the reference itself)
	}

	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("relay loop %v", loop), func(t *testing.T) {
			if loop {
				skipWithoutLoop(t)
			}
			t.Parallel()
			ctx := testContext(t)
			cfg, db := configWithOwnDatabase(t)
			cfg.RelayLoop, cfg.RelayLoopSet = loop, true
			cfg.QueryWaitTimeout = configs.Duration(10 * time.Minute)
			setPoolSize(cfg, "app", 1)
			f := ferrytest.Start(t, cfg)
			holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
			victim := newRawClient(t, f.AppDSN())
			if loop {
				allIntoTheLoop(t, ctx, f, holder, victim.pc)
			}
			if _, err := holder.Exec(ctx, "begin; select 1").ReadAll(); err != nil {
				t.Fatal(err)
			}
			victim.send(group...)
			ferrytest.Eventually(t, 10*time.Second, "the group queued", func() (bool, error) {
				return f.Pool(t, "app").Stat.Waiting == 1, nil
			})
			// The holder's COMMIT grants the group the server, which runs it.
			if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
				t.Fatal(err)
			}
			waitForBackend(t, ctx, db, running)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := victim.pc.CancelRequest(cctx); err != nil {
				t.Fatal(err)
			}
			got := victim.next(3)
			victim.send(next...)
			got += " / " + victim.until(2)
			if got != pg {
				t.Fatalf("pgferry answered %q, PostgreSQL %q", got, pg)
			}
		})
	}
}
