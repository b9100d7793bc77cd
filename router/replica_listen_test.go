package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// A LISTEN prepared by the extended protocol (postgres.js prepares every
// statement) in a session whose transactions run on a replica subscribes
// through pgferry's listener on the primary, as one in a simple query
// does: what the server runs in its place (an UNLISTEN of a channel no
// one listens on, since cdbd69e) must be allowed on a hot standby, where
// PostgreSQL refuses LISTEN (25006); 15 accepts UNLISTEN there (older
// versions refused it as well).
func TestAPreparedListenOfASessionOnAReplicaIsServed(t *testing.T) {
	t.Parallel()
	primary, replica := startReplicated(t)
	f := ferrytest.Start(t, replicaConfig(t, primary, replica, nil))
	ctx := testContext(t)
	alias := ferrytest.Connect(t, ctx, f.DSN("app_ro", ferrytest.User, ferrytest.Password))
	ferrytest.Eventually(t, 20*time.Second, "the alias session's reads to run on the replica", func() (bool, error) {
		var inRecovery bool
		err := alias.QueryRow(ctx, "select pg_is_in_recovery()", pgx.QueryExecModeSimpleProtocol).Scan(&inRecovery)
		return inRecovery, err
	})
	if _, err := alias.Prepare(ctx, "listen_stmt", "listen replica_chan"); err != nil {
		t.Fatalf("Parse of LISTEN: %v", err)
	}
	if _, err := alias.Exec(ctx, "listen_stmt"); err != nil {
		t.Fatalf("Execute of LISTEN on a replica: %v; want it served by pgferry's listener", err)
	}
	notifier := ferrytest.Connect(t, ctx, f.AppDSN())
	if _, err := notifier.Exec(ctx, "select pg_notify('replica_chan', 'hello')"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := alias.WaitForNotification(wctx)
	if err != nil || n.Channel != "replica_chan" || n.Payload != "hello" {
		t.Fatalf("notification %+v, %v; want replica_chan's hello", n, err)
	}
}
