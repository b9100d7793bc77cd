package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgferry/pgferry/internal/ferrytest"
	"github.com/pgferry/pgferry/internal/pgtest"
)

// TestShowClientsAndServersCountPreparedStatementsAsPgBouncer125: SHOW
// CLIENTS' prepared_statements is the client's named statements, SHOW
// SERVERS' those prepared on the server connection (admin.c socket_row:
// HASH_COUNT of client_prepared_statements, server_prepared_statements).
// The same steps through PgBouncer 1.25.2 (transaction mode,
// max_prepared_statements 200; run by hand) answer 2 and 2 after two
// Parses, 1 and 2 after a Close of one (the server keeps it), 0 and 0
// after DEALLOCATE ALL.
func TestShowClientsAndServersCountPreparedStatementsAsPgBouncer125(t *testing.T) {
	f := ferrytest.Start(t, ferrytest.Config(t, cluster))
	ctx := testContext(t)
	cl := ferrytest.ConnectPgConn(t, ctx, f.AppDSN())
	pc := ferrytest.ConnectPgConn(t, ctx, adminDSN(f))
	counts := func() string {
		t.Helper()
		var c, s map[string]string
		// The server is listed once back in its pool, which may be just
		// after the client had its answer.
		ferrytest.Eventually(t, 10*time.Second, "the client and its server listed", func() (bool, error) {
			c = mustAdmin(t, pc, "SHOW CLIENTS").row("user", ferrytest.User)
			s = mustAdmin(t, pc, "SHOW SERVERS").row("user", pgtest.AppUser)
			return c != nil && s != nil, nil
		})
		return c["prepared_statements"] + "/" + s["prepared_statements"]
	}
	for _, name := range []string{"s1", "s2"} {
		if _, err := cl.Prepare(ctx, name, "select '"+name+"'", nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := counts(); got != "2/2" {
		t.Errorf("client/server prepared_statements after two Parses: %s, want 2/2", got)
	}
	if err := cl.Deallocate(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got != "1/2" {
		t.Errorf("after a Close of one: %s, want 1/2", got)
	}
	if _, err := cl.Exec(context.Background(), "DEALLOCATE ALL").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got != "0/0" {
		t.Errorf("after DEALLOCATE ALL: %s, want 0/0", got)
	}
}
