package router_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgferry/pgferry/internal/ferrytest"
)

// pgferry serves no walsender: a client asking for replication (as
// pg_receivewal, pg_recvlogical or a logical replication tool do) is
// refused before it is asked for a password, as PgBouncer before 1.23
// refused it, instead of being handed an ordinary session it would take
// for a replication one. replication=false is an ordinary login, and
// ignore_startup_parameters may drop the key altogether.
func TestAReplicationLoginIsRefusedUnlessItAsksForNoneOrTheKeyIsIgnored(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg := ferrytest.Config(t, cluster)
	f := ferrytest.Start(t, cfg)
	ignoring := ferrytest.Config(t, cluster)
	ignoring.IgnoreStartupParameters = []string{"Replication"}
	fi := ferrytest.Start(t, ignoring)
	// A pool that has greeted a client: the relay loop, where it is on,
	// takes the next logins itself, and must hand these on.
	ferrytest.Connect(t, ctx, f.AppDSN()).Close(ctx)

	tests := []struct {
		name    string
		ferry   *ferrytest.Ferry
		value   string
		refused bool
	}{
		{"physical replication is refused", f, "true", true},
		{"logical replication is refused", f, "database", true},
		{"replication=false is an ordinary login", f, "false", false},
		{"an ignored replication key is dropped", fi, "database", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := pgx.ParseConfig(tc.ferry.AppDSN())
			if err != nil {
				t.Fatal(err)
			}
			cc.RuntimeParams["replication"] = tc.value
			conn, err := pgx.ConnectConfig(ctx, cc)
			if !tc.refused {
				if err != nil {
					t.Fatalf("login with replication=%s: %v", tc.value, err)
				}
				defer conn.Close(ctx)
				if err := conn.Ping(ctx); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				conn.Close(ctx)
				t.Fatalf("a login with replication=%s was served", tc.value)
			}
			pe := expectPgError(t, err, "08P01")
			if pe.Severity != "FATAL" || pe.Message != "unsupported startup parameter: replication" || !strings.Contains(pe.Detail, "replication connections") {
				t.Fatalf("got %s %q (%q)", pe.Severity, pe.Message, pe.Detail)
			}
		})
	}
}
