package router_test

import (
	"testing"
	"time"

	"github.com/pgferry/pgferry/configs"
	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A client its goroutine queued for a server (the relay loop off) and
// that the admin console kills ends then, not when query_wait_timeout
// would have ended its wait: its query never runs, and it leaves the
// queue.
func TestAClientKilledWhileItsGoroutineWaitsForAServerEndsAtOnce(t *testing.T) {
	ferrytest.ChoosesItsRelayMode(t)
	t.Parallel()
	ctx := testContext(t)
	cfg, _ := configWithOwnDatabase(t)
	cfg.RelayLoop = false
	cfg.QueryWaitTimeout = configs.Duration(10 * time.Minute)
	setPoolSize(cfg, "app", 1)
	f := ferrytest.Start(t, cfg)
	const app = "pgferry-killed-waiting"
	holder := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	victim := ferrytest.ConnectPgConn(t, ctx, withApp(f, app))
	for _, sql := range []string{"begin", "select 1"} {
		if _, err := holder.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	admin := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	row := mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app)
	if row == nil {
		t.Fatal("the victim is not in SHOW CLIENTS")
	}
	got := make(chan error, 1)
	go func() {
		_, err := victim.Exec(ctx, "select 2").ReadAll()
		got <- err
	}()
	ferrytest.Eventually(t, 10*time.Second, "the victim queued for the server", func() (bool, error) {
		return f.Pool(t, "app").Stat.Waiting == 1, nil
	})
	mustAdmin(t, admin, "KILL_CLIENT "+row["ptr"])
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("the killed client's query ran")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the killed client was still waiting for a server 30 s after KILL_CLIENT (query_wait_timeout is 10 minutes)")
	}
	ferrytest.Eventually(t, 10*time.Second, "the victim gone from SHOW CLIENTS and the queue", func() (bool, error) {
		return mustAdmin(t, admin, "SHOW CLIENTS").row("application_name", app) == nil && f.Pool(t, "app").Stat.Waiting == 0, nil
	})
	if _, err := holder.Exec(ctx, "commit").ReadAll(); err != nil {
		t.Fatal(err)
	}
}
